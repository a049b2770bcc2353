//! Host side of shaders/bce.wgsl: binary cross-entropy with logits and its gradient.

use crate::gpu::context::Placed;
use crate::gpu::kernels::{
    Chunk, KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE, partial_chunks,
};
use crate::gpu::reduce::SumTo;
use crate::gpu::rows::REDUCE_ITERS;
use crate::gpu::tensor::{GradOut, LossOut, Tensor};
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{BceOptions, Grad, Loss, LossReduction, check_len};
use crate::{Error, Result};

/// Twin of `Params` in shaders/bce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct BceParams {
    n: u32,
    cols: u32,
    off: u32,
    col0: u32,
    p_off: u32,
    has_weight: u32,
    has_pos_weight: u32,
    grad: u32,
    per_element: u32,
    scale: f32,
    w_off: u32,
    l_off: u32,
}

/// Vectors per lane. Twin: `ITEMS` in shaders/bce.wgsl.
const ITEMS: usize = 8;

const BCE_BINDINGS: &[(u32, Slot)] = &[
    (0, Slot::Uniform),
    (1, Slot::Read),
    (2, Slot::ReadWrite),
    (3, Slot::Read),
    (4, Slot::Read),
    (5, Slot::Read),
    (6, Slot::ReadWrite),
];

const BCE: KernelDef = KernelDef {
    shader: Shader::Bce,
    entry: "bce",
    bindings: BCE_BINDINGS,
};

/// `bce` over rows of a half type (padded rows; weights and per-element losses dense f32).
const BCE_ROWS: KernelDef = KernelDef {
    shader: Shader::Bce,
    entry: "bce_rows",
    bindings: BCE_BINDINGS,
};

impl Tensor {
    /// Binary cross-entropy with logits (SPEC.md §2, PyTorch's
    /// `F.binary_cross_entropy_with_logits`), elementwise against `target` of the same shape,
    /// computed through log-sigmoid:
    /// `l = -w·(pw·t·log σ(x) + (1-t)·log σ(-x))`, gradient `w·((pw·t + 1 - t)·σ(x) - pw·t)`.
    ///
    /// `pos_weight` holds one value per column, `weight` one per element, both f32; the
    /// target is of the logits' type (f32, f16 or bf16; the math is f32). The loss is f32,
    /// shaped like the logits for [`LossReduction::None`], else `1 × 1` (`mean` over all
    /// elements); the gradient is of the logits' type. [`Grad::InPlace`] is not offered here
    /// (an error).
    ///
    /// ```no_run
    /// use xent::{BceOptions, Gpu, Grad, Tensor};
    /// let gpu = Gpu::new()?;
    /// let x = Tensor::from_slice(&gpu, &[2.0, -1.0, 0.5, 0.0], 2, 2)?;
    /// let t = Tensor::from_slice(&gpu, &[1.0, 0.0, 0.0, 1.0], 2, 2)?;
    /// let out = x.bce_with_logits(&t, None, None, &BceOptions::default(), Grad::New)?;
    /// println!("{:?}", out.loss.to_vec()?);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn bce_with_logits(
        &self,
        target: &Tensor,
        pos_weight: Option<&Tensor>,
        weight: Option<&Tensor>,
        opts: &BceOptions,
        grad: Grad,
    ) -> Result<Loss<Tensor>> {
        grad.refuse_in_place("binary cross-entropies")?;
        self.loss_with(
            (self.bce_loss_shape(opts), Tensor::output),
            grad,
            |ws, enc, out| {
                self.record_bce_with_logits(ws, enc, target, (pos_weight, weight), opts, out)
            },
        )
    }

    /// The loss's shape: like the logits, or one value.
    pub(crate) fn bce_loss_shape(&self, opts: &BceOptions) -> (usize, usize) {
        match opts.reduction {
            LossReduction::None => (self.rows(), self.cols()),
            LossReduction::Sum | LossReduction::Mean => (1, 1),
        }
    }

    /// The target (this shape), `pos_weight` (one per column) and `weight` (this shape), all
    /// on this tensor's device.
    fn check_bce_inputs(
        &self,
        target: &Tensor,
        pos_weight: Option<&Tensor>,
        weight: Option<&Tensor>,
    ) -> Result<()> {
        for t in [Some(target), pos_weight, weight].into_iter().flatten() {
            self.gpu().same(t.gpu())?;
        }
        self.check_dtype(target, "the target")?;
        for t in [pos_weight, weight].into_iter().flatten() {
            t.require_f32("binary cross-entropy's weights")?;
        }
        check_len("target", Some(target.len()), self.len())?;
        check_len("pos_weight", pos_weight.map(Tensor::len), self.cols())?;
        check_len("weight", weight.map(Tensor::len), self.len())
    }

    /// Records [`Tensor::bce_with_logits`] (with `pos_weight` and `weight`) into the caller's
    /// encoder, writing into `out` ([`GradOut::InPlace`] is an error). Nothing is submitted,
    /// read back or, with a warm `ws`, allocated.
    pub fn record_bce_with_logits(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        target: &Tensor,
        (pos_weight, weight): (Option<&Tensor>, Option<&Tensor>),
        opts: &BceOptions,
        out: LossOut<'_>,
    ) -> Result<()> {
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        self.check_bce_inputs(target, pos_weight, weight)?;
        if let GradOut::InPlace = out.grad {
            return Err(Error::InvalidArgument(
                "binary cross-entropy has no in-place gradient; use GradOut::Into".into(),
            ));
        }
        self.check_loss_out(&out, self.bce_loss_shape(opts))?;
        let cols = self.cols();
        let n = self.len();
        let per_element = opts.reduction == LossReduction::None;
        let scale = if opts.reduction == LossReduction::Mean {
            1.0 / n as f32
        } else {
            1.0
        };
        let grad_out = match out.grad {
            GradOut::Into(g) => Some(g),
            GradOut::None | GradOut::InPlace => None,
        };
        let loss = out.loss;
        if self.dtype().is_half() {
            let outputs = (loss, grad_out, per_element, scale);
            return self.record_bce_rows(ws, enc, target, (pos_weight, weight), outputs);
        }
        gpu.scoped("binary cross-entropy", || {
            let mut pass = begin_pass(enc, "xent binary cross-entropy");
            let width = VecWidth::for_len(cols);
            let w = width.lanes();
            let kernel = gpu.kernel(&BCE, width)?;
            let per_group = WORKGROUP_SIZE as usize * ITEMS * w;
            let per = gpu.items_per_dispatch(n, 4, w)?;
            let (chunks, groups) = partial_chunks(n, per, per_group);
            let partial = ws.scratch("xent partial losses", groups as u64 * 4);
            let no_grad = ws.scratch("xent no gradient", 16);
            let dummy = &gpu.inner.dummy;
            let pos_weight = pos_weight.map(Tensor::placed);
            for Chunk {
                start,
                count,
                groups: chunk_groups,
                first_partial,
            } in chunks
            {
                let window = |b| gpu.window(b, start as u64 * 4, count as u64 * 4).0;
                let (xb, off) = gpu.window(self.region(), start as u64 * 4, count as u64 * 4);
                let params = BceParams {
                    n: count as u32,
                    cols: cols as u32,
                    off,
                    col0: (start % cols) as u32,
                    p_off: first_partial as u32,
                    has_weight: u32::from(weight.is_some()),
                    has_pos_weight: u32::from(pos_weight.is_some()),
                    grad: u32::from(grad_out.is_some()),
                    per_element: u32::from(per_element),
                    scale,
                    w_off: 0,
                    l_off: 0,
                };
                let bindings = [
                    (1, xb),
                    (
                        2,
                        grad_out
                            .as_ref()
                            .map_or(no_grad.as_entire_buffer_binding(), |g| window(g.region())),
                    ),
                    (3, window(target.region())),
                    (
                        4,
                        weight.map_or(dummy.as_entire_buffer_binding(), |t| window(t.region())),
                    ),
                    (
                        5,
                        pos_weight
                            .as_ref()
                            .map_or(dummy.as_entire_buffer_binding(), Placed::binding),
                    ),
                    (
                        6,
                        if per_element {
                            window(loss.region())
                        } else {
                            partial.as_entire_buffer_binding()
                        },
                    ),
                ];
                // The ITEMS loop and, per item, store_loss's loop over the vector.
                let iters = ITEMS * (1 + w) + REDUCE_ITERS;
                ws.dispatch(&mut pass, &kernel, &params, &bindings, chunk_groups, iters)?;
            }
            if !per_element {
                record_total(ws, &mut pass, (&partial, groups), loss, scale)?;
            }
            Ok(())
        })
    }
}

impl Tensor {
    /// [`Tensor::record_bce_with_logits`] on half-precision logits and target (`bce_rows`):
    /// chunks of whole rows, so that each vector lies in one row and its padding is masked.
    fn record_bce_rows(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        target: &Tensor,
        (pos_weight, weight): (Option<&Tensor>, Option<&Tensor>),
        (loss, grad_out, per_element, scale): (&Tensor, Option<&Tensor>, bool, f32),
    ) -> Result<()> {
        let gpu = self.gpu();
        let (rows, cols) = (self.rows(), self.cols());
        gpu.scoped("binary cross-entropy", || {
            let mut pass = begin_pass(enc, "xent binary cross-entropy");
            let width = VecWidth::for_rows(Shader::Bce, cols, self.dtype());
            let kernel = gpu.kernel(&BCE_ROWS, width)?;
            let rv = width.vecs(cols);
            let row_bytes = self.row_bytes();
            let elem = self.dtype().bytes() as u64;
            // Whole rows per dispatch, their half rows and their f32 rows within one binding;
            // the chunks count the rows' vectors.
            let per = gpu.items_per_dispatch(rows, row_bytes.max(cols as u64 * 4), 1)?;
            let per_group = WORKGROUP_SIZE as usize * ITEMS;
            let (chunks, partials) = partial_chunks(rows * rv, per * rv, per_group);
            let partial = ws.scratch("xent partial losses", partials as u64 * 4);
            let no_grad = ws.scratch("xent no gradient", 16);
            let dummy = &gpu.inner.dummy;
            let pos_weight = pos_weight.map(Tensor::placed);
            for Chunk {
                start,
                count,
                groups,
                first_partial,
            } in chunks
            {
                let (r0, n) = (start / rv, count / rv);
                let half = |b| {
                    let span = (r0 as u64 * row_bytes, n as u64 * row_bytes);
                    gpu.window_of(b, span, elem)
                };
                let dense = |b| gpu.window(b, (r0 * cols) as u64 * 4, (n * cols) as u64 * 4);
                let (xb, off) = half(self.region());
                let (wb, w_off) = match weight {
                    Some(w) => dense(w.region()),
                    None => (dummy.as_entire_buffer_binding(), 0),
                };
                let (lb, l_off) = if per_element {
                    dense(loss.region())
                } else {
                    (partial.as_entire_buffer_binding(), 0)
                };
                let params = BceParams {
                    n: n as u32,
                    cols: cols as u32,
                    off,
                    col0: 0,
                    p_off: first_partial as u32,
                    has_weight: u32::from(weight.is_some()),
                    has_pos_weight: u32::from(pos_weight.is_some()),
                    grad: u32::from(grad_out.is_some()),
                    per_element: u32::from(per_element),
                    scale,
                    w_off,
                    l_off,
                };
                let bindings = [
                    (1, xb),
                    (
                        2,
                        grad_out.map_or(no_grad.as_entire_buffer_binding(), |g| half(g.region()).0),
                    ),
                    (3, half(target.region()).0),
                    (4, wb),
                    (
                        5,
                        pos_weight
                            .as_ref()
                            .map_or(dummy.as_entire_buffer_binding(), Placed::binding),
                    ),
                    (6, lb),
                ];
                // The ITEMS loop and, per item, the loop over its four losses.
                let iters = ITEMS * 5 + REDUCE_ITERS;
                ws.dispatch(&mut pass, &kernel, &params, &bindings, groups, iters)?;
            }
            if !per_element {
                record_total(ws, &mut pass, (&partial, partials), loss, scale)?;
            }
            Ok(())
        })
    }
}

/// The reduced loss: the `count` workgroup partials summed into `loss`, times `scale`.
fn record_total(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    (partial, count): (&wgpu::Buffer, usize),
    loss: &Tensor,
    scale: f32,
) -> Result<()> {
    let to = SumTo {
        dst: loss.buffer(),
        index: loss.first_elem(),
        scale,
        divide_by: None,
    };
    ws.record_sum(pass, partial, 0, count, &to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::wgsl_params;

    #[test]
    fn params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Bce);
        assert_eq!(size, std::mem::size_of::<BceParams>());
        assert_eq!(
            names,
            [
                "n",
                "cols",
                "off",
                "col0",
                "p_off",
                "has_weight",
                "has_pos_weight",
                "grad",
                "per_element",
                "scale",
                "w_off",
                "l_off"
            ]
        );
    }
}
