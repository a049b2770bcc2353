//! Host side of cross-entropy's shard kernels (shaders/cross_entropy.wgsl): a vocabulary
//! split across devices (SPEC.md §2; src/shard.rs has the merge and the multi-device run).

use crate::gpu::context::{Placed, Region};
use crate::gpu::cross_entropy::{
    CeExtras, CeParams, CeTarget, Step, record_batch_finish, record_shard_targets,
};
use crate::gpu::kernels::{Consts, KernelDef, Shader, Slot, WORKGROUP_SIZE};
use crate::gpu::reduce::SumTo;
use crate::gpu::rows::{RowLaunch, RowLoops};
use crate::gpu::tensor::{Alloc, GradOut, LossOut, Targets, Tensor};
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{
    CrossEntropyOptions, Grad, Loss, LossReduction, check_cross_entropy, check_len,
};
use crate::shard::{SHARD_STATS, ShardBatch};
use crate::{DType, Error, Result};

/// A GPU shard's batch (see [`ShardBatch`]).
pub type GpuShard<'a> = ShardBatch<'a, &'a Targets, Tensor>;

use Slot::{Read, ReadWrite, Uniform};

const CE_SHARD_STATS: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_shard_stats",
    bindings: &[
        (0, Uniform),
        (1, Read),
        (3, Read),
        (4, Read),
        (6, ReadWrite),
        (10, ReadWrite),
        (13, ReadWrite),
    ],
};

/// `ce_shard_stats`: one pass and two reductions; a split row's second phase gathers the
/// segments' statistics.
const SHARD_STATS_LOOPS: RowLoops = RowLoops {
    passes: 1,
    reductions: 2,
    phases: 2,
    gathers: 1,
};

const CE_SHARD_LOSS: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_shard_loss",
    bindings: &[
        (0, Uniform),
        (3, Read),
        (5, ReadWrite),
        (6, ReadWrite),
        (7, Read),
        (8, ReadWrite),
        (11, ReadWrite),
        (12, ReadWrite),
        (13, ReadWrite),
    ],
};

const CE_SHARD_GRAD: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_shard_grad",
    bindings: &[
        (0, Uniform),
        (1, Read),
        (2, ReadWrite),
        (3, Read),
        (4, Read),
        (6, ReadWrite),
        (7, Read),
        (10, ReadWrite),
        (13, ReadWrite),
    ],
};

const CE_SHARD_GRAD_IN_PLACE: KernelDef = KernelDef {
    shader: Shader::CrossEntropyInPlace,
    entry: "ce_shard_grad",
    bindings: &[
        (0, Uniform),
        (1, ReadWrite),
        (3, Read),
        (4, Read),
        (6, ReadWrite),
        (7, Read),
        (10, ReadWrite),
        (13, ReadWrite),
    ],
};

/// `ce_shard_grad`: one pass, nothing to reduce, so split rows need no second phase.
const SHARD_GRAD_LOOPS: RowLoops = RowLoops {
    passes: 1,
    reductions: 0,
    phases: 1,
    gathers: 0,
};

/// Bytes of one row of statistics.
const STATS_ROW_BYTES: u64 = SHARD_STATS as u64 * 4;

impl Tensor {
    /// Pass 1 of cross-entropy over a vocabulary split across devices (SPEC.md §2): these
    /// logits are one shard's columns (`rows × shard.width`, f32, f16 or bf16), and the
    /// result is each row's statistics over them, `rows × SHARD_STATS` f32, for
    /// [`crate::merge_shard_stats`]. Targets are checked against the whole vocabulary
    /// ([`crate::Error::Target`]). Options as [`Tensor::cross_entropy`]; of them pass 1
    /// reads the softcap and `ignore_index` (every sum a later option may need is taken),
    /// which pass 2 must be given the same.
    pub fn shard_stats(&self, batch: GpuShard<'_>, opts: &CrossEntropyOptions) -> Result<Tensor> {
        let stats = Tensor::output(self.gpu(), (self.rows(), SHARD_STATS), DType::F32)?;
        self.gpu().run_checked("shard statistics", |ws, enc| {
            self.record_shard_stats(ws, enc, batch, opts, &stats)
        })?;
        Ok(stats)
    }

    /// Records [`Tensor::shard_stats`] into `stats` (`rows × SHARD_STATS` f32). Nothing is
    /// submitted or read back; a bad target writes nothing and is reported by
    /// [`Workspace::check_targets`].
    pub fn record_shard_stats(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        batch: GpuShard<'_>,
        opts: &CrossEntropyOptions,
        stats: &Tensor,
    ) -> Result<()> {
        self.check_shard(ws, batch, opts)?;
        self.check_out(stats, (self.rows(), SHARD_STATS), DType::F32)?;
        let gpu = self.gpu();
        let base = self.shard_params(batch, opts, false);
        gpu.scoped("recording shard statistics", || {
            let mut pass = begin_pass(encoder, "xent shard statistics");
            let status = ws.target_status();
            let (t, classes) = (batch.targets, batch.shard.classes);
            record_shard_targets(ws, &mut pass, (t, classes), base, &status)?;
            let consts = Consts::NONE.softcap(base.softcap > 0.0);
            let launch = RowLaunch::new(ws, (&CE_SHARD_STATS, consts), SHARD_STATS_LOOPS, self)?
                .fitting(STATS_ROW_BYTES)?;
            let plan = launch.plan;
            let weight = batch
                .weight
                .map_or_else(|| Placed::whole(&gpu.inner.dummy), Tensor::placed);
            for (r0, n) in launch.chunks() {
                let (xb, in_off) = launch.window(self.region(), (r0, n));
                let (tb, t_off) = gpu.window(t.region(), r0 as u64 * 4, n as u64 * 4);
                let (sb, s_off) = stats_window(stats, (r0, n));
                let params = CeParams {
                    rows: n as u32,
                    in_off,
                    t_off,
                    s_off,
                    row0: r0 as u32,
                    g: plan.g,
                    segs: plan.segs,
                    span: plan.span,
                    ..base
                };
                let bindings = [
                    (1, xb),
                    (3, tb),
                    (4, weight.binding()),
                    (6, status.as_entire_buffer_binding()),
                    (13, sb),
                ];
                let phased = |phase| CeParams { phase, ..params };
                launch.record(ws, &mut pass, n, phased, &bindings)?;
            }
            // The check's error names K, the whole vocabulary's classes.
            let whole = CeParams {
                cols: classes as u32,
                ..base
            };
            record_batch_finish(ws, &mut pass, &status, &whole)
        })
    }

    /// Pass 2 of cross-entropy over a split vocabulary: from `merged`, every shard's pass-1
    /// statistics merged (`rows × SHARD_STATS` f32), the loss (reduced as the options ask,
    /// the same on every shard) and, as `grad` asks, this shard's columns of the gradient of
    /// the reduced loss (in place over these logits with [`Grad::InPlace`]).
    pub fn shard_backward(
        &self,
        batch: GpuShard<'_>,
        merged: &Tensor,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Tensor>> {
        let per_row = |on: bool| {
            on.then(|| Tensor::output(self.gpu(), (self.rows(), 1), DType::F32))
                .transpose()
        };
        let (z_loss, entropy) = (per_row(opts.z_loss_output)?, per_row(opts.entropy_output)?);
        let extras = CeExtras {
            z_loss: z_loss.as_ref(),
            entropy: entropy.as_ref(),
        };
        let shape = (self.ce_loss_shape(opts.reduction), Tensor::output as Alloc);
        let out = self.loss_with(shape, grad, |ws, enc, out| {
            self.record_shard_backward(ws, enc, batch, merged, opts, (out, extras))
        })?;
        Ok(Loss {
            z_loss,
            entropy,
            ..out
        })
    }

    /// Records [`Tensor::shard_backward`], writing the loss and gradient into `out` and the
    /// per-row extras into `extras` (as [`Tensor::record_cross_entropy_extras`]). Nothing is
    /// submitted or read back; a bad target writes nothing.
    pub fn record_shard_backward(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        batch: GpuShard<'_>,
        merged: &Tensor,
        opts: &CrossEntropyOptions,
        (out, extras): (LossOut<'_>, CeExtras<'_>),
    ) -> Result<()> {
        self.check_shard(ws, batch, opts)?;
        let gpu = self.gpu();
        let rows = self.rows();
        gpu.same(merged.gpu())?;
        self.check_out(merged, (rows, SHARD_STATS), DType::F32)
            .map_err(|e| Error::Shape(format!("the merged statistics: {e}")))?;
        self.check_loss_out(&out, self.ce_loss_shape(opts.reduction))?;
        let asked = [
            (opts.z_loss_output, extras.z_loss, "z_loss_output"),
            (opts.entropy_output, extras.entropy, "entropy_output"),
        ];
        for (on, tensor, name) in asked {
            match tensor {
                Some(t) => self.check_out(t, (rows, 1), DType::F32)?,
                None if on => {
                    return Err(Error::InvalidArgument(format!(
                        "the options ask for {name} but no tensor is given for it (CeExtras)"
                    )));
                }
                None => {}
            }
        }
        let base = self.shard_params(batch, opts, true);
        gpu.scoped("recording shard gradient", || {
            let mut pass = begin_pass(encoder, "xent shard gradient");
            let (t, classes) = (batch.targets, batch.shard.classes);
            // The batch's finish names K, the whole vocabulary's classes, in a check's error.
            let whole = CeParams {
                cols: classes as u32,
                ..base
            };
            let step = Step::begin_shard(
                ws,
                &mut pass,
                (t, rows, classes),
                opts,
                (whole, &out, extras),
            )?;
            let status = step.status()?.clone();
            // The per-row losses and extras, and each row's w_y for the mean's denominator.
            let wy = ws.scratch("xent shard target weights", rows as u64 * 4);
            let loss_kernel = gpu.kernel_with(
                &CE_SHARD_LOSS,
                crate::gpu::kernels::VecWidth::One,
                Consts::NONE
                    .with("Z_OUT", u32::from(extras.z_loss.is_some()))
                    .with("H_OUT", u32::from(extras.entropy.is_some())),
            )?;
            let no_z = ws.scratch("xent no z-loss output", 16);
            let no_h = ws.scratch("xent no entropy output", 16);
            let per = gpu.items_per_dispatch(rows, STATS_ROW_BYTES, 1)?;
            let wg = WORKGROUP_SIZE as usize;
            for r0 in (0..rows).step_by(per) {
                let n = per.min(rows - r0);
                let per_row = |b| gpu.window(b, r0 as u64 * 4, n as u64 * 4);
                let (lb, l_off) = per_row(step.per_row.region());
                let (tb, t_off) = per_row(t.region());
                let (wb, out_off) = per_row(Region::whole(&wy));
                let (sb, s_off) = stats_window(merged, (r0, n));
                let zb = extras
                    .z_loss
                    .map_or(no_z.as_entire_buffer_binding(), |z| per_row(z.region()).0);
                let hb = extras
                    .entropy
                    .map_or(no_h.as_entire_buffer_binding(), |h| per_row(h.region()).0);
                let params = CeParams {
                    rows: n as u32,
                    l_off,
                    t_off,
                    out_off,
                    s_off,
                    ..base
                };
                let bindings = [
                    (3, tb),
                    (5, lb),
                    (6, status.as_entire_buffer_binding()),
                    (7, step.scalars.as_entire_buffer_binding()),
                    (8, wb),
                    (11, zb),
                    (12, hb),
                    (13, sb),
                ];
                ws.dispatch(
                    &mut pass,
                    &loss_kernel,
                    &params,
                    &bindings,
                    n.div_ceil(wg),
                    0,
                )?;
            }
            if opts.reduction == LossReduction::Mean {
                let to = SumTo {
                    dst: &step.scalars,
                    index: 0,
                    scale: 1.0,
                    divide_by: None,
                };
                ws.record_sum(&mut pass, &wy, 0, rows, &to)?;
            }
            if !matches!(out.grad, GradOut::None) {
                self.record_shard_grad(
                    ws,
                    &mut pass,
                    (t, &status, &step.scalars),
                    batch,
                    merged,
                    (base, &out.grad),
                )?;
            }
            step.finish(ws, &mut pass, out.loss)
        })
    }

    /// `ce_shard_grad` over these logits: the shard's columns of the gradient into `grad`.
    fn record_shard_grad(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        (t, status, scalars): (&Targets, &wgpu::Buffer, &wgpu::Buffer),
        batch: GpuShard<'_>,
        merged: &Tensor,
        (base, grad): (CeParams, &GradOut<'_>),
    ) -> Result<()> {
        let gpu = self.gpu();
        let def = match grad {
            GradOut::InPlace => &CE_SHARD_GRAD_IN_PLACE,
            _ => &CE_SHARD_GRAD,
        };
        let consts = Consts::NONE.softcap(base.softcap > 0.0);
        let launch =
            RowLaunch::new(ws, (def, consts), SHARD_GRAD_LOOPS, self)?.fitting(STATS_ROW_BYTES)?;
        let plan = launch.plan;
        let weight = batch
            .weight
            .map_or_else(|| Placed::whole(&gpu.inner.dummy), Tensor::placed);
        for (r0, n) in launch.chunks() {
            let (xb, in_off) = launch.window(self.region(), (r0, n));
            let (tb, t_off) = gpu.window(t.region(), r0 as u64 * 4, n as u64 * 4);
            let (sb, s_off) = stats_window(merged, (r0, n));
            let mut params = CeParams {
                rows: n as u32,
                in_off,
                t_off,
                s_off,
                row0: r0 as u32,
                g: plan.g,
                segs: plan.segs,
                span: plan.span,
                ..base
            };
            let mut bindings = vec![
                (1, xb),
                (3, tb),
                (4, weight.binding()),
                (6, status.as_entire_buffer_binding()),
                (7, scalars.as_entire_buffer_binding()),
                (13, sb),
            ];
            if let GradOut::Into(g) = grad {
                let (gb, out_off) = launch.window(g.region(), (r0, n));
                params.out_off = out_off;
                bindings.push((2, gb));
            }
            launch.record(ws, pass, n, |phase| CeParams { phase, ..params }, &bindings)?;
        }
        Ok(())
    }

    /// The checks both passes share: the options (class indices), the shard against these
    /// logits, the targets and class weights.
    fn check_shard(
        &self,
        ws: &Workspace,
        batch: GpuShard<'_>,
        opts: &CrossEntropyOptions,
    ) -> Result<()> {
        check_cross_entropy(opts, false)?;
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        gpu.same(batch.targets.gpu())?;
        batch.shard.check()?;
        if self.cols() != batch.shard.width {
            return Err(Error::Shape(format!(
                "logits of {} columns for a shard of {}",
                self.cols(),
                batch.shard.width
            )));
        }
        if batch.targets.len() != self.rows() {
            return Err(Error::Shape(format!(
                "{} targets for {} rows of logits",
                batch.targets.len(),
                self.rows()
            )));
        }
        if let Some(w) = batch.weight {
            gpu.same(w.gpu())?;
            check_len("weight", Some(w.len()), self.cols())?;
            w.require_f32("class weights")?;
        }
        Ok(())
    }

    /// The parameters both passes' launches start from.
    fn shard_params(
        &self,
        batch: GpuShard<'_>,
        opts: &CrossEntropyOptions,
        grad: bool,
    ) -> CeParams {
        let kind = CeTarget::Indices(batch.targets);
        let dims = (self.rows(), self.cols());
        CeParams {
            col0: batch.shard.first as u32,
            classes: batch.shard.classes as u32,
            ..CeParams::base(kind, dims, batch.weight.is_some(), grad, opts)
        }
    }
}

/// The window of rows `r0 .. r0 + n` of a statistics tensor, and the element offset of its
/// first row there (a multiple of 4: rows are two vec4 each).
fn stats_window(stats: &Tensor, (r0, n): (usize, usize)) -> (wgpu::BufferBinding<'_>, u32) {
    let gpu = stats.gpu();
    gpu.window(
        stats.region(),
        r0 as u64 * STATS_ROW_BYTES,
        n as u64 * STATS_ROW_BYTES,
    )
}
