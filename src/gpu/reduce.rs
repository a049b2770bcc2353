//! Host side of shaders/reduce.wgsl: deterministic sums of f32 runs, used to reduce
//! per-sample losses and per-workgroup partials to a scalar.

use crate::Result;
use crate::gpu::kernels::{KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE, partial_chunks};
use crate::gpu::rows::REDUCE_ITERS;
use crate::gpu::workspace::Workspace;

/// Twin of `Params` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    n: u32,
    in_off: u32,
    out_off: u32,
    divide: u32,
    scale: f32,
    _pad: [u32; 3],
}

const SUM: KernelDef = KernelDef {
    shader: Shader::Reduce,
    entry: "sum",
    bindings: &[
        (0, Slot::Uniform),
        (1, Slot::Read),
        (2, Slot::ReadWrite),
        (3, Slot::Read),
    ],
};

/// Values one lane of `sum` adds. Twin: `ITEMS` in shaders/reduce.wgsl.
const ITEMS: usize = 16;

/// Values one workgroup of `sum` adds.
pub(crate) const SUM_PER_GROUP: usize = ITEMS * WORKGROUP_SIZE as usize;

/// Where a sum goes: element `index` of `dst`, times `scale`, divided by element 0 of
/// `divide_by` when given (a denominator computed on the GPU).
pub(crate) struct SumTo<'a> {
    pub(crate) dst: &'a wgpu::Buffer,
    pub(crate) index: usize,
    pub(crate) scale: f32,
    pub(crate) divide_by: Option<&'a wgpu::Buffer>,
}

impl Workspace {
    /// Records the sum of `n` f32 values of `src`, from element `first`, into `to`: one level
    /// of per-workgroup partials after another until one value is left (in two scratch
    /// buffers taken in turn). The order of the additions depends only on `n`, so the result
    /// is the same bits on every run. Call inside `Gpu::scoped`.
    pub(crate) fn record_sum(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        first: usize,
        n: usize,
        to: &SumTo<'_>,
    ) -> Result<()> {
        let gpu = self.gpu().clone();
        let kernel = gpu.kernel(&SUM, VecWidth::One)?;
        let (mut src, mut first, mut n) = (src.clone(), first, n);
        for level in 0.. {
            let per = gpu.items_per_dispatch(n, 4, 1)?;
            let (chunks, groups) = partial_chunks(n, per, SUM_PER_GROUP);
            let last = groups == 1;
            let partials;
            let (dst, dst_index) = if last {
                (to.dst, to.index)
            } else {
                let purpose = if level % 2 == 0 {
                    "xent partial sums (even levels)"
                } else {
                    "xent partial sums (odd levels)"
                };
                partials = self.scratch(purpose, groups as u64 * 4);
                (&partials, 0)
            };
            let (out, out_off) = gpu.window(dst, dst_index as u64 * 4, groups as u64 * 4);
            let den = match (last, to.divide_by) {
                (true, Some(b)) => b,
                _ => &gpu.inner.dummy,
            };
            for c in chunks {
                let (input, in_off) =
                    gpu.window(&src, (first + c.start) as u64 * 4, c.count as u64 * 4);
                let params = SumParams {
                    n: c.count as u32,
                    in_off,
                    out_off: out_off + c.first_partial as u32,
                    divide: u32::from(last && to.divide_by.is_some()),
                    scale: if last { to.scale } else { 1.0 },
                    _pad: [0; 3],
                };
                self.dispatch(
                    encoder,
                    &kernel,
                    &params,
                    &[
                        (1, input),
                        (2, out.clone()),
                        (3, den.as_entire_buffer_binding()),
                    ],
                    c.groups,
                    ITEMS + REDUCE_ITERS,
                )?;
            }
            if last {
                return Ok(());
            }
            (src, first, n) = (dst.clone(), 0, groups);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::wgsl_params;

    #[test]
    fn params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Reduce);
        assert_eq!(size, std::mem::size_of::<SumParams>());
        assert_eq!(
            names,
            [
                "n", "in_off", "out_off", "divide", "scale", "_pad0", "_pad1", "_pad2"
            ]
        );
    }
}
