//! Host side of shaders/shared/rows.wgsl: how a row kernel spreads rows over lanes and
//! workgroups, when it splits a row into segments run as a chain of dispatches, and the bound
//! on the loop iterations of one invocation that every launch is held to.

use std::sync::Arc;

use crate::gpu::context::{Gpu, Region};
use crate::gpu::kernels::{Consts, Kernel, KernelDef, RowSplit, Tuning, VecWidth, WORKGROUP_SIZE};
use crate::gpu::tensor::Tensor;
use crate::gpu::workspace::Workspace;
use crate::{Error, Result};

/// The most loop iterations one invocation may run, all its loops together (nested ones
/// counted in full). llvmpipe — lavapipe and its GL driver, the devices CI runs on — ends an
/// invocation's loops after 65 535 iterations in total and carries on with whatever it has,
/// so a longer loop returns wrong numbers without any error. A quarter of that leaves room
/// for loops a count below rounds down, and bounds one invocation's work on every device.
/// [`Workspace::dispatch`] refuses any launch whose count is above it.
pub(crate) const MAX_LANE_ITERS: usize = 16_384;

/// Vectors per lane a kept row holds in registers. Twin: `KEPT` in shaders/shared/rows.wgsl.
pub(crate) const KEPT_VECS: usize = 8;

/// Loop iterations of one segmented reduction over up to `WORKGROUP_SIZE` lanes
/// (shaders/shared/reduce_*.wgsl): log2 WG butterfly steps, then up to WG reads across the
/// segment's subgroups (one lane per subgroup at worst).
pub(crate) const REDUCE_ITERS: usize = 8 + WORKGROUP_SIZE as usize;

/// The loops of a row kernel, counted in its most expensive invocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowLoops {
    /// Loops over the lane's vectors of its row (each `ceil(span / g)` iterations).
    pub(crate) passes: usize,
    /// Segmented reductions (`reduce_md`, `reduce_sum4`).
    pub(crate) reductions: usize,
    /// Dispatches in the chain when a row is split; the last one gathers the earlier
    /// phases' results.
    pub(crate) phases: usize,
    /// Gathers of the segments' results in a split row's chain, each a loop over them and
    /// up to two reductions (one per earlier phase, unless the kernel gathers more).
    pub(crate) gathers: usize,
}

/// How one launch of a row kernel spreads its rows. Twin of `P.g`, `P.segs` and `P.span` in
/// shaders/shared/rows.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowPlan {
    /// Lanes per segment: a power of two in `1..=WORKGROUP_SIZE`.
    pub(crate) g: u32,
    /// Segments per row.
    pub(crate) segs: u32,
    /// Vectors per segment (the last segment may have fewer).
    pub(crate) span: u32,
    /// Dispatches per chunk of rows: 1, or the kernel's phases when rows are split.
    pub(crate) phases: u32,
    /// Loop iterations of the busiest invocation, at most [`MAX_LANE_ITERS`].
    pub(crate) lane_iters: usize,
    /// The row is whole and each lane has at most [`KEPT_VECS`] vectors of it, kept in
    /// registers between the passes where the tuning asks (`Tuning::keep_rows`).
    pub(crate) kept: bool,
}

/// Bytes of `part` per segment: two phases' `Partial`s of two vec4 each (rows.wgsl).
const PART_BYTES_PER_SEG: u64 = 2 * 2 * 16;

/// Lanes given to each of `rows` rows of `vecs` vectors: a power of two in
/// `1..=WORKGROUP_SIZE`. Each lane takes up to `tuning.vecs_per_lane` vectors; rows that need
/// fewer lanes than a workgroup share one. When that leaves fewer than
/// `tuning.min_workgroups` workgroups, rows get more lanes (while they have vectors to give).
fn lanes_per_row(vecs: usize, rows: usize, tuning: &Tuning) -> usize {
    let wg = WORKGROUP_SIZE as usize;
    let mut g = vecs
        .div_ceil(tuning.vecs_per_lane)
        .next_power_of_two()
        .min(wg);
    while g < wg && g < vecs && rows.div_ceil(wg / g) < tuning.min_workgroups {
        g *= 2;
    }
    g
}

impl RowPlan {
    /// The plan for `rows` rows of `vecs` vectors under `loops`. A row is split into
    /// segments when one workgroup would loop more than [`MAX_LANE_ITERS`] times over it,
    /// and (with [`RowSplit::Auto`]) when too few rows leave the device idle (fewer than
    /// `tuning.min_workgroups` workgroups) while each segment keeps `tuning.vecs_per_lane`
    /// vectors per lane; [`RowSplit::Always`] gives each lane one vector per segment.
    pub(crate) fn new(vecs: usize, rows: usize, loops: RowLoops, tuning: &Tuning) -> Result<Self> {
        let g = lanes_per_row(vecs, rows, tuning);
        let fixed = loops.reductions * REDUCE_ITERS;
        // Split rows: the later phases gather the earlier ones' partials, each lane
        // `ceil(segs / g)` of them, then reduce them over the unit (twice at most).
        let iters = |segs: usize| {
            let gathers = if segs > 1 {
                loops.gathers * (segs.div_ceil(g) + 2 * REDUCE_ITERS)
            } else {
                0
            };
            loops.passes * vecs.div_ceil(segs).div_ceil(g) + fixed + gathers
        };
        // The fewest segments within the bound: at least the count that the passes alone
        // need, then one more at a time while the gathers' share rounds it over.
        let room = MAX_LANE_ITERS.saturating_sub(fixed).max(1);
        let least = (loops.passes * vecs).div_ceil(g * room).max(1);
        let mut segs = (least..=2 * least + 16)
            .find(|&s| iters(s) <= MAX_LANE_ITERS)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "no split of a row of {vecs} vectors keeps a lane within {MAX_LANE_ITERS} loop iterations"
                ))
            })?;
        match tuning.split {
            RowSplit::Auto
                if g == WORKGROUP_SIZE as usize && rows * segs < tuning.min_workgroups =>
            {
                let fill = tuning.min_workgroups.div_ceil(rows);
                let most = vecs / (g * tuning.vecs_per_lane);
                segs = segs.max(fill.min(most));
            }
            // Capped so that a gather stays at 1024 partials per lane.
            RowSplit::Always => segs = segs.max(vecs.div_ceil(g).min(1024 * g)),
            RowSplit::Auto | RowSplit::Never => {}
        }
        let span = vecs.div_ceil(segs);
        let segs = vecs.div_ceil(span);
        let kept = tuning.keep_rows && segs == 1 && span <= KEPT_VECS * g;
        // A kept row's passes run KEPT_VECS masked iterations each.
        let lane_iters = if kept {
            iters(segs).max(loops.passes * KEPT_VECS + fixed)
        } else {
            iters(segs)
        };
        if lane_iters > MAX_LANE_ITERS {
            return Err(Error::Internal(format!(
                "a row of {vecs} vectors in {segs} segments needs {lane_iters} loop iterations per lane, over {MAX_LANE_ITERS}"
            )));
        }
        let phases = if segs == 1 { 1 } else { loops.phases };
        let narrow =
            |v: usize| u32::try_from(v).map_err(|_| Error::Shape(format!("{v} overflows u32")));
        Ok(Self {
            g: g as u32,
            segs: narrow(segs)?,
            span: narrow(span)?,
            phases: narrow(phases)?,
            lane_iters,
            kept,
        })
    }

    /// Workgroups for `rows` rows.
    pub(crate) fn groups(&self, rows: usize) -> usize {
        let units_per_group = (WORKGROUP_SIZE / self.g) as usize;
        (rows * self.segs as usize).div_ceil(units_per_group)
    }

    /// The scratch buffer for the segments' partial results of up to `rows` rows (binding
    /// 10 of every row kernel; a token 16 bytes when rows are not split). Call inside
    /// `Gpu::scoped`.
    fn part(&self, ws: &mut Workspace, rows: usize) -> wgpu::Buffer {
        let bytes = if self.segs == 1 {
            16
        } else {
            rows as u64 * u64::from(self.segs) * PART_BYTES_PER_SEG
        };
        ws.scratch("xent row partials", bytes)
    }
}

/// A row kernel's launch over the rows of a tensor: its pipeline at the rows' vector width
/// (and element type), its plan, and the rows in chunks whose windows fit the binding limit
/// (a dispatch each, or a chain of them when rows are split). The one launch path of every
/// row kernel.
pub(crate) struct RowLaunch {
    gpu: Gpu,
    width: VecWidth,
    consts: Consts,
    kernel: Arc<Kernel>,
    pub(crate) plan: RowPlan,
    part: wgpu::Buffer,
    rows: usize,
    per: usize,
    row_bytes: u64,
    elem_bytes: u64,
}

impl RowLaunch {
    /// The launch of `def` with `consts` under `loops` over the rows of `x` (an error if
    /// the shader does not read its type). Call inside `Gpu::scoped`.
    pub(crate) fn new(
        ws: &mut Workspace,
        (def, consts): (&KernelDef, Consts),
        loops: RowLoops,
        x: &Tensor,
    ) -> Result<Self> {
        let gpu = ws.gpu().clone();
        let (rows, cols, dtype) = (x.rows(), x.cols(), x.dtype());
        if !def.shader.reads(dtype) {
            return Err(Error::InvalidArgument(format!(
                "{} takes f32 tensors; this one is {dtype}",
                def.entry
            )));
        }
        let width = VecWidth::for_rows(def.shader, cols, dtype);
        let kernel = gpu.kernel_with(def, width, consts)?;
        let plan = RowPlan::new(width.vecs(cols), rows, loops, &gpu.inner.tuning)?;
        let row_bytes = x.row_bytes();
        let per = gpu.items_per_dispatch(rows, row_bytes, 1)?;
        let part = plan.part(ws, per);
        Ok(Self {
            gpu,
            width,
            consts,
            kernel,
            plan,
            part,
            rows,
            per,
            row_bytes,
            elem_bytes: dtype.bytes() as u64,
        })
    }

    /// The same launch running `def` (where given) instead when the plan keeps its rows in
    /// registers ([`RowPlan::kept`]): a kernel of its own keeps that code out of the other
    /// rows' kernel. Call inside `Gpu::scoped`.
    pub(crate) fn kept_by(mut self, def: Option<&KernelDef>) -> Result<Self> {
        if let Some(def) = def.filter(|_| self.plan.kept) {
            self.kernel = self.gpu.kernel_with(def, self.width, self.consts)?;
        }
        Ok(self)
    }

    /// The same launch in chunks whose windows of another buffer of `row_bytes` per row (a
    /// per-row output wider than these rows) fit a binding too.
    pub(crate) fn fitting(mut self, row_bytes: u64) -> Result<Self> {
        self.per = self
            .per
            .min(self.gpu.items_per_dispatch(self.rows, row_bytes, 1)?);
        Ok(self)
    }

    /// The chunks: each one's first row and its number of rows.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (rows, per) = (self.rows, self.per);
        (0..rows)
            .step_by(per)
            .map(move |r0| (r0, per.min(rows - r0)))
    }

    /// A chunk's window of `region`, laid out like the rows: the binding and the element
    /// offset of its first row inside it.
    pub(crate) fn window<'a>(
        &self,
        region: Region<'a>,
        (r0, n): (usize, usize),
    ) -> (wgpu::BufferBinding<'a>, u32) {
        let b = self.row_bytes;
        self.gpu
            .window_of(region, (r0 as u64 * b, n as u64 * b), self.elem_bytes)
    }

    /// Records a chunk of `rows` rows: one dispatch, or the chain of phases when rows are
    /// split (`params` gives each phase's parameters), with the partials' scratch bound at
    /// 10 and the other buffers as given.
    pub(crate) fn record<P: bytemuck::Pod>(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        rows: usize,
        params: impl Fn(u32) -> P,
        buffers: &[(u32, wgpu::BufferBinding<'_>)],
    ) -> Result<()> {
        let plan = &self.plan;
        let mut all = buffers.to_vec();
        all.push((10, self.part.as_entire_buffer_binding()));
        for phase in 0..plan.phases {
            let groups = plan.groups(rows);
            ws.dispatch(
                pass,
                &self.kernel,
                &params(phase),
                &all,
                groups,
                plan.lane_iters,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: Tuning = Tuning {
        vecs_per_lane: 8,
        min_workgroups: 1024,
        split: RowSplit::Auto,
        keep_rows: true,
        tiled_products: true,
    };
    const CPU: Tuning = Tuning {
        vecs_per_lane: 64,
        min_workgroups: 8,
        split: RowSplit::Auto,
        keep_rows: false,
        tiled_products: false,
    };
    const INFO: RowLoops = RowLoops {
        passes: 4,
        reductions: 3,
        phases: 3,
        gathers: 2,
    };

    #[test]
    fn every_plan_stays_within_the_bound() {
        let always = Tuning {
            split: RowSplit::Always,
            ..CPU
        };
        for tuning in [GPU, CPU, always] {
            for vecs in [
                1,
                3,
                255,
                256,
                1000,
                65_536,
                2_097_153,
                8_388_609,
                33_554_432,
                1 << 30,
            ] {
                for rows in [1, 2, 7, 4096] {
                    let plan = RowPlan::new(vecs, rows, INFO, &tuning).unwrap();
                    assert!(plan.lane_iters <= MAX_LANE_ITERS, "{vecs}×{rows}: {plan:?}");
                    let (segs, span) = (plan.segs as usize, plan.span as usize);
                    assert!(segs * span >= vecs && (segs - 1) * span < vecs, "{plan:?}");
                    assert_eq!(plan.phases == 1, segs == 1);
                }
            }
        }
    }

    #[test]
    fn long_rows_split_and_short_rows_do_not() {
        let one = |vecs, rows, t| RowPlan::new(vecs, rows, INFO, t).unwrap().segs;
        assert_eq!(one(1000, 4096, &GPU), 1);
        assert_eq!(one(8_388_609, 4096, &CPU), 10);
        // One row of 262 144 floats (65 536 vectors) on a GPU: 32 workgroups, not one.
        assert_eq!(one(65_536, 1, &GPU), 32);
    }

    #[test]
    fn whole_rows_of_up_to_8_vectors_per_lane_are_kept_where_the_tuning_asks() {
        let kept = |vecs, rows, t| RowPlan::new(vecs, rows, INFO, t).unwrap().kept;
        // 8 192 f32 = 2 048 vectors on 256 lanes: 8 each.
        assert!(kept(2048, 4096, &GPU));
        assert!(kept(1, 4096, &GPU));
        // Longer rows are split into segments: read twice.
        assert!(!kept(65_536, 1, &GPU));
        assert!(!kept(2048, 4096, &CPU));
    }
}
