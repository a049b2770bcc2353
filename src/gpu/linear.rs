//! Host side of shaders/gemm.wgsl, and linear cross-entropy (SPEC.md §2): rows of hidden
//! states in chunks, each chunk's logits by a matrix product, the fused cross-entropy with its
//! gradient in place over them, then `∂L/∂h` and `∂L/∂W` by two more products, so the `N × V`
//! logits never exist at once.

use crate::gpu::context::Region;
use crate::gpu::cross_entropy::{CeExtras, CeParams, CeTarget, Step};
use crate::gpu::kernels::{Consts, KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE};
use crate::gpu::tensor::{GradOut, LossOut, Targets, Tensor};
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{Linear, LinearCrossEntropyOptions, LinearLoss, check_len};
use crate::{DType, Error, Gpu, Result};

/// Twin of `Params` in shaders/gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    a_si: u32,
    a_sk: u32,
    b_off: u32,
    b_sk: u32,
    b_sj: u32,
    c_off: u32,
    ldc: u32,
    bias_off: u32,
    tiles_n: u32,
    out_off: u32,
    out_ld: u32,
    tiles: u32,
    slice_k: u32,
    slice_c: u32,
    _pad: [u32; 3],
}

/// The rows and columns of C one `gemm` workgroup computes. Twins: `TM`, `TN`.
const TILE: usize = 64;
/// Terms of the sum a `gemm` tile takes per step. Twin: `TK`.
const TILE_K: usize = 16;
/// The most terms one invocation sums: `gemm` loops 4 + 4 + 16 times per 16 terms,
/// `gemm_direct` and `col_sums` once per term, both within `MAX_LANE_ITERS` (src/gpu/rows.rs); longer sums go
/// in pieces or slices, added in order.
const MAX_TERMS: usize = 8192;
/// A product with fewer tiles than the tuning's `min_workgroups` (∂L/∂h = G·W: a chunk's rows
/// by the hidden size, summed over the vocabulary) shares its terms out in slices of at least
/// this many, each workgroup one tile of one slice, and adds the slices after (split-K).
const MIN_SLICE_TERMS: usize = 256;
/// The most bytes of slice partials one dispatch writes.
const SLICE_BYTES: usize = 32 << 20;

use Slot::{Read, ReadWrite, Uniform};

const GEMM_BINDINGS: &[(u32, Slot)] = &[
    (0, Uniform),
    (1, Read),
    (2, Read),
    (3, ReadWrite),
    (4, Read),
    (5, Read),
];

/// The products through workgroup-memory tiles (GPUs).
const GEMM: KernelDef = KernelDef {
    shader: Shader::Gemm,
    entry: "gemm",
    bindings: GEMM_BINDINGS,
};

/// The products with each invocation reading its own operands (CPU adapters).
const GEMM_DIRECT: KernelDef = KernelDef {
    shader: Shader::Gemm,
    entry: "gemm_direct",
    bindings: GEMM_BINDINGS,
};

const COL_SUMS: KernelDef = KernelDef {
    shader: Shader::Gemm,
    entry: "col_sums",
    bindings: &[(0, Uniform), (1, Read), (3, ReadWrite), (5, Read)],
};

const TO_HALF: KernelDef = KernelDef {
    shader: Shader::Gemm,
    entry: "to_half",
    bindings: &[(0, Uniform), (3, ReadWrite), (5, Read), (6, ReadWrite)],
};

/// An element type's code in shaders/gemm.wgsl (`A_TYPE`, `B_TYPE`, `OUT_TYPE`).
fn type_code(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Bf16 => 2,
    }
}

/// A matrix in a buffer of `dtype` elements: element (i, j) at `off + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    pub(crate) buf: &'a wgpu::Buffer,
    pub(crate) off: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    pub(crate) dtype: DType,
}

impl<'a> Matrix<'a> {
    /// A row-major f32 matrix with rows of `ld` elements, from element `off`.
    pub(crate) fn rows(buf: &'a wgpu::Buffer, off: usize, ld: usize) -> Self {
        Self {
            buf,
            off,
            rs: ld,
            cs: 1,
            dtype: DType::F32,
        }
    }

    /// The rows of `t` from row `row0`, of its type (a half tensor's rows padded,
    /// `Tensor::stride`).
    pub(crate) fn of(t: &'a Tensor, row0: usize) -> Self {
        Self {
            buf: t.buffer(),
            off: t.first_elem() + row0 * t.stride(),
            rs: t.stride(),
            cs: 1,
            dtype: t.dtype(),
        }
    }

    /// The same elements read transposed.
    pub(crate) fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The elements of rows `i0..i0 + m` and columns `j0..j0 + n`, as a binding window (of
    /// whole 32-bit words) and the offset of element (i0, j0) in it, in elements.
    fn window(
        &self,
        gpu: &'a Gpu,
        (i0, j0): (usize, usize),
        (m, n): (usize, usize),
    ) -> (wgpu::BufferBinding<'a>, u32) {
        let e = self.dtype.bytes() as u64;
        let first = (self.off + i0 * self.rs + j0 * self.cs) as u64 * e;
        let span = extent((m, self.rs), (n, self.cs)) as u64 * e;
        // A half window may start or end inside a word: it takes the whole words.
        let bytes = (first % 4 + span).next_multiple_of(4) - first % 4;
        gpu.window_of(Region::whole(self.buf), (first, bytes), e)
    }
}

/// The most f32 elements one binding window of `gpu` holds wherever it starts.
fn binding_elems(gpu: &Gpu) -> usize {
    let align = u64::from(gpu.inner.limits.min_storage_buffer_offset_alignment);
    (gpu.inner.max_binding.saturating_sub(align) / 4) as usize
}

/// Elements from the first to the last of `m` rows and `n` columns at strides `rs` and `cs`.
fn extent((m, rs): (usize, usize), (n, cs): (usize, usize)) -> usize {
    (m - 1) * rs + (n - 1) * cs + 1
}

/// `c (+)= a·b (+ bias)` for `a` of `m × k` and `b` of `k × n`, `c` row-major.
pub(crate) struct Product<'a> {
    pub(crate) a: Matrix<'a>,
    pub(crate) b: Matrix<'a>,
    pub(crate) c: Matrix<'a>,
    pub(crate) mnk: (usize, usize, usize),
    /// Add to `c` rather than overwrite it.
    pub(crate) accumulate: bool,
    /// `n` values added to every row.
    pub(crate) bias: Option<Region<'a>>,
}

/// Where one product dispatch writes: `c` from its element `at`, onto what is there when
/// `accumulate`; `slices` (count, terms each) blocks one under the other, one per slice.
struct Dest<'a> {
    c: Matrix<'a>,
    at: (usize, usize),
    accumulate: bool,
    slices: (usize, usize),
}

impl Product<'_> {
    /// Records the product into `pass`: in pieces of rows and columns whose windows fit one
    /// binding and of terms each added to the last, in order (the same bits on every run).
    /// A product with few tiles sums slices of its terms in parallel into scratch and adds
    /// them in order ([`MIN_SLICE_TERMS`]); any other takes pieces of at most [`MAX_TERMS`].
    /// Nothing is written while `status` holds a bad target (shaders/gemm.wgsl).
    pub(crate) fn record(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        status: &wgpu::Buffer,
    ) -> Result<()> {
        let gpu = ws.gpu().clone();
        let (m, n, k) = self.mnk;
        let sliced = match self.slice_terms(&gpu) {
            Some(sk) => {
                // Slices per dispatch: as many as [`SLICE_BYTES`] and one binding hold, two
                // at least (one would only add a pass).
                let budget = SLICE_BYTES.min(binding_elems(&gpu) * 4);
                let per = budget / (m * n * 4).max(1);
                let steps = self.steps(&gpu, sk.saturating_mul(per))?;
                // The slices are added into C as one run of values: whole rows of C.
                let whole = (steps.1 == n && self.c.rs == n) || steps.0 == 1;
                (per >= 2 && whole).then_some((sk, steps))
            }
            None => None,
        };
        let (slice_k, (ms, ns, ks)) = match sliced {
            Some((sk, steps)) => (Some(sk), steps),
            None => (None, self.steps(&gpu, MAX_TERMS)?),
        };
        for i0 in (0..m).step_by(ms) {
            let mi = ms.min(m - i0);
            for j0 in (0..n).step_by(ns) {
                let nj = ns.min(n - j0);
                for k0 in (0..k).step_by(ks) {
                    let kk = ks.min(k - k0);
                    let piece = ((i0, j0, k0), (mi, nj, kk));
                    let accumulate = self.accumulate || k0 > 0;
                    let Some(sk) = slice_k else {
                        let dest = Dest {
                            c: self.c,
                            at: (i0, j0),
                            accumulate,
                            slices: (1, kk),
                        };
                        self.dispatch(ws, pass, status, piece, dest)?;
                        continue;
                    };
                    let slices = kk.div_ceil(sk);
                    let flat = mi * nj;
                    let partials = ws.scratch("xent product slices", (slices * flat * 4) as u64);
                    let dest = Dest {
                        c: Matrix::rows(&partials, 0, nj),
                        at: (0, 0),
                        accumulate: false,
                        slices: (slices, sk),
                    };
                    self.dispatch(ws, pass, status, piece, dest)?;
                    let c = Matrix::rows(self.c.buf, self.c.off + i0 * self.c.rs + j0, flat);
                    let sums = (Matrix::rows(&partials, 0, flat), (slices, flat));
                    record_col_sums(ws, pass, sums, (c, accumulate), status)?;
                }
            }
        }
        Ok(())
    }

    /// Terms per slice where this product has fewer tiles than the tuning's
    /// `min_workgroups` and terms enough for two slices of [`MIN_SLICE_TERMS`] (never with a
    /// bias); `None` for a product of plain pieces.
    fn slice_terms(&self, gpu: &Gpu) -> Option<usize> {
        let (m, n, k) = self.mnk;
        let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
        let want = gpu.inner.tuning.min_workgroups.div_ceil(tiles.max(1));
        if self.bias.is_some() || want < 2 {
            return None;
        }
        let sk = k
            .div_ceil(want)
            .next_multiple_of(TILE_K)
            .clamp(MIN_SLICE_TERMS, MAX_TERMS);
        (sk < k).then_some(sk)
    }

    /// Records one dispatch: the piece's `mi × nj` block of C at `(i0, j0)` summed over its
    /// `kk` terms from `k0`, into `dest` (C itself, or one block per slice).
    fn dispatch(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        status: &wgpu::Buffer,
        ((i0, j0, k0), (mi, nj, kk)): ((usize, usize, usize), (usize, usize, usize)),
        dest: Dest<'_>,
    ) -> Result<()> {
        let gpu = ws.gpu().clone();
        // Loop iterations per TILE_K terms: 4 + 4 loads and TILE_K products, or TILE_K.
        let (def, per_step) = if gpu.inner.tuning.tiled_products {
            (&GEMM, 8 + TILE_K)
        } else {
            (&GEMM_DIRECT, TILE_K)
        };
        let (a, b) = (self.a, self.b);
        let (slices, slice_k) = dest.slices;
        let (ab, a_off) = a.window(&gpu, (i0, k0), (mi, kk));
        let (bb, b_off) = b.window(&gpu, (k0, j0), (kk, nj));
        let (cb, c_off) = dest.c.window(&gpu, dest.at, (slices * mi, nj));
        let bias = self.bias.filter(|_| k0 == 0);
        let (biasb, bias_off) = match bias {
            Some(region) => gpu.window(region, j0 as u64 * 4, nj as u64 * 4),
            None => (gpu.inner.dummy.as_entire_buffer_binding(), 0),
        };
        let tiles_n = nj.div_ceil(TILE);
        let tiles = mi.div_ceil(TILE) * tiles_n;
        let params = GemmParams {
            m: mi as u32,
            n: nj as u32,
            k: kk as u32,
            a_off,
            a_si: a.rs as u32,
            a_sk: a.cs as u32,
            b_off,
            b_sk: b.rs as u32,
            b_sj: b.cs as u32,
            c_off,
            ldc: dest.c.rs as u32,
            bias_off,
            tiles_n: tiles_n as u32,
            tiles: tiles as u32,
            slice_k: slice_k as u32,
            slice_c: (mi * dest.c.rs) as u32,
            ..GemmParams::default()
        };
        let consts = Consts::NONE
            .with("A_K", u32::from(a.cs == 1))
            .with("B_K", u32::from(b.rs == 1))
            .with("ACCUMULATE", u32::from(dest.accumulate))
            .with("BIAS", u32::from(bias.is_some()))
            .with("A_TYPE", type_code(a.dtype))
            .with("B_TYPE", type_code(b.dtype));
        let kernel = gpu.kernel_with(def, VecWidth::One, consts)?;
        let bindings = [
            (1, ab),
            (2, bb),
            (3, cb),
            (4, biasb),
            (5, status.as_entire_buffer_binding()),
        ];
        let iters = slice_k.min(kk).div_ceil(TILE_K) * per_step + 16;
        ws.dispatch(pass, &kernel, &params, &bindings, tiles * slices, iters)
    }

    /// Rows, columns and terms per piece: all the terms up to `max_terms`, then halved
    /// (rows and columns in whole tiles) until every operand's window fits one binding, the
    /// dimension spanning more memory first.
    fn steps(&self, gpu: &Gpu, max_terms: usize) -> Result<(usize, usize, usize)> {
        let (m, n, k) = self.mnk;
        let limit = binding_elems(gpu);
        let mut s = [m, n, k.min(max_terms)];
        let units = [TILE, TILE, TILE_K];
        let (a, b, c) = (self.a, self.b, self.c);
        loop {
            // Each operand's window, and its (dimension, stride) pairs.
            let operands = [
                ((0, a.rs), (2, a.cs)),
                ((2, b.rs), (1, b.cs)),
                ((0, c.rs), (1, c.cs)),
            ];
            let over = operands
                .into_iter()
                .find(|&((d1, s1), (d2, s2))| extent((s[d1], s1), (s[d2], s2)) > limit);
            let Some(((d1, s1), (d2, s2))) = over else {
                return Ok((s[0], s[1], s[2]));
            };
            let spans = |d: usize, stride: usize| (s[d] - 1) * stride;
            let order = if spans(d1, s1) >= spans(d2, s2) {
                [d1, d2]
            } else {
                [d2, d1]
            };
            let Some(d) = order.into_iter().find(|&d| s[d] > units[d]) else {
                return Err(Error::Shape(format!(
                    "a {m}×{n}×{k} matrix product's operands do not fit one storage binding \
                     ({} bytes) even in pieces of {}×{}×{}",
                    gpu.inner.max_binding, s[0], s[1], s[2]
                )));
            };
            s[d] = (s[d] / 2).div_ceil(units[d]) * units[d];
        }
    }
}

/// Records `c (+)= Σ_i a(i, ·)` (column sums of `a`, `m × n`, into `n` values of `c` from
/// its element `off`), the rows in pieces of at most [`MAX_TERMS`] in order. Nothing is
/// written while `status` holds a bad target.
fn record_col_sums(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    (a, (m, n)): (Matrix<'_>, (usize, usize)),
    (c, accumulate): (Matrix<'_>, bool),
    status: &wgpu::Buffer,
) -> Result<()> {
    let gpu = ws.gpu().clone();
    for i0 in (0..m).step_by(MAX_TERMS) {
        let mi = MAX_TERMS.min(m - i0);
        let (ab, a_off) = a.window(&gpu, (i0, 0), (mi, n));
        let (cb, c_off) = c.window(&gpu, (0, 0), (1, n));
        let params = GemmParams {
            m: mi as u32,
            n: n as u32,
            a_off,
            a_si: a.rs as u32,
            a_sk: a.cs as u32,
            c_off,
            ..GemmParams::default()
        };
        let consts = Consts::NONE.with("ACCUMULATE", u32::from(accumulate || i0 > 0));
        let kernel = gpu.kernel_with(&COL_SUMS, VecWidth::One, consts)?;
        let bindings = [(1, ab), (3, cb), (5, status.as_entire_buffer_binding())];
        let groups = n.div_ceil(WORKGROUP_SIZE as usize);
        ws.dispatch(pass, &kernel, &params, &bindings, groups, mi)?;
    }
    Ok(())
}

/// Records `dst`'s rows `r0..r0 + rows` (a half tensor) from the f32 rows of `src` (row 0
/// of `src` is row `r0` of `dst`), rounded to `dst`'s type; in pieces whose windows fit one
/// binding. Nothing is written while `status` holds a bad target.
fn record_to_half(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    (src, dst): (Matrix<'_>, &Tensor),
    (r0, rows): (usize, usize),
    status: &wgpu::Buffer,
) -> Result<()> {
    let gpu = ws.gpu().clone();
    let cols = dst.cols();
    let words = dst.stride() / 2;
    let row_bytes = (src.rs * 4).max(words * 4) as u64;
    let per = gpu.items_per_dispatch(rows, row_bytes, 1)?;
    let consts = Consts::NONE.with("OUT_TYPE", type_code(dst.dtype()));
    let kernel = gpu.kernel_with(&TO_HALF, VecWidth::One, consts)?;
    for p0 in (0..rows).step_by(per) {
        let m = per.min(rows - p0);
        let (cb, c_off) = src.window(&gpu, (p0, 0), (m, cols));
        let first = ((r0 + p0) * words * 4) as u64;
        let (ob, out_off) = gpu.window(dst.region(), first, (m * words * 4) as u64);
        let params = GemmParams {
            m: m as u32,
            n: cols as u32,
            c_off,
            ldc: src.rs as u32,
            out_off,
            out_ld: words as u32,
            ..GemmParams::default()
        };
        let bindings = [(3, cb), (5, status.as_entire_buffer_binding()), (6, ob)];
        let groups = (m * words).div_ceil(WORKGROUP_SIZE as usize);
        ws.dispatch(pass, &kernel, &params, &bindings, groups, 0)?;
    }
    Ok(())
}

/// Where a recorded linear cross-entropy writes: the loss (`N × 1` for
/// [`LossReduction::None`](crate::LossReduction::None), else `1 × 1`), and each gradient whose tensor is given (`∂L/∂h`
/// `N × H` and `∂L/∂W` `V × H` of the hidden states' type, `∂L/∂b` V f32 values), and the
/// per-row extras (`N × 1` f32 each).
#[derive(Clone, Copy, Debug)]
pub struct LinearOut<'a> {
    /// The loss.
    pub loss: &'a Tensor,
    /// `∂L/∂h`, `N × H`.
    pub grad_input: Option<&'a Tensor>,
    /// `∂L/∂W`, `V × H`.
    pub grad_weight: Option<&'a Tensor>,
    /// `∂L/∂b`, V values (any shape).
    pub grad_bias: Option<&'a Tensor>,
    /// The per-row extras (z-loss term, entropy), `N × 1` each.
    pub extras: CeExtras<'a>,
}

impl Tensor {
    /// Linear cross-entropy of these hidden states (`N × H`) through the layer `head`
    /// (`weight` `V × H` of the same type, one row per class; `bias` `V` f32 values) against
    /// class indices, with optional class weights (`V` f32 values): the cross-entropy of the
    /// logits `h·Wᵀ + b` with every option of
    /// [`CrossEntropyOptions`](crate::CrossEntropyOptions), and the gradients `∂L/∂h = G·W`,
    /// `∂L/∂W = Gᵀ·h`, `∂L/∂b = Σ_n G[n]` the options ask for (`G` the gradient w.r.t. the
    /// logits). The logits never exist whole: rows go through in chunks
    /// ([`LinearCrossEntropyOptions::chunk_rows`], `chunk_bytes`), each chunk's logits made
    /// by a matrix product into one scratch buffer, the loss and `G` written over them in
    /// place, then the gradient products; `∂L/∂W` adds the chunks in order (the same bits on
    /// every run). Peak memory: the inputs, the outputs and one chunk.
    ///
    /// f16 or bf16 hidden states and weight are read as they are (products and sums in
    /// f32); their gradients are of their type, summed in f32 scratch (`∂L/∂W` over all
    /// chunks: `V × H` f32 more memory) and rounded once.
    ///
    /// Targets are checked first: a bad one returns [`Error::Target`] and writes nothing.
    ///
    /// ```no_run
    /// use xent::{Gpu, Linear, LinearCrossEntropyOptions, Targets, Tensor};
    /// let gpu = Gpu::new()?;
    /// let h = Tensor::from_slice(&gpu, &[0.5, -1.0, 2.0, 0.0], 2, 2)?;        // N = 2, H = 2
    /// let w = Tensor::from_slice(&gpu, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2)?; // V = 3
    /// let targets = Targets::from_i32(&gpu, &[2, 0])?;
    /// let opts = LinearCrossEntropyOptions::default().with_grads();
    /// let out = h.linear_cross_entropy(Linear { weight: &w, bias: None }, &targets, None, &opts)?;
    /// println!("loss {:?}, dW {:?}", out.loss.to_vec()?, out.grad_weight.unwrap().to_vec()?);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn linear_cross_entropy(
        &self,
        head: Linear<'_, Tensor>,
        target: &Targets,
        class_weight: Option<&Tensor>,
        opts: &LinearCrossEntropyOptions,
    ) -> Result<LinearLoss<Tensor>> {
        opts.validate()?;
        let gpu = self.gpu();
        let (n, hs, v) = (self.rows(), self.cols(), head.weight.rows());
        let new =
            |on: bool, shape, dtype| on.then(|| Tensor::output(gpu, shape, dtype)).transpose();
        let (ce, f32) = (&opts.loss, DType::F32);
        let loss = Tensor::output(gpu, self.ce_loss_shape(ce.reduction), f32)?;
        let grad_input = new(opts.grad_input, (n, hs), self.dtype())?;
        let grad_weight = new(opts.grad_weight, (v, hs), self.dtype())?;
        let grad_bias = new(opts.grad_bias, (1, v), f32)?;
        let z_loss = new(ce.z_loss_output, (n, 1), f32)?;
        let entropy = new(ce.entropy_output, (n, 1), f32)?;
        let out = LinearOut {
            loss: &loss,
            grad_input: grad_input.as_ref(),
            grad_weight: grad_weight.as_ref(),
            grad_bias: grad_bias.as_ref(),
            extras: CeExtras {
                z_loss: z_loss.as_ref(),
                entropy: entropy.as_ref(),
            },
        };
        gpu.run_checked("linear cross-entropy", |ws, enc| {
            self.record_linear_cross_entropy(ws, enc, head, target, class_weight, opts, out)
        })?;
        Ok(LinearLoss {
            loss,
            grad_input,
            grad_weight,
            grad_bias,
            z_loss,
            entropy,
        })
    }

    /// Records [`Tensor::linear_cross_entropy`] into the caller's encoder, writing into
    /// `out`: the gradients and extras whose tensors it gives (options that ask for one
    /// without its tensor are an error). Nothing is submitted, read back or, with a warm
    /// `ws`, allocated. The targets are checked on the GPU, and a batch with a bad one writes
    /// nothing; [`Workspace::check_targets`] reads the check later.
    #[allow(clippy::too_many_arguments)]
    pub fn record_linear_cross_entropy(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        head: Linear<'_, Tensor>,
        target: &Targets,
        class_weight: Option<&Tensor>,
        opts: &LinearCrossEntropyOptions,
        out: LinearOut<'_>,
    ) -> Result<()> {
        opts.validate()?;
        let gpu = self.gpu();
        let w = head.weight;
        let (n, hs, v) = (self.rows(), self.cols(), w.rows());
        gpu.same(w.gpu())?;
        self.check_dtype(w, "the weight")?;
        for (t, what) in [(head.bias, "the bias"), (class_weight, "class weights")] {
            if let Some(t) = t {
                gpu.same(t.gpu())?;
                t.require_f32(what)?;
            }
        }
        gpu.same(ws.gpu())?;
        gpu.same(target.gpu())?;
        if w.cols() != hs {
            return Err(Error::Shape(format!(
                "the weight is {v}×{}, the hidden states {n}×{hs}: both need {hs} columns",
                w.cols()
            )));
        }
        check_len("bias", head.bias.map(Tensor::len), v)?;
        check_len("class weights", class_weight.map(Tensor::len), v)?;
        if target.len() != n {
            return Err(Error::Shape(format!(
                "{} targets for {n} rows of hidden states",
                target.len()
            )));
        }
        let ce = &opts.loss;
        self.check_out(out.loss, self.ce_loss_shape(ce.reduction), DType::F32)?;
        let dtype = self.dtype();
        let outputs = [
            (
                opts.grad_input,
                out.grad_input,
                (n, hs, dtype),
                "grad_input",
            ),
            (
                opts.grad_weight,
                out.grad_weight,
                (v, hs, dtype),
                "grad_weight",
            ),
            (
                ce.z_loss_output,
                out.extras.z_loss,
                (n, 1, DType::F32),
                "z_loss_output",
            ),
            (
                ce.entropy_output,
                out.extras.entropy,
                (n, 1, DType::F32),
                "entropy_output",
            ),
        ];
        for (on, tensor, (r, c, t_type), name) in outputs {
            match tensor {
                Some(t) => self.check_out(t, (r, c), t_type)?,
                None if on => {
                    return Err(Error::InvalidArgument(format!(
                        "the options ask for {name} but no tensor is given for it"
                    )));
                }
                None => {}
            }
        }
        match out.grad_bias {
            Some(t) => {
                gpu.same(t.gpu())?;
                t.require_f32("the bias gradient")?;
                check_len("the bias gradient", Some(t.len()), v)?;
            }
            None if opts.grad_bias => {
                return Err(Error::InvalidArgument(
                    "the options ask for grad_bias but no tensor is given for it".into(),
                ));
            }
            None => {}
        }
        // A chunk's logits fit the budget and one binding.
        let chunk = opts.chunk_rows_for(n, v, 1, gpu.items_per_dispatch(n, v as u64 * 4, 1)?);
        let grad = out.grad_input.is_some() || out.grad_weight.is_some() || out.grad_bias.is_some();
        let kind = CeTarget::Indices(target);
        let base = CeParams::base(kind, (n, v), class_weight.is_some(), grad, ce);
        let loss_out = LossOut {
            loss: out.loss,
            grad: GradOut::InPlace,
        };
        gpu.scoped("recording linear cross-entropy", || {
            let mut pass = begin_pass(encoder, "xent linear cross-entropy");
            let step = Step::begin(
                ws,
                &mut pass,
                (kind, n, v),
                class_weight,
                ce,
                (base, &loss_out, out.extras),
            )?;
            let status = ws.target_status();
            let scratch = ws.scratch("xent linear-cross-entropy logits", (chunk * v * 4) as u64);
            let g = Matrix::rows(&scratch, 0, v);
            let w = Matrix::of(head.weight, 0);
            // Half gradients are summed in f32 scratch and rounded once: ∂L/∂h per chunk (its
            // sum over V may go in pieces), ∂L/∂W over all chunks.
            let half = dtype.is_half();
            let dh_f32 = (half && out.grad_input.is_some())
                .then(|| ws.scratch("xent linear-cross-entropy dh", (chunk * hs * 4) as u64));
            let dw_f32 = (half && out.grad_weight.is_some())
                .then(|| ws.scratch("xent linear-cross-entropy dW", (v * hs * 4) as u64));
            for r0 in (0..n).step_by(chunk) {
                let rows = chunk.min(n - r0);
                let h = Matrix::of(self, r0);
                let logits = Product {
                    a: h,
                    b: w.t(),
                    c: g,
                    mnk: (rows, v, hs),
                    accumulate: false,
                    bias: head.bias.map(Tensor::region),
                };
                logits.record(ws, &mut pass, &status)?;
                let x = Tensor::view(gpu, scratch.clone(), (rows, v));
                let in_place = if grad {
                    GradOut::InPlace
                } else {
                    GradOut::None
                };
                step.record_rows(ws, &mut pass, &x, r0, &in_place)?;
                if let Some(dh) = out.grad_input {
                    let c = match &dh_f32 {
                        Some(buf) => Matrix::rows(buf, 0, hs),
                        None => Matrix::of(dh, r0),
                    };
                    let product = Product {
                        a: g,
                        b: w,
                        c,
                        mnk: (rows, hs, v),
                        accumulate: false,
                        bias: None,
                    };
                    product.record(ws, &mut pass, &status)?;
                    if half {
                        record_to_half(ws, &mut pass, (c, dh), (r0, rows), &status)?;
                    }
                }
                if let Some(dw) = out.grad_weight {
                    let product = Product {
                        a: g.t(),
                        b: h,
                        c: match &dw_f32 {
                            Some(buf) => Matrix::rows(buf, 0, hs),
                            None => Matrix::of(dw, 0),
                        },
                        mnk: (v, hs, rows),
                        accumulate: r0 > 0,
                        bias: None,
                    };
                    product.record(ws, &mut pass, &status)?;
                }
                if let Some(db) = out.grad_bias {
                    let c = Matrix::rows(db.buffer(), db.first_elem(), v);
                    record_col_sums(ws, &mut pass, (g, (rows, v)), (c, r0 > 0), &status)?;
                }
            }
            if let (Some(dw), Some(buf)) = (out.grad_weight, &dw_f32) {
                let src = Matrix::rows(buf, 0, hs);
                record_to_half(ws, &mut pass, (src, dw), (0, v), &status)?;
            }
            step.finish(ws, &mut pass, out.loss)
        })
    }
}

#[cfg(feature = "cli")]
impl Tensor {
    /// Records the logits `logits = self·weightᵀ` (`N × V` from `N × H` and `V × H`) alone:
    /// the matrix product of linear cross-entropy, for benchmarks.
    pub(crate) fn record_logits_product(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        weight: &Tensor,
        logits: &Tensor,
    ) -> Result<()> {
        let (n, hs, v) = (self.rows(), self.cols(), weight.rows());
        self.check_out(logits, (n, v), DType::F32)?;
        self.gpu().scoped("recording a matrix product", || {
            let mut pass = begin_pass(encoder, "xent matrix product");
            let status = ws.target_status();
            let product = Product {
                a: Matrix::rows(self.buffer(), self.first_elem(), hs),
                b: Matrix::rows(weight.buffer(), weight.first_elem(), hs).t(),
                c: Matrix::rows(logits.buffer(), logits.first_elem(), v),
                mnk: (n, v, hs),
                accumulate: false,
                bias: None,
            };
            product.record(ws, &mut pass, &status)
        })
    }

    /// The unfused composition linear cross-entropy is measured against, recorded into
    /// `encoder`: the whole `N × V` logits into `logits` by one product, the fused
    /// cross-entropy (mean) with its gradient in place over them, then `∂L/∂h` into
    /// `grad_input` and `∂L/∂W` into `grad_weight` by two more products. For benchmarks.
    pub(crate) fn record_unfused_linear(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        (weight, target): (&Tensor, &Targets),
        (logits, loss): (&Tensor, &Tensor),
        (grad_input, grad_weight): (&Tensor, &Tensor),
    ) -> Result<()> {
        let (n, hs, v) = (self.rows(), self.cols(), weight.rows());
        self.record_logits_product(ws, encoder, weight, logits)?;
        let out = LossOut {
            loss,
            grad: GradOut::InPlace,
        };
        let opts = crate::CrossEntropyOptions::default();
        logits.record_cross_entropy(ws, encoder, target, None, &opts, out)?;
        self.gpu().scoped("recording the gradient products", || {
            let mut pass = begin_pass(encoder, "xent gradient products");
            let status = ws.target_status();
            let (g, w) = (
                Matrix::rows(logits.buffer(), logits.first_elem(), v),
                Matrix::rows(weight.buffer(), weight.first_elem(), hs),
            );
            let products = [
                Product {
                    a: g,
                    b: w,
                    c: Matrix::rows(grad_input.buffer(), grad_input.first_elem(), hs),
                    mnk: (n, hs, v),
                    accumulate: false,
                    bias: None,
                },
                Product {
                    a: g.t(),
                    b: Matrix::rows(self.buffer(), self.first_elem(), hs),
                    c: Matrix::rows(grad_weight.buffer(), grad_weight.first_elem(), hs),
                    mnk: (v, hs, n),
                    accumulate: false,
                    bias: None,
                },
            ];
            for p in products {
                p.record(ws, &mut pass, &status)?;
            }
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
        let (size, names) = wgsl_params(Shader::Gemm);
        assert_eq!(size, std::mem::size_of::<GemmParams>());
        assert_eq!(
            names[..13],
            [
                "m", "n", "k", "a_off", "a_si", "a_sk", "b_off", "b_sk", "b_sj", "c_off", "ldc",
                "bias_off", "tiles_n"
            ]
        );
    }
}
