//! Option types shared by the GPU and CPU paths.

use crate::{Error, Result};

/// Options of softmax, log-softmax and logsumexp.
///
/// `temperature` divides the logits first: `softmax(x / T)`, `log_softmax(x / T)` and
/// `logsumexp(x / T)`. It must be finite and positive. (PyTorch has no temperature argument;
/// `T = 1`, the default, is PyTorch's function exactly.)
///
/// ```
/// let opts = xent::SoftmaxOptions::default().with_temperature(2.0);
/// assert_eq!(opts.temperature, 2.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxOptions {
    /// Divides every logit before the softmax. Default 1.
    pub temperature: f32,
}

impl Default for SoftmaxOptions {
    fn default() -> Self {
        Self { temperature: 1.0 }
    }
}

impl SoftmaxOptions {
    /// These options with another temperature.
    pub fn with_temperature(self, temperature: f32) -> Self {
        Self { temperature }
    }

    /// An error unless the temperature is finite and positive with a finite reciprocal (a
    /// subnormal temperature would divide the logits into infinities).
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if t.is_finite() && t > 0.0 && (1.0 / t).is_finite() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "temperature must be finite and > 0, got {}",
                self.temperature
            )))
        }
    }
}

/// Which row-wise output a softmax-family kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// `exp(y_i - m) / d`.
    Softmax,
    /// `y_i - m - log d`.
    LogSoftmax,
}

/// The elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `min(x, 0) - log1p(e^-|x|)`.
    LogSigmoid,
    /// `ln(p / (1 - p))`, the inverse of the sigmoid.
    Logit,
}

/// Number of rows of a row-major buffer of `len` values with `cols` per row; an error for
/// empty input or a length that is not a whole number of rows.
pub(crate) fn rows_of(len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || len == 0 {
        return Err(Error::Shape(format!(
            "empty input ({len} values, {cols} columns)"
        )));
    }
    if !len.is_multiple_of(cols) {
        return Err(Error::Shape(format!(
            "{len} values are not a whole number of rows of {cols}"
        )));
    }
    Ok(len / cols)
}

/// An error for empty elementwise input.
pub(crate) fn non_empty(len: usize) -> Result<()> {
    if len == 0 {
        Err(Error::Shape("empty input".into()))
    } else {
        Ok(())
    }
}

/// How per-sample losses become the result (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossReduction {
    /// One loss per sample (per row for cross-entropy, per element for BCE).
    None,
    /// The sum of the per-sample losses.
    Sum,
    /// The weighted mean: for class-index cross-entropy the sum over `Σ w[y_n]` of the rows
    /// not ignored (NaN when every row is ignored, as PyTorch); for soft targets over the rows;
    /// for BCE over the elements.
    #[default]
    Mean,
}

/// Options of the softmax cross-entropy loss (SPEC.md §2), PyTorch's
/// `F.cross_entropy(..., ignore_index, label_smoothing, reduction)` plus the z-loss of PaLM /
/// Liger-Kernel. Class weights are passed next to the options, as a tensor or slice.
///
/// ```
/// use xent::{CrossEntropyOptions, LossReduction};
/// let opts = CrossEntropyOptions::default()
///     .with_reduction(LossReduction::Sum)
///     .with_label_smoothing(0.1)
///     .with_z_loss(1e-4);
/// assert_eq!(opts.ignore_index, -100);
/// opts.validate()?;
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// Default [`LossReduction::Mean`].
    pub reduction: LossReduction,
    /// Rows whose target equals this are ignored: loss 0, gradient 0, not counted by `mean`.
    /// Default -100 (PyTorch's). Must fit in an i32. Unused with probability targets.
    pub ignore_index: i64,
    /// `ε ∈ [0, 1)`: the target becomes `(1-ε)·one_hot + ε/K`. Default 0.
    pub label_smoothing: f32,
    /// `z ≥ 0`: adds `z·logsumexp(x)²` per row (class-index targets only). Default 0.
    pub z_loss: f32,
    /// Logit softcapping `c > 0` (Gemma 2): every logit `x` is read as `c·tanh(x / c)` before
    /// anything else, in the same pass, and the gradient is w.r.t. the raw `x`. Default none.
    pub softcap: Option<f32>,
    /// Return each row's z-loss term `z·logsumexp(x)²` on its own ([`Loss::z_loss`]; the loss
    /// still includes it; 0 for an ignored row), from the same pass. Class-index targets
    /// only. Default false.
    pub z_loss_output: bool,
    /// Return each row's entropy of `softmax(x)` ([`Loss::entropy`], after the softcap; 0 for
    /// an ignored row), from the same pass: no second read of the logits. Default false.
    pub entropy_output: bool,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        Self {
            reduction: LossReduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            z_loss_output: false,
            entropy_output: false,
        }
    }
}

impl CrossEntropyOptions {
    /// These options with another reduction.
    pub fn with_reduction(self, reduction: LossReduction) -> Self {
        Self { reduction, ..self }
    }

    /// These options with another ignored target value.
    pub fn with_ignore_index(self, ignore_index: i64) -> Self {
        Self {
            ignore_index,
            ..self
        }
    }

    /// These options with label smoothing `ε`.
    pub fn with_label_smoothing(self, label_smoothing: f32) -> Self {
        Self {
            label_smoothing,
            ..self
        }
    }

    /// These options with the z-loss coefficient `z`.
    pub fn with_z_loss(self, z_loss: f32) -> Self {
        Self { z_loss, ..self }
    }

    /// These options with logit softcapping at `c`.
    pub fn with_softcap(self, c: f32) -> Self {
        Self {
            softcap: Some(c),
            ..self
        }
    }

    /// These options returning each row's z-loss term ([`CrossEntropyOptions::z_loss_output`]).
    pub fn with_z_loss_output(self) -> Self {
        Self {
            z_loss_output: true,
            ..self
        }
    }

    /// These options returning each row's entropy ([`CrossEntropyOptions::entropy_output`]).
    ///
    /// ```no_run
    /// use xent::{CrossEntropyOptions, Gpu, Grad, Targets, Tensor};
    /// let gpu = Gpu::new()?;
    /// let x = Tensor::from_slice(&gpu, &[2.0, 0.5, -1.0, 0.0, 0.0, 0.0], 2, 3)?;
    /// let opts = CrossEntropyOptions::default().with_entropy_output();
    /// let out = x.cross_entropy(&Targets::from_i32(&gpu, &[0, 1])?, None, &opts, Grad::New)?;
    /// let h = out.entropy.unwrap().to_vec()?;          // one per row, nats
    /// assert!((h[1] - 3f32.ln()).abs() < 1e-6);        // a uniform row: log K
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn with_entropy_output(self) -> Self {
        Self {
            entropy_output: true,
            ..self
        }
    }

    /// An error unless `ε ∈ [0, 1)`, `z` is finite and ≥ 0, a softcap is finite and > 0 and
    /// `ignore_index` fits an i32.
    pub fn validate(&self) -> Result<()> {
        let eps = self.label_smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(Error::InvalidArgument(format!(
                "label smoothing must be in [0, 1), got {eps}"
            )));
        }
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "z-loss must be finite and >= 0, got {}",
                self.z_loss
            )));
        }
        check_softcap(self.softcap)?;
        if i32::try_from(self.ignore_index).is_err() {
            return Err(Error::InvalidArgument(format!(
                "ignore_index {} does not fit in an i32",
                self.ignore_index
            )));
        }
        Ok(())
    }
}

/// An error unless a softcap is finite and > 0.
fn check_softcap(softcap: Option<f32>) -> Result<()> {
    match softcap {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(Error::InvalidArgument(format!(
            "softcap must be finite and > 0, got {c}"
        ))),
        _ => Ok(()),
    }
}

/// The checks both paths make before a cross-entropy: valid options, no z-loss with
/// probability targets.
pub(crate) fn check_cross_entropy(opts: &CrossEntropyOptions, soft: bool) -> Result<()> {
    opts.validate()?;
    if soft && (opts.z_loss != 0.0 || opts.z_loss_output) {
        return Err(Error::InvalidArgument(
            "z-loss is defined for class-index targets only".into(),
        ));
    }
    Ok(())
}

/// A linear layer's parameters, PyTorch's `Linear` layout: `weight` `[V, H]` (one row per
/// class, of the hidden states' type), `bias` `[V]` (f32) or none. `T` is
/// [`Tensor`](crate::Tensor) on the GPU, `[f32]` on host slices.
#[derive(Debug)]
pub struct Linear<'a, T: ?Sized> {
    /// `V × H`, one row per class.
    pub weight: &'a T,
    /// `V` f32 values, or none.
    pub bias: Option<&'a T>,
}

impl<T: ?Sized> Clone for Linear<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Linear<'_, T> {}

/// The bytes a chunk of logits takes, by default, in linear cross-entropy
/// ([`LinearCrossEntropyOptions::chunk_bytes`]): 128 MiB, 1 048 rows of a 32 000-word
/// vocabulary.
pub const DEFAULT_CHUNK_BYTES: u64 = 128 << 20;

/// Options of linear cross-entropy (SPEC.md §2): the cross-entropy's own, which gradients to
/// return, and how many rows of logits exist at once.
///
/// ```
/// let opts = xent::LinearCrossEntropyOptions::default().with_grads().with_chunk_rows(256);
/// assert!(opts.grad_input && opts.grad_weight && opts.grad_bias);
/// opts.validate()?;
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearCrossEntropyOptions {
    /// The cross-entropy's options: every one applies to the logits `h·Wᵀ + b`.
    pub loss: CrossEntropyOptions,
    /// Return `∂L/∂h` (`N × H`). Default false.
    pub grad_input: bool,
    /// Return `∂L/∂W` (`V × H`). Default false.
    pub grad_weight: bool,
    /// Return `∂L/∂b` (`V`; also without a bias: the column sums of `∂L/∂logits`). Default
    /// false.
    pub grad_bias: bool,
    /// Rows of logits computed at once. Default none: as many as
    /// [`LinearCrossEntropyOptions::chunk_bytes`] holds (at least one).
    pub chunk_rows: Option<usize>,
    /// The most bytes a chunk of logits takes when `chunk_rows` is not set (the GPU also keeps
    /// it within one storage binding; the CPU holds the chunk's logits and their gradient, two
    /// buffers, in it). Default [`DEFAULT_CHUNK_BYTES`].
    pub chunk_bytes: u64,
}

impl Default for LinearCrossEntropyOptions {
    fn default() -> Self {
        Self {
            loss: CrossEntropyOptions::default(),
            grad_input: false,
            grad_weight: false,
            grad_bias: false,
            chunk_rows: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

impl LinearCrossEntropyOptions {
    /// These options with the cross-entropy's options `loss`.
    pub fn with_loss(self, loss: CrossEntropyOptions) -> Self {
        Self { loss, ..self }
    }

    /// These options returning all three gradients.
    pub fn with_grads(self) -> Self {
        Self {
            grad_input: true,
            grad_weight: true,
            grad_bias: true,
            ..self
        }
    }

    /// These options computing `rows` rows of logits at once.
    pub fn with_chunk_rows(self, rows: usize) -> Self {
        Self {
            chunk_rows: Some(rows),
            ..self
        }
    }

    /// An error unless the cross-entropy's options are valid and a chunk holds at least a row
    /// (`chunk_rows` ≥ 1, `chunk_bytes` > 0).
    pub fn validate(&self) -> Result<()> {
        check_cross_entropy(&self.loss, false)?;
        if self.chunk_rows == Some(0) || self.chunk_bytes == 0 {
            return Err(Error::InvalidArgument(
                "a chunk of linear cross-entropy must hold at least one row".into(),
            ));
        }
        Ok(())
    }

    /// Rows per chunk for `n` rows of `v` logits, `copies` buffers of a chunk's logits held
    /// at once, at most `max_rows` (≥ 1) a chunk: `chunk_rows`, or else the rows
    /// `chunk_bytes` holds, spread evenly over the chunks that takes (no short last chunk);
    /// at least 1, at most `n`.
    pub(crate) fn chunk_rows_for(&self, n: usize, v: usize, copies: u64, max_rows: usize) -> usize {
        let n = n.max(1);
        let max_rows = max_rows.clamp(1, n);
        if let Some(rows) = self.chunk_rows {
            return rows.clamp(1, max_rows);
        }
        let row_bytes = (v as u64 * 4 * copies).max(1);
        let fit = usize::try_from(self.chunk_bytes / row_bytes).unwrap_or(usize::MAX);
        n.div_ceil(n.div_ceil(fit.clamp(1, max_rows)))
    }
}

/// Linear cross-entropy's results: the loss, the gradients the options asked for, and the
/// per-row extras of [`CrossEntropyOptions`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearLoss<T> {
    /// One value per row for [`LossReduction::None`], else a single value.
    pub loss: T,
    /// `∂L/∂h`, `N × H` (of the sum, for [`LossReduction::None`]).
    pub grad_input: Option<T>,
    /// `∂L/∂W`, `V × H`.
    pub grad_weight: Option<T>,
    /// `∂L/∂b`, `V`.
    pub grad_bias: Option<T>,
    /// Each row's z-loss term ([`CrossEntropyOptions::z_loss_output`]).
    pub z_loss: Option<T>,
    /// Each row's softmax entropy ([`CrossEntropyOptions::entropy_output`]).
    pub entropy: Option<T>,
}

/// Options of binary cross-entropy with logits. `pos_weight` and `weight` are passed next to
/// them, as tensors or slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BceOptions {
    /// Default [`LossReduction::Mean`] (over all elements).
    pub reduction: LossReduction,
}

/// Which gradient a loss computes besides the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Grad {
    /// The loss only: no gradient buffer at all.
    #[default]
    None,
    /// The gradient w.r.t. the logits in a new tensor of the logits' shape.
    New,
    /// The gradient written over the logits (no second `rows × K` buffer: the memory saving
    /// large-vocabulary training relies on). Cross-entropy only. On host slices
    /// ([`Backend`](crate::Backend)) the gradient comes back in its own `Vec` either way; on the
    /// GPU it overwrites the uploaded copy of the logits, so the device holds one `rows × K`
    /// buffer instead of two.
    InPlace,
}

impl Grad {
    /// Whether a gradient is asked for.
    pub fn wanted(self) -> bool {
        self != Grad::None
    }

    /// An error for an op (`op`, plural) that cannot write its gradient over its input.
    pub(crate) fn refuse_in_place(self, op: &str) -> Result<()> {
        if self == Grad::InPlace {
            return Err(Error::InvalidArgument(format!(
                "{op} have no in-place gradient; use Grad::New"
            )));
        }
        Ok(())
    }
}

/// A loss and, when asked for, its gradient w.r.t. the logits and the per-row extras. The
/// gradient's type `G` is the loss's, but for the CPU path's half-precision rows
/// ([`crate::cpu::cross_entropy`] of `half::bf16` logits has a `Vec<f32>` loss and a
/// `Vec<half::bf16>` gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct Loss<T, G = T> {
    /// One value per sample for [`LossReduction::None`], else a single value.
    pub loss: T,
    /// The gradient of the reduced loss (of the sum, for [`LossReduction::None`]), shaped like
    /// the logits; `None` when not asked for, or when written in place.
    pub grad: Option<G>,
    /// Cross-entropy's z-loss term per row, when
    /// [`CrossEntropyOptions::z_loss_output`] asks for it (one value per row, f32).
    pub z_loss: Option<T>,
    /// Cross-entropy's softmax entropy per row, when
    /// [`CrossEntropyOptions::entropy_output`] asks for it (one value per row, f32).
    pub entropy: Option<T>,
}

impl<T, G> Loss<T, G> {
    /// A loss and its gradient, without extras.
    pub(crate) fn new(loss: T, grad: Option<G>) -> Self {
        Self {
            loss,
            grad,
            z_loss: None,
            entropy: None,
        }
    }
}

/// Targets of cross-entropy on host slices: class indices (one per row) or a probability row
/// per sample (`rows × K`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target<'a> {
    /// Class indices as i32.
    I32(&'a [i32]),
    /// Class indices as i64 (PyTorch's default integer type).
    I64(&'a [i64]),
    /// Probabilities, `rows × K` row-major (soft targets).
    Probs(&'a [f32]),
}

/// The per-column `pos_weight` (length `cols`) and per-element `weight` (the logits' length)
/// of binary cross-entropy; both optional.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BceWeights<'a> {
    /// Weight of the positive term, per column.
    pub pos_weight: Option<&'a [f32]>,
    /// Weight of each element's loss.
    pub weight: Option<&'a [f32]>,
}

/// An error unless an optional weight vector has `len` values.
/// [`Error::Target`] for the first target outside `[0, cols)` that is not `ignore`: the one
/// check of class indices on the host, whichever path computes (a value beyond i32, which
/// the GPU cannot hold, is outside `[0, cols)` too).
pub(crate) fn check_targets(t: &[i64], ignore: i64, cols: usize) -> Result<()> {
    match t
        .iter()
        .enumerate()
        .find(|&(_, &v)| v != ignore && !(0..cols as i64).contains(&v))
    {
        Some((row, &value)) => Err(Error::Target {
            batch: None,
            row,
            value,
            classes: cols,
        }),
        None => Ok(()),
    }
}

/// Class-index targets as i64, one for each of `rows` rows: an error for probability targets
/// (`op` names what takes indices only) or for another count (`what` names the rows).
pub(crate) fn class_indices(
    target: Target<'_>,
    rows: usize,
    (op, what): (&str, &str),
) -> Result<Vec<i64>> {
    let t: Vec<i64> = match target {
        Target::I32(t) => t.iter().map(|&y| i64::from(y)).collect(),
        Target::I64(t) => t.to_vec(),
        Target::Probs(_) => {
            return Err(Error::InvalidArgument(format!(
                "{op} takes class-index targets"
            )));
        }
    };
    if t.len() != rows {
        return Err(Error::Shape(format!(
            "{} targets for {rows} rows of {what}",
            t.len()
        )));
    }
    Ok(t)
}

pub(crate) fn check_len(what: &str, got: Option<usize>, len: usize) -> Result<()> {
    match got {
        Some(n) if n != len => Err(Error::Shape(format!(
            "{what} has {n} values, expected {len}"
        ))),
        _ => Ok(()),
    }
}

/// How a distribution is given to the information-theory ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Form {
    /// Probabilities (rows should sum to 1; see [`validate_probs`]).
    #[default]
    Probs,
    /// Natural-log probabilities.
    LogProbs,
    /// Logits: a stable `log_softmax(x / T)` is taken in the same kernel.
    Logits,
}

/// The two-sided information-theory ops on rows `P` and `Q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// `H(P,Q) = -Σ P log Q`.
    CrossEntropy,
    /// `D(P‖Q) = Σ P (log P - log Q)`; `D(Q‖P)` is the same op with the arguments swapped.
    Kl,
    /// Jensen-Shannon: `½ D(P‖M) + ½ D(Q‖M)`, `M = ½ (P + Q)`; symmetric, `≤ log 2`.
    Js,
}

/// How per-row divergences are reduced (PyTorch's `kl_div` reductions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DivReduction {
    /// One value per row (the CLI's default).
    #[default]
    None,
    /// The sum over rows.
    Sum,
    /// The sum over all `rows × K` elements' count, as PyTorch's `kl_div(reduction="mean")`.
    Mean,
    /// The sum over the rows' count: the mathematically meaningful mean of a KL divergence.
    BatchMean,
}

/// Options of the information-theory ops (SPEC.md §3).
///
/// ```
/// use xent::{Form, InfoOptions};
/// let bits = InfoOptions::default().with_base(2.0).with_form(Form::Logits);
/// bits.validate()?;
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfoOptions {
    /// How `P` and `Q` are given. Default probabilities.
    pub form: Form,
    /// Logarithm base: `e` (nats, the default), 2 (bits) or any `b > 1`.
    pub base: f32,
    /// Divides logits before their softmax (both sides; distillation). Logits only; default 1.
    pub temperature: f32,
    /// Reduction of the per-row values of divergences. Default none.
    pub reduction: DivReduction,
    /// Logit softcapping `c > 0` (Gemma 2): every logit `x` (both sides) is read as
    /// `c·tanh(x / c)` before the temperature, in the same pass, and a gradient is w.r.t. the
    /// raw logits. Logits only; default none.
    pub softcap: Option<f32>,
}

impl Default for InfoOptions {
    fn default() -> Self {
        Self {
            form: Form::Probs,
            base: std::f32::consts::E,
            temperature: 1.0,
            reduction: DivReduction::None,
            softcap: None,
        }
    }
}

impl InfoOptions {
    /// These options with another input form.
    pub fn with_form(self, form: Form) -> Self {
        Self { form, ..self }
    }

    /// These options with another base.
    pub fn with_base(self, base: f32) -> Self {
        Self { base, ..self }
    }

    /// These options with a temperature (logits only).
    pub fn with_temperature(self, temperature: f32) -> Self {
        Self {
            temperature,
            ..self
        }
    }

    /// These options with another reduction.
    pub fn with_reduction(self, reduction: DivReduction) -> Self {
        Self { reduction, ..self }
    }

    /// These options with logit softcapping at `c` (logits only).
    pub fn with_softcap(self, c: f32) -> Self {
        Self {
            softcap: Some(c),
            ..self
        }
    }

    /// An error unless the base is finite and > 1, the temperature finite and > 0 (and 1
    /// unless the inputs are logits) and a softcap finite, > 0 and on logits.
    pub fn validate(&self) -> Result<()> {
        if !(self.base.is_finite() && self.base > 1.0) {
            return Err(Error::InvalidArgument(format!(
                "base must be finite and > 1, got {}",
                self.base
            )));
        }
        SoftmaxOptions::default()
            .with_temperature(self.temperature)
            .validate()?;
        if self.temperature != 1.0 && self.form != Form::Logits {
            return Err(Error::InvalidArgument(
                "a temperature applies to logits only".into(),
            ));
        }
        check_softcap(self.softcap)?;
        if self.softcap.is_some() && self.form != Form::Logits {
            return Err(Error::InvalidArgument(
                "a softcap applies to logits only".into(),
            ));
        }
        Ok(())
    }

    /// `1 / ln(base)`, in f64 (the CPU path's precision; the GPU path rounds it to f32).
    pub(crate) fn inv_ln_base(&self) -> f64 {
        1.0 / f64::from(self.base).ln()
    }

    /// The reduction's divisor of the sum of `rows` values of `cols` elements each.
    pub(crate) fn divisor(&self, rows: usize, cols: usize) -> Option<f64> {
        match self.reduction {
            DivReduction::None | DivReduction::Sum => None,
            DivReduction::Mean => Some((rows * cols) as f64),
            DivReduction::BatchMean => Some(rows as f64),
        }
    }
}

/// Checks probability rows (of `cols`): every value finite and ≥ 0, every row summing to 1
/// within 1e-3 (SPEC.md §3). The error names the first offending row.
///
/// ```
/// assert!(xent::validate_probs(&[0.8, 0.2, 0.7, 0.3], 2).is_ok());
/// assert!(xent::validate_probs(&[0.8, 0.3], 2).is_err());
/// ```
pub fn validate_probs(p: &[f32], cols: usize) -> Result<()> {
    rows_of(p.len(), cols)?;
    for (r, row) in p.chunks(cols).enumerate() {
        if let Some(v) = row.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "row {r} holds {v}, not a probability (finite and >= 0)"
            )));
        }
        let s: f64 = row.iter().map(|&v| f64::from(v)).sum();
        if (s - 1.0).abs() > 1e-3 {
            return Err(Error::InvalidArgument(format!(
                "row {r} sums to {s}, not 1 (within 1e-3)"
            )));
        }
    }
    Ok(())
}
