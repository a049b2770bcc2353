//! Host side of shaders/softmax.wgsl: softmax, log-softmax, logsumexp and the elementwise
//! activations on [`Tensor`]s.

use crate::gpu::kernels::{Consts, KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE};
use crate::gpu::rows::{RowLaunch, RowLoops};
use crate::gpu::tensor::Tensor;
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{Activation, SoftmaxKind, SoftmaxOptions};
use crate::{DType, Result};

/// Twin of `Params` in shaders/softmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RowParams {
    rows: u32,
    cols: u32,
    in_off: u32,
    out_off: u32,
    g: u32,
    inv_t: f32,
    segs: u32,
    span: u32,
    phase: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

/// The softmax row kernels' bindings: x read, y written.
const SOFTMAX_BINDINGS: &[(u32, Slot)] = &[
    (0, Slot::Uniform),
    (1, Slot::Read),
    (2, Slot::ReadWrite),
    (10, Slot::ReadWrite),
];

const SOFTMAX_ROWS: KernelDef = KernelDef {
    shader: Shader::Softmax,
    entry: "softmax_rows",
    bindings: SOFTMAX_BINDINGS,
};

/// `softmax_rows` for kept rows (`RowPlan::kept`): each row read once.
const SOFTMAX_ROWS_KEPT: KernelDef = KernelDef {
    shader: Shader::Softmax,
    entry: "softmax_rows_kept",
    bindings: SOFTMAX_BINDINGS,
};

/// `softmax_rows`: the stats pass and the writing pass, one reduction; split rows run
/// (m, d) then the outputs.
const SOFTMAX_LOOPS: RowLoops = RowLoops {
    passes: 2,
    reductions: 1,
    phases: 2,
    gathers: 1,
};

const LOGSUMEXP_ROWS: KernelDef = KernelDef {
    shader: Shader::Softmax,
    entry: "logsumexp_rows",
    bindings: &[
        (0, Slot::Uniform),
        (1, Slot::Read),
        (3, Slot::ReadWrite),
        (10, Slot::ReadWrite),
    ],
};

/// `logsumexp_rows`: one pass, one reduction; split rows run (m, d) then the value.
const LOGSUMEXP_LOOPS: RowLoops = RowLoops {
    passes: 1,
    reductions: 1,
    phases: 2,
    gathers: 1,
};

const ELEMENTWISE: KernelDef = KernelDef {
    shader: Shader::Softmax,
    entry: "elementwise",
    bindings: &[(0, Slot::Uniform), (1, Slot::Read), (2, Slot::ReadWrite)],
};

impl Tensor {
    /// Row-wise `softmax(x / T)` into a new tensor of this one's type. See SPEC.md §1:
    /// max-subtracted, `-inf` entries give 0, a row of all `-inf` gives NaN (as PyTorch).
    pub fn softmax(&self, opts: &SoftmaxOptions) -> Result<Tensor> {
        let out = self.output_like()?;
        self.softmax_into(&out, SoftmaxKind::Softmax, opts)?;
        Ok(out)
    }

    /// Row-wise `log_softmax(x / T) = x / T - logsumexp(x / T)` into a new tensor of this
    /// one's type.
    pub fn log_softmax(&self, opts: &SoftmaxOptions) -> Result<Tensor> {
        let out = self.output_like()?;
        self.softmax_into(&out, SoftmaxKind::LogSoftmax, opts)?;
        Ok(out)
    }

    /// Row-wise `logsumexp(x / T)` into a new `rows × 1` f32 tensor.
    pub fn logsumexp(&self, opts: &SoftmaxOptions) -> Result<Tensor> {
        let out = Tensor::output(self.gpu(), (self.rows(), 1), DType::F32)?;
        self.logsumexp_into(&out, opts)?;
        Ok(out)
    }

    /// Elementwise sigmoid, log-sigmoid or logit into a new tensor of the same shape and
    /// type.
    pub fn activation(&self, act: Activation) -> Result<Tensor> {
        let out = self.output_like()?;
        self.activation_into(&out, act)?;
        Ok(out)
    }

    /// Softmax or log-softmax into `out` (same shape and type, another tensor), submitted
    /// now.
    pub fn softmax_into(
        &self,
        out: &Tensor,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<()> {
        self.submit_with("softmax", |ws, enc| {
            self.record_softmax(ws, enc, out, kind, opts)
        })
    }

    /// Logsumexp into `out` (`rows × 1`, f32), submitted now.
    pub fn logsumexp_into(&self, out: &Tensor, opts: &SoftmaxOptions) -> Result<()> {
        self.submit_with("logsumexp", |ws, enc| {
            self.record_logsumexp(ws, enc, out, opts)
        })
    }

    /// An elementwise activation into `out` (same shape and type, another tensor), submitted
    /// now.
    pub fn activation_into(&self, out: &Tensor, act: Activation) -> Result<()> {
        self.submit_with("activation", |ws, enc| {
            self.record_activation(ws, enc, out, act)
        })
    }

    /// Records softmax or log-softmax into `out` (same shape and type) in the caller's encoder;
    /// nothing is submitted or read back, and with a warm `ws` nothing is allocated.
    pub fn record_softmax(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        out: &Tensor,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<()> {
        opts.validate()?;
        self.check_out(out, (self.rows(), self.cols()), self.dtype())?;
        // Twin: MODE_SOFTMAX, MODE_LOG_SOFTMAX in shaders/softmax.wgsl.
        let mode = match kind {
            SoftmaxKind::Softmax => 0,
            SoftmaxKind::LogSoftmax => 1,
        };
        self.record_rows(
            ws,
            encoder,
            (&SOFTMAX_ROWS, SOFTMAX_LOOPS, Some(&SOFTMAX_ROWS_KEPT)),
            out,
            2,
            mode,
            opts,
        )
    }

    /// Records logsumexp into `out` (`rows × 1`, f32) in the caller's encoder.
    pub fn record_logsumexp(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        out: &Tensor,
        opts: &SoftmaxOptions,
    ) -> Result<()> {
        opts.validate()?;
        self.check_out(out, (self.rows(), 1), DType::F32)?;
        self.record_rows(
            ws,
            encoder,
            (&LOGSUMEXP_ROWS, LOGSUMEXP_LOOPS, None),
            out,
            3,
            0,
            opts,
        )
    }

    /// Records an elementwise activation into `out` (same shape and type) in the caller's
    /// encoder.
    pub fn record_activation(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        out: &Tensor,
        act: Activation,
    ) -> Result<()> {
        // Twin: MODE_SIGMOID, MODE_LOG_SIGMOID, MODE_LOGIT in shaders/softmax.wgsl.
        let mode = match act {
            Activation::Sigmoid => 0,
            Activation::LogSigmoid => 1,
            Activation::Logit => 2,
        };
        self.record_elementwise(ws, encoder, out, mode)
    }

    /// Records a plain copy into `out` (same shape) through the activations' kernel and
    /// launch: the bench's reference for what a kernel can move on this adapter.
    #[cfg(feature = "cli")]
    pub(crate) fn record_copy(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        out: &Tensor,
    ) -> Result<()> {
        // Twin: the default case in shaders/softmax.wgsl's `elementwise`.
        self.record_elementwise(ws, encoder, out, 3)
    }

    fn record_elementwise(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        out: &Tensor,
        mode: u32,
    ) -> Result<()> {
        self.check_out(out, (self.rows(), self.cols()), self.dtype())?;
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        gpu.scoped("recording an activation", || {
            // Every stored element, a half row's padding too: the kernel sees one long row.
            let n = self.rows() * self.stride();
            let dtype = self.dtype();
            let width = match dtype {
                DType::F32 => VecWidth::for_len(n),
                _ => VecWidth::for_rows(Shader::Softmax, n, dtype),
            };
            let w = width.lanes();
            let elem = dtype.bytes() as u64;
            // The mode is a pipeline constant: a switch in every element cost lavapipe's
            // sigmoid half its time (4096 × 4096: 48 against 24–32 ms).
            let kernel = gpu.kernel_with(&ELEMENTWISE, width, Consts::NONE.with("MODE", mode))?;
            let per = gpu.items_per_dispatch(n, elem, w)?;
            let mut pass = begin_pass(encoder, "xent activation");
            for start in (0..n).step_by(per) {
                let count = per.min(n - start);
                let span = (start as u64 * elem, count as u64 * elem);
                let (x, in_off) = gpu.window_of(self.region(), span, elem);
                let (y, out_off) = gpu.window_of(out.region(), span, elem);
                let params = RowParams {
                    rows: 1,
                    cols: count as u32,
                    in_off,
                    out_off,
                    g: 1,
                    inv_t: 1.0,
                    segs: 1,
                    span: 0,
                    phase: 0,
                    _pad0: 0,
                    _pad1: 0,
                    _pad2: 0,
                };
                let groups = (count / w).div_ceil(WORKGROUP_SIZE as usize);
                ws.dispatch(&mut pass, &kernel, &params, &[(1, x), (2, y)], groups, 0)?;
            }
            Ok(())
        })
    }

    /// The row kernels: chunks of rows that fit one binding, one dispatch each (a chain of
    /// them when rows are split).
    #[allow(clippy::too_many_arguments)]
    fn record_rows(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        (def, loops, kept): (&KernelDef, RowLoops, Option<&KernelDef>),
        out: &Tensor,
        out_binding: u32,
        mode: u32,
        opts: &SoftmaxOptions,
    ) -> Result<()> {
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        gpu.scoped(&format!("recording {}", def.entry), || {
            let cols = self.cols();
            let consts = Consts::NONE.with("MODE", mode);
            let launch = RowLaunch::new(ws, (def, consts), loops, self)?.kept_by(kept)?;
            let plan = launch.plan;
            let out_row_bytes = out.row_bytes();
            let mut pass = begin_pass(encoder, def.entry);
            for (r0, n) in launch.chunks() {
                let (x, in_off) = launch.window(self.region(), (r0, n));
                let (y, out_off) = gpu.window_of(
                    out.region(),
                    (r0 as u64 * out_row_bytes, n as u64 * out_row_bytes),
                    out.dtype().bytes() as u64,
                );
                let params = |phase| RowParams {
                    rows: n as u32,
                    cols: cols as u32,
                    in_off,
                    out_off,
                    g: plan.g,
                    inv_t: 1.0 / opts.temperature,
                    segs: plan.segs,
                    span: plan.span,
                    phase,
                    _pad0: 0,
                    _pad1: 0,
                    _pad2: 0,
                };
                let buffers = [(1, x), (out_binding, y)];
                launch.record(ws, &mut pass, n, params, &buffers)?;
            }
            Ok(())
        })
    }

    /// Creates an encoder and a workspace, lets `record` fill the encoder and submits it:
    /// the convenience methods, one submission each.
    pub(crate) fn submit_with(
        &self,
        op: &str,
        record: impl FnOnce(&mut Workspace, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu();
        let mut ws = Workspace::new(gpu);
        let mut encoder = gpu.encoder();
        record(&mut ws, &mut encoder)?;
        gpu.submit(op, encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::wgsl_params;

    #[test]
    fn row_params_match_their_wgsl_twin() {
        let (size, names) = wgsl_params(Shader::Softmax);
        assert_eq!(size, std::mem::size_of::<RowParams>());
        assert_eq!(
            names,
            [
                "rows", "cols", "in_off", "out_off", "g", "inv_t", "segs", "span", "phase",
                "_pad0", "_pad1", "_pad2"
            ]
        );
    }
}
