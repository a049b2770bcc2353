//! Host side of shaders/info.wgsl: entropy, self-information, cross-entropy, KL and JS
//! divergences (with the gradient w.r.t. Q's logits) and joint-table statistics.

use crate::gpu::kernels::{KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE};
use crate::gpu::reduce::SumTo;
use crate::gpu::softmax::lanes_per_row;
use crate::gpu::tensor::Tensor;
use crate::options::{DivReduction, Divergence, Form, Grad, InfoOptions, Loss};
use crate::{Error, Result};

/// Twin of `Params` in shaders/info.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct InfoParams {
    rows: u32,
    cols: u32,
    in_off: u32,
    out_off: u32,
    g: u32,
    q_off: u32,
    l_off: u32,
    kind: u32,
    from_p: u32,
    from_q: u32,
    grad: u32,
    x_len: u32,
    inv_t: f32,
    inv_ln_b: f32,
    scale: f32,
    _pad: u32,
}

const INFO_ROWS: KernelDef = KernelDef {
    shader: Shader::Info,
    entry: "info_rows",
    bindings: &[
        (0, Slot::Uniform),
        (1, Slot::Read),
        (2, Slot::ReadWrite),
        (5, Slot::ReadWrite),
        (9, Slot::Read),
    ],
};

const JOINT: KernelDef = KernelDef {
    shader: Shader::Info,
    entry: "joint",
    bindings: &[(0, Slot::Uniform), (1, Slot::Read), (5, Slot::ReadWrite)],
};

/// What `info_rows` computes. Twin: `P.kind` in the shader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entropy = 0,
    CrossEntropy = 1,
    Kl = 2,
    Js = 3,
    SelfInformation = 4,
}

fn form_code(form: Form) -> u32 {
    match form {
        Form::Probs => 0,
        Form::LogProbs => 1,
        Form::Logits => 2,
    }
}

/// The per-row launch's outputs: one value per row (all but self-information), and one per
/// element (the gradient, or self-information).
struct Outputs<'a> {
    rows: Option<&'a Tensor>,
    elems: Option<&'a Tensor>,
}

impl Tensor {
    /// Row-wise entropy `H(P) = -Σ P log_b P` (`0·log 0 = 0`) of these rows, given as
    /// `opts.form`; one value per row (`rows × 1`).
    ///
    /// ```no_run
    /// use xent::{Gpu, InfoOptions, Tensor};
    /// let gpu = Gpu::new()?;
    /// let p = Tensor::from_slice(&gpu, &[0.8, 0.2, 0.5, 0.5], 2, 2)?;
    /// let bits = p.entropy(&InfoOptions::default().with_base(2.0))?.to_vec()?;
    /// assert!((bits[1] - 1.0).abs() < 1e-6);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn entropy(&self, opts: &InfoOptions) -> Result<Tensor> {
        opts.validate()?;
        let out = Tensor::output(self.gpu(), self.rows(), 1)?;
        let outputs = Outputs {
            rows: Some(&out),
            elems: None,
        };
        self.record_info(None, Kind::Entropy, opts, false, &outputs, 1.0)?;
        Ok(out)
    }

    /// Elementwise self-information `-log_b P` (`+inf` where `P = 0`), same shape. From
    /// logits, `P` is the row's softmax.
    pub fn self_information(&self, opts: &InfoOptions) -> Result<Tensor> {
        opts.validate()?;
        let out = Tensor::output(self.gpu(), self.rows(), self.cols())?;
        let outputs = Outputs {
            rows: None,
            elems: Some(&out),
        };
        self.record_info(None, Kind::SelfInformation, opts, false, &outputs, 1.0)?;
        Ok(out)
    }

    /// A divergence between these rows `P` and the rows `Q` (same shape, same form), per row
    /// and reduced by `opts.reduction`; with [`Grad::New`] also the gradient w.r.t. Q's logits
    /// (`opts.form` must be [`Form::Logits`]): distillation with teacher `P` and student `Q`,
    /// at `opts.temperature` on both sides. The gradient is that of the value as defined (no
    /// `T²` factor; multiply it in for Hinton-style distillation).
    ///
    /// ```no_run
    /// use xent::{Divergence, Gpu, Grad, InfoOptions, Tensor};
    /// let gpu = Gpu::new()?;
    /// let p = Tensor::from_slice(&gpu, &[0.8, 0.2], 1, 2)?;
    /// let q = Tensor::from_slice(&gpu, &[0.7, 0.3], 1, 2)?;
    /// let kl = p.divergence(&q, Divergence::Kl, &InfoOptions::default(), Grad::None)?;
    /// println!("D(P‖Q) = {:?} nats", kl.loss.to_vec()?);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn divergence(
        &self,
        q: &Tensor,
        kind: Divergence,
        opts: &InfoOptions,
        grad: Grad,
    ) -> Result<Loss<Tensor>> {
        opts.validate()?;
        let gpu = self.gpu();
        gpu.same(q.gpu())?;
        let (rows, cols) = (self.rows(), self.cols());
        if (q.rows(), q.cols()) != (rows, cols) {
            return Err(Error::Shape(format!(
                "P is {rows}×{cols}, Q is {}×{}",
                q.rows(),
                q.cols()
            )));
        }
        let want_grad = match grad {
            Grad::None => false,
            Grad::New if opts.form == Form::Logits => true,
            Grad::New => {
                return Err(Error::InvalidArgument(
                    "the gradient is w.r.t. Q's logits: give the inputs as logits".into(),
                ));
            }
            Grad::InPlace => {
                return Err(Error::InvalidArgument(
                    "divergences have no in-place gradient; use Grad::New".into(),
                ));
            }
        };
        let per_row = Tensor::output(gpu, rows, 1)?;
        let grad_out = if want_grad {
            Some(Tensor::output(gpu, rows, cols)?)
        } else {
            None
        };
        let divisor = opts.divisor(rows, cols);
        let scale = divisor.map_or(1.0, |d| (1.0 / d) as f32);
        let kind = match kind {
            Divergence::CrossEntropy => Kind::CrossEntropy,
            Divergence::Kl => Kind::Kl,
            Divergence::Js => Kind::Js,
        };
        let outputs = Outputs {
            rows: Some(&per_row),
            elems: grad_out.as_ref(),
        };
        self.record_info(Some(q), kind, opts, want_grad, &outputs, scale)?;
        let loss = if opts.reduction == DivReduction::None {
            per_row
        } else {
            let total = Tensor::output(gpu, 1, 1)?;
            gpu.scoped("reducing a divergence", || {
                let mut enc = gpu.encoder();
                let to = SumTo {
                    dst: total.buffer(),
                    index: 0,
                    scale,
                    divide_by: None,
                };
                gpu.record_sum(&mut enc, per_row.buffer(), 0, rows, &to)?;
                gpu.inner.queue.submit([enc.finish()]);
                Ok(())
            })?;
            total
        };
        Ok(Loss {
            loss,
            grad: grad_out,
        })
    }

    /// Statistics of joint tables: these `B` rows each hold one `X × Y` table of counts or
    /// probabilities (row-major, `cols = X·Y`), normalised per table on the GPU. Returns
    /// `B × 5`: `H(X), H(Y), H(X,Y), H(Y|X) = H(X,Y) - H(X), I(X;Y) = H(X) + H(Y) - H(X,Y)`, in
    /// `opts.base` (`opts.form` must be probabilities).
    pub fn joint_entropies(&self, x: usize, opts: &InfoOptions) -> Result<Tensor> {
        opts.validate()?;
        if opts.form != Form::Probs {
            return Err(Error::InvalidArgument(
                "joint tables hold counts or probabilities".into(),
            ));
        }
        let cols = self.cols();
        if x == 0 || !cols.is_multiple_of(x) {
            return Err(Error::Shape(format!(
                "tables of {cols} cells are not X × Y with X = {x}"
            )));
        }
        let gpu = self.gpu();
        let out = Tensor::output(gpu, self.rows(), 5)?;
        gpu.scoped("joint entropies", || {
            let kernel = gpu.kernel(&JOINT, VecWidth::One)?;
            let table_bytes = cols as u64 * 4;
            let tables = self.rows();
            let g = lanes_per_row(cols, tables, &gpu.inner.tuning);
            let tables_per_group = (WORKGROUP_SIZE / g) as usize;
            let per = gpu.items_per_dispatch(tables, table_bytes, 1)?;
            let mut enc = gpu.encoder();
            for t0 in (0..tables).step_by(per) {
                let n = per.min(tables - t0);
                let (jb, in_off) = gpu.window(
                    self.buffer(),
                    t0 as u64 * table_bytes,
                    n as u64 * table_bytes,
                );
                let (ob, l_off) = gpu.window(out.buffer(), t0 as u64 * 20, n as u64 * 20);
                let params = InfoParams {
                    rows: n as u32,
                    cols: cols as u32,
                    in_off,
                    l_off,
                    g,
                    x_len: x as u32,
                    inv_ln_b: opts.inv_ln_base() as f32,
                    ..InfoParams::default()
                };
                let groups = n.div_ceil(tables_per_group);
                gpu.dispatch(&mut enc, &kernel, &params, &[(1, jb), (5, ob)], groups)?;
            }
            gpu.inner.queue.submit([enc.finish()]);
            Ok(())
        })?;
        Ok(out)
    }

    /// Records and submits `info_rows` over all rows (in chunks under the binding limit).
    fn record_info(
        &self,
        q: Option<&Tensor>,
        kind: Kind,
        opts: &InfoOptions,
        grad: bool,
        out: &Outputs<'_>,
        scale: f32,
    ) -> Result<()> {
        let gpu = self.gpu();
        gpu.scoped("information-theory rows", || {
            let (rows, cols) = (self.rows(), self.cols());
            let width = VecWidth::for_len(cols);
            let kernel = gpu.kernel(&INFO_ROWS, width)?;
            let g = lanes_per_row(cols / width.lanes(), rows, &gpu.inner.tuning);
            let rows_per_group = (WORKGROUP_SIZE / g) as usize;
            let row_bytes = cols as u64 * 4;
            // Bound where an output is absent (two, since both are written to).
            let no_elems = gpu.storage("xent no elementwise output", 16);
            let no_rows = gpu.storage("xent no per-row output", 16);
            let per = gpu.items_per_dispatch(rows, row_bytes, 1)?;
            let mut enc = gpu.encoder();
            for r0 in (0..rows).step_by(per) {
                let n = per.min(rows - r0);
                let rows_window = |b| gpu.window(b, r0 as u64 * row_bytes, n as u64 * row_bytes);
                let (pb, in_off) = rows_window(self.buffer());
                let (qb, q_off) = match q {
                    Some(q) => rows_window(q.buffer()),
                    None => (gpu.inner.dummy.as_entire_buffer_binding(), 0),
                };
                let (eb, out_off) = match out.elems {
                    Some(e) => rows_window(e.buffer()),
                    None => (no_elems.as_entire_buffer_binding(), 0),
                };
                let (lb, l_off) = match out.rows {
                    Some(t) => gpu.window(t.buffer(), r0 as u64 * 4, n as u64 * 4),
                    None => (no_rows.as_entire_buffer_binding(), 0),
                };
                let params = InfoParams {
                    rows: n as u32,
                    cols: cols as u32,
                    in_off,
                    out_off,
                    g,
                    q_off,
                    l_off,
                    kind: kind as u32,
                    from_p: form_code(opts.form),
                    from_q: form_code(opts.form),
                    grad: u32::from(grad),
                    x_len: 0,
                    inv_t: 1.0 / opts.temperature,
                    inv_ln_b: opts.inv_ln_base() as f32,
                    scale,
                    _pad: 0,
                };
                gpu.dispatch(
                    &mut enc,
                    &kernel,
                    &params,
                    &[(1, pb), (2, eb), (5, lb), (9, qb)],
                    n.div_ceil(rows_per_group),
                )?;
            }
            gpu.inner.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::wgsl_params;

    #[test]
    fn params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Info);
        assert_eq!(size, std::mem::size_of::<InfoParams>());
        assert_eq!(
            names,
            [
                "rows", "cols", "in_off", "out_off", "g", "q_off", "l_off", "kind", "from_p",
                "from_q", "grad", "x_len", "inv_t", "inv_ln_b", "scale", "_pad"
            ]
        );
    }
}
