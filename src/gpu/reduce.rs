//! Host side of shaders/reduce.wgsl: deterministic sums of f32 runs, used to reduce
//! per-sample losses and per-workgroup partials to a scalar.

use crate::Result;
use crate::gpu::context::Region;
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

/// Values one lane of a block sum adds. Twin: `SUM_ITEMS` in shaders/shared/sum.wgsl.
pub(crate) const SUM_ITEMS: usize = 16;

/// Values one workgroup of a block sum adds.
pub(crate) const SUM_PER_GROUP: usize = SUM_ITEMS * WORKGROUP_SIZE as usize;

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
        pass: &mut wgpu::ComputePass<'_>,
        src: &wgpu::Buffer,
        first: usize,
        n: usize,
        to: &SumTo<'_>,
    ) -> Result<()> {
        let (src, first, n) = self.record_partial_sums(pass, src, first, n)?;
        let den = to.divide_by.map(wgpu::Buffer::as_entire_buffer_binding);
        self.record_block_sums(pass, (&src, first, n), (to.dst, to.index), to.scale, den)
    }

    /// Records the levels of a sum of `n` values of `src` (from element `first`) that leave
    /// few enough values for one workgroup in one dispatch to add (at most
    /// [`SUM_PER_GROUP`]), and returns where they are: `src` itself when `n` is already that
    /// small. The last level is the caller's, so that it can fuse it with other work (as
    /// cross-entropy's `ce_finish_sum` does). Call inside `Gpu::scoped`.
    pub(crate) fn record_partial_sums(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        src: &wgpu::Buffer,
        first: usize,
        n: usize,
    ) -> Result<(wgpu::Buffer, usize, usize)> {
        let gpu = self.gpu().clone();
        let (mut src, mut first, mut n) = (src.clone(), first, n);
        for level in 0.. {
            let per = gpu.items_per_dispatch(n, 4, 1)?;
            if n <= SUM_PER_GROUP && per >= n {
                break;
            }
            let (chunks, groups) = partial_chunks(n, per, SUM_PER_GROUP);
            let purpose = if level % 2 == 0 {
                "xent partial sums (even levels)"
            } else {
                "xent partial sums (odd levels)"
            };
            let partials = self.scratch(purpose, groups as u64 * 4);
            for c in chunks {
                let run = (&src, first + c.start, c.count);
                self.record_block_sums(pass, run, (&partials, c.first_partial), 1.0, None)?;
            }
            (src, first, n) = (partials, 0, groups);
        }
        Ok((src, first, n))
    }

    /// One dispatch of `sum` over `count` values of `src` from element `first` (within one
    /// binding): each block of [`SUM_PER_GROUP`] values into one partial, from element `at`
    /// of `dst`, times `scale` and over element 0 of `den` when given.
    fn record_block_sums(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        (src, first, count): (&wgpu::Buffer, usize, usize),
        (dst, at): (&wgpu::Buffer, usize),
        scale: f32,
        den: Option<wgpu::BufferBinding<'_>>,
    ) -> Result<()> {
        let gpu = self.gpu().clone();
        let kernel = gpu.kernel(&SUM, VecWidth::One)?;
        let groups = count.div_ceil(SUM_PER_GROUP);
        let (input, in_off) = gpu.window(Region::whole(src), first as u64 * 4, count as u64 * 4);
        let (out, out_off) = gpu.window(Region::whole(dst), at as u64 * 4, groups as u64 * 4);
        let params = SumParams {
            n: count as u32,
            in_off,
            out_off,
            divide: u32::from(den.is_some()),
            scale,
            _pad: [0; 3],
        };
        let den = den.unwrap_or_else(|| gpu.inner.dummy.as_entire_buffer_binding());
        self.dispatch(
            pass,
            &kernel,
            &params,
            &[(1, input), (2, out), (3, den)],
            groups,
            SUM_ITEMS + REDUCE_ITERS,
        )
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
