//! Host side of shaders/info.wgsl: entropy, self-information, cross-entropy, KL and JS
//! divergences (with the gradient w.r.t. Q's logits) and joint-table statistics.

use crate::gpu::context::{Placed, Region};
use crate::gpu::kernels::{Consts, KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE};
use crate::gpu::reduce::SumTo;
use crate::gpu::rows::{RowLaunch, RowLoops};
use crate::gpu::tensor::{GradOut, LossOut, Tensor};
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{DivReduction, Divergence, Form, Grad, InfoOptions, Loss};
use crate::{DType, Error, Result};

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
    grad: u32,
    inv_t: f32,
    inv_ln_b: f32,
    scale: f32,
    segs: u32,
    span: u32,
    phase: u32,
    /// Softcap c (0: none).
    softcap: f32,
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
        (10, Slot::ReadWrite),
    ],
};

/// `info_rows`: (m, d) of each side, the value and the gradient passes, three reductions;
/// split rows run (m, d), the value's sums, then the value and the gradient.
const INFO_LOOPS: RowLoops = RowLoops {
    passes: 4,
    reductions: 3,
    phases: 3,
    gathers: 2,
};

const INFO_LOGITS_ROWS: KernelDef = KernelDef {
    entry: "info_logits_rows",
    ..INFO_ROWS
};

/// `info_logits_rows`: both pairs and the value's sum in one pass, the gradient's pass,
/// three reductions; split rows run the first pass, then the value and the gradient.
const INFO_LOGITS_LOOPS: RowLoops = RowLoops {
    passes: 2,
    reductions: 3,
    phases: 2,
    // The pairs, then the sum moved to the row's maxima: two loops over the segments.
    gathers: 2,
};

/// `info_rows` for self-information: (m, d) and the writing pass; split rows run them as
/// two phases.
const SELF_INFO_LOOPS: RowLoops = RowLoops {
    passes: 2,
    reductions: 1,
    phases: 2,
    gathers: 1,
};

/// Twin of `Params` in shaders/joint.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct JointParams {
    count: u32,
    len: u32,
    keep: u32,
    t_stride: u32,
    l_stride: u32,
    k_stride: u32,
    in_off: u32,
    out_off: u32,
    t_off: u32,
    mode: u32,
    inv_ln_b: f32,
    _pad: u32,
}

/// Terms one `axis_sum` invocation adds (its one loop). Twin: `CHUNK` in shaders/joint.wgsl.
const JOINT_CHUNK: usize = 64;

const AXIS_SUM: KernelDef = KernelDef {
    shader: Shader::Joint,
    entry: "axis_sum",
    bindings: &[
        (0, Slot::Uniform),
        (1, Slot::Read),
        (2, Slot::ReadWrite),
        (3, Slot::Read),
    ],
};

const JOINT_FINISH: KernelDef = KernelDef {
    shader: Shader::Joint,
    entry: "joint_finish",
    bindings: &[(0, Slot::Uniform), (1, Slot::Read), (2, Slot::ReadWrite)],
};

/// A view of `tables` blocks of an f32 buffer as `[tables, len, keep]` with strides, for
/// `axis_sum` to sum over `len`.
#[derive(Clone, Copy)]
struct AxisView {
    len: usize,
    keep: usize,
    t_stride: usize,
    l_stride: usize,
    k_stride: usize,
}

impl AxisView {
    /// `[tables, len, keep]` stored compactly (keep fastest).
    fn compact(len: usize, keep: usize) -> Self {
        Self {
            len,
            keep,
            t_stride: len * keep,
            l_stride: keep,
            k_stride: 1,
        }
    }
}

/// What `axis_sum` adds: the values, or their entropy terms `-p log p` with `p = v / T`
/// (the table's total, element `t_off + b` of the buffer).
#[derive(Clone, Copy)]
enum Terms<'a> {
    Values,
    Entropy(&'a wgpu::Buffer),
}

/// What `info_rows` computes: its `KIND` constant. Twin: the `KIND_*` constants in
/// shaders/info.wgsl.
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
    rows: Option<Region<'a>>,
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
        let out = Tensor::output(self.gpu(), (self.rows(), 1), DType::F32)?;
        self.submit_with("entropy", |ws, enc| {
            self.record_entropy(ws, enc, opts, &out)
        })?;
        Ok(out)
    }

    /// Records [`Tensor::entropy`] into `out` (`rows × 1`) in the caller's encoder.
    pub fn record_entropy(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        opts: &InfoOptions,
        out: &Tensor,
    ) -> Result<()> {
        self.record_one_sided(ws, enc, (Kind::Entropy, opts), out)
    }

    /// Elementwise self-information `-log_b P` (`+inf` where `P = 0`), same shape and type.
    /// From logits, `P` is the row's softmax.
    pub fn self_information(&self, opts: &InfoOptions) -> Result<Tensor> {
        let out = self.output_like()?;
        self.submit_with("self-information", |ws, enc| {
            self.record_self_information(ws, enc, opts, &out)
        })?;
        Ok(out)
    }

    /// Records [`Tensor::self_information`] into `out` (same shape and type) in the caller's
    /// encoder.
    pub fn record_self_information(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        opts: &InfoOptions,
        out: &Tensor,
    ) -> Result<()> {
        self.record_one_sided(ws, enc, (Kind::SelfInformation, opts), out)
    }

    /// Entropy (one value per row) or self-information (one per element) into `out`.
    fn record_one_sided(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        (kind, opts): (Kind, &InfoOptions),
        out: &Tensor,
    ) -> Result<()> {
        opts.validate()?;
        let outputs = if kind == Kind::SelfInformation {
            self.check_out(out, (self.rows(), self.cols()), self.dtype())?;
            Outputs {
                rows: None,
                elems: Some(out),
            }
        } else {
            self.check_out(out, (self.rows(), 1), DType::F32)?;
            Outputs {
                rows: Some(out.region()),
                elems: None,
            }
        };
        self.record_info(
            ws,
            &mut begin_pass(enc, "xent information"),
            None,
            (kind, opts),
            &outputs,
            1.0,
        )
    }

    /// A divergence between these rows `P` and the rows `Q` (same shape, type and form), per
    /// row and reduced by `opts.reduction`; with [`Grad::New`] also the gradient w.r.t. Q's
    /// logits (of their type)
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
        grad.refuse_in_place("divergences")?;
        self.loss_with(
            (self.divergence_shape(opts), Tensor::output),
            grad,
            |ws, enc, out| self.record_divergence(ws, enc, q, kind, opts, out),
        )
    }

    /// The divergence's shape: one value per row, or one.
    pub(crate) fn divergence_shape(&self, opts: &InfoOptions) -> (usize, usize) {
        match opts.reduction {
            DivReduction::None => (self.rows(), 1),
            _ => (1, 1),
        }
    }

    /// Records [`Tensor::divergence`] into `out` in the caller's encoder: the value (`rows ×
    /// 1`, or `1 × 1` when reduced) and, with [`GradOut::Into`], the gradient w.r.t. Q's
    /// logits ([`GradOut::InPlace`] is an error).
    pub fn record_divergence(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        q: &Tensor,
        kind: Divergence,
        opts: &InfoOptions,
        out: LossOut<'_>,
    ) -> Result<()> {
        opts.validate()?;
        let gpu = self.gpu();
        gpu.same(q.gpu())?;
        self.check_dtype(q, "Q")?;
        let (rows, cols) = (self.rows(), self.cols());
        if (q.rows(), q.cols()) != (rows, cols) {
            return Err(Error::Shape(format!(
                "P is {rows}×{cols}, Q is {}×{}",
                q.rows(),
                q.cols()
            )));
        }
        let grad = match out.grad {
            GradOut::None => None,
            GradOut::Into(g) if opts.form == Form::Logits => Some(g),
            GradOut::Into(_) => {
                return Err(Error::InvalidArgument(
                    "the gradient is w.r.t. Q's logits: give the inputs as logits".into(),
                ));
            }
            GradOut::InPlace => {
                return Err(Error::InvalidArgument(
                    "divergences have no in-place gradient; use GradOut::Into".into(),
                ));
            }
        };
        self.check_loss_out(&out, self.divergence_shape(opts))?;
        let scale = opts.divisor(rows, cols).map_or(1.0, |d| (1.0 / d) as f32);
        let kind = match kind {
            Divergence::CrossEntropy => Kind::CrossEntropy,
            Divergence::Kl => Kind::Kl,
            Divergence::Js => Kind::Js,
        };
        let reduced = opts.reduction != DivReduction::None;
        let per_row = if reduced {
            gpu.scoped("divergence scratch", || {
                Ok(Placed::whole(
                    &ws.scratch("xent per-row divergences", rows as u64 * 4),
                ))
            })?
        } else {
            out.loss.placed()
        };
        let outputs = Outputs {
            rows: Some(per_row.region()),
            elems: grad,
        };
        let mut pass = begin_pass(enc, "xent divergence");
        self.record_info(ws, &mut pass, Some(q), (kind, opts), &outputs, scale)?;
        if reduced {
            gpu.scoped("reducing a divergence", || {
                let to = SumTo {
                    dst: out.loss.buffer(),
                    index: out.loss.first_elem(),
                    scale,
                    divide_by: None,
                };
                ws.record_sum(&mut pass, &per_row.buffer, 0, rows, &to)
            })?;
        }
        Ok(())
    }

    /// Statistics of joint tables: these `B` rows each hold one `X × Y` table of counts or
    /// probabilities (row-major, `cols = X·Y`), normalised per table on the GPU. Returns
    /// `B × 5`: `H(X), H(Y), H(X,Y), H(Y|X) = H(X,Y) - H(X), I(X;Y) = H(X) + H(Y) - H(X,Y)`, in
    /// `opts.base` (`opts.form` must be probabilities).
    pub fn joint_entropies(&self, x: usize, opts: &InfoOptions) -> Result<Tensor> {
        let out = Tensor::output(self.gpu(), (self.rows(), 5), DType::F32)?;
        self.submit_with("joint entropies", |ws, enc| {
            self.record_joint_entropies(ws, enc, x, opts, &out)
        })?;
        Ok(out)
    }

    /// Records [`Tensor::joint_entropies`] into `out` (`B × 5`) in the caller's encoder.
    pub fn record_joint_entropies(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        x: usize,
        opts: &InfoOptions,
        out: &Tensor,
    ) -> Result<()> {
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
        self.require_f32("joint tables")?;
        self.check_out(out, (self.rows(), 5), DType::F32)?;
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        let y = cols / x;
        let tables = self.rows();
        gpu.scoped("recording joint entropies", || {
            let mut pass = begin_pass(enc, "xent joint entropies");
            let table_bytes = cols as u64 * 4;
            let per = gpu.items_per_dispatch(tables, table_bytes, 1)?;
            for t0 in (0..tables).step_by(per) {
                let n = per.min(tables - t0);
                let (j, j_off) = gpu.window(
                    self.region(),
                    t0 as u64 * table_bytes,
                    n as u64 * table_bytes,
                );
                let px = ws.scratch("xent joint p(x)", (n * x) as u64 * 4);
                let py = ws.scratch("xent joint p(y)", (n * y) as u64 * 4);
                let total = ws.scratch("xent joint totals", n as u64 * 4);
                // H(X,Y), H(X) and H(Y) of each table, n apart.
                let h = ws.scratch("xent joint entropies", 3 * n as u64 * 4);
                let cells = AxisView::compact(cols, 1);
                let by_row = AxisView {
                    len: y,
                    keep: x,
                    t_stride: cols,
                    l_stride: 1,
                    k_stride: y,
                };
                let by_col = AxisView {
                    len: x,
                    keep: y,
                    t_stride: cols,
                    l_stride: y,
                    k_stride: 1,
                };
                let mut sum = |src: (wgpu::BufferBinding<'_>, u32), view, terms, dst, at| {
                    record_axis_sum(ws, &mut pass, n, src, (view, terms), (dst, at))
                };
                sum((j.clone(), j_off), by_row, Terms::Values, &px, 0)?;
                sum((j.clone(), j_off), by_col, Terms::Values, &py, 0)?;
                sum(
                    (px.as_entire_buffer_binding(), 0),
                    AxisView::compact(x, 1),
                    Terms::Values,
                    &total,
                    0,
                )?;
                sum((j, j_off), cells, Terms::Entropy(&total), &h, 0)?;
                sum(
                    (px.as_entire_buffer_binding(), 0),
                    AxisView::compact(x, 1),
                    Terms::Entropy(&total),
                    &h,
                    n,
                )?;
                sum(
                    (py.as_entire_buffer_binding(), 0),
                    AxisView::compact(y, 1),
                    Terms::Entropy(&total),
                    &h,
                    2 * n,
                )?;
                let finish = gpu.kernel(&JOINT_FINISH, VecWidth::One)?;
                let (ob, out_off) = gpu.window(out.region(), t0 as u64 * 20, n as u64 * 20);
                let params = JointParams {
                    count: n as u32,
                    out_off,
                    inv_ln_b: opts.inv_ln_base() as f32,
                    ..JointParams::default()
                };
                let groups = n.div_ceil(WORKGROUP_SIZE as usize);
                let buffers = [(1, h.as_entire_buffer_binding()), (2, ob)];
                ws.dispatch(&mut pass, &finish, &params, &buffers, groups, 0)?;
            }
            Ok(())
        })
    }

    /// Records `info_rows` over all rows (in chunks under the binding limit); the gradient
    /// is written when `out.elems` is given for a two-sided kind.
    fn record_info(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        q: Option<&Tensor>,
        (kind, opts): (Kind, &InfoOptions),
        out: &Outputs<'_>,
        scale: f32,
    ) -> Result<()> {
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        let grad = q.is_some() && out.elems.is_some();
        gpu.scoped("recording information-theory rows", || {
            let cols = self.cols();
            let (def, loops) = match kind {
                Kind::SelfInformation => (&INFO_ROWS, SELF_INFO_LOOPS),
                Kind::Entropy | Kind::CrossEntropy | Kind::Kl if opts.form == Form::Logits => {
                    (&INFO_LOGITS_ROWS, INFO_LOGITS_LOOPS)
                }
                _ => (&INFO_ROWS, INFO_LOOPS),
            };
            // The op and the form decide branches in every vector's work: fixed per pipeline.
            let consts = Consts::NONE
                .with("KIND", kind as u32)
                .with("FORM", form_code(opts.form))
                .softcap(opts.softcap.is_some());
            let launch = RowLaunch::new(ws, (def, consts), loops, self)?;
            let plan = launch.plan;
            // Bound where an output is absent (two, since both are written to).
            let no_elems = ws.scratch("xent no elementwise output", 16);
            let no_rows = ws.scratch("xent no per-row output", 16);
            for (r0, n) in launch.chunks() {
                let rows_window = |b| launch.window(b, (r0, n));
                let (pb, in_off) = rows_window(self.region());
                let (qb, q_off) = match q {
                    Some(q) => rows_window(q.region()),
                    None => (gpu.inner.dummy.as_entire_buffer_binding(), 0),
                };
                let (eb, out_off) = match out.elems {
                    Some(e) => rows_window(e.region()),
                    None => (no_elems.as_entire_buffer_binding(), 0),
                };
                let (lb, l_off) = match out.rows {
                    Some(t) => gpu.window(t, r0 as u64 * 4, n as u64 * 4),
                    None => (no_rows.as_entire_buffer_binding(), 0),
                };
                let params = |phase| InfoParams {
                    rows: n as u32,
                    cols: cols as u32,
                    in_off,
                    out_off,
                    g: plan.g,
                    q_off,
                    l_off,
                    grad: u32::from(grad),
                    inv_t: 1.0 / opts.temperature,
                    inv_ln_b: opts.inv_ln_base() as f32,
                    scale,
                    segs: plan.segs,
                    span: plan.span,
                    phase,
                    softcap: opts.softcap.unwrap_or(0.0),
                };
                let buffers = [(1, pb), (2, eb), (5, lb), (9, qb)];
                launch.record(ws, pass, n, params, &buffers)?;
            }
            Ok(())
        })
    }
}

/// Records the sums over `view.len` of `tables` blocks of `src` (a binding and the element
/// offset of the first block) into `dst` from element `at`, `keep` per block: levels of
/// [`JOINT_CHUNK`] terms per invocation until one term per output is left, each level a
/// dispatch into one of two scratch buffers taken in turn (the last into `dst`). Call inside
/// `Gpu::scoped`.
fn record_axis_sum(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    tables: usize,
    src: (wgpu::BufferBinding<'_>, u32),
    (view, terms): (AxisView, Terms<'_>),
    (dst, at): (&wgpu::Buffer, usize),
) -> Result<()> {
    let gpu = ws.gpu().clone();
    let kernel = gpu.kernel(&AXIS_SUM, VecWidth::One)?;
    let (mut view, mut terms) = (view, terms);
    let mut prev: Option<wgpu::Buffer> = None;
    for level in 0.. {
        let (src, in_off) = match &prev {
            Some(b) => (b.as_entire_buffer_binding(), 0),
            None => src.clone(),
        };
        let chunks = view.len.div_ceil(JOINT_CHUNK);
        let count = tables * chunks * view.keep;
        let purpose = if level % 2 == 0 {
            "xent joint sums (even levels)"
        } else {
            "xent joint sums (odd levels)"
        };
        let level = (chunks > 1).then(|| ws.scratch(purpose, count as u64 * 4));
        let (out, out_off) = match &level {
            Some(b) => (b.as_entire_buffer_binding(), 0),
            None => gpu.window(Region::whole(dst), at as u64 * 4, count as u64 * 4),
        };
        // Twin: MODE_VALUES, MODE_ENTROPY in shaders/joint.wgsl.
        let (tot, mode) = match terms {
            Terms::Values => (gpu.inner.dummy.as_entire_buffer_binding(), 0),
            Terms::Entropy(t) => (t.as_entire_buffer_binding(), 1),
        };
        let params = JointParams {
            count: u32::try_from(count)
                .map_err(|_| Error::Shape(format!("{count} partial sums overflow u32")))?,
            len: view.len as u32,
            keep: view.keep as u32,
            t_stride: view.t_stride as u32,
            l_stride: view.l_stride as u32,
            k_stride: view.k_stride as u32,
            in_off,
            out_off,
            mode,
            ..JointParams::default()
        };
        let groups = count.div_ceil(WORKGROUP_SIZE as usize);
        let buffers = [(1, src), (2, out), (3, tot)];
        ws.dispatch(pass, &kernel, &params, &buffers, groups, JOINT_CHUNK)?;
        if level.is_none() {
            return Ok(());
        }
        prev = level;
        view = AxisView::compact(chunks, view.keep);
        terms = Terms::Values;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::wgsl_params;

    #[test]
    fn joint_params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Joint);
        assert_eq!(size, std::mem::size_of::<JointParams>());
        assert_eq!(
            names,
            [
                "count", "len", "keep", "t_stride", "l_stride", "k_stride", "in_off", "out_off",
                "t_off", "mode", "inv_ln_b", "_pad"
            ]
        );
    }

    #[test]
    fn params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Info);
        assert_eq!(size, std::mem::size_of::<InfoParams>());
        assert_eq!(
            names,
            [
                "rows", "cols", "in_off", "out_off", "g", "q_off", "l_off", "grad", "inv_t",
                "inv_ln_b", "scale", "segs", "span", "phase", "softcap"
            ]
        );
    }
}
