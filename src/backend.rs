//! One slice-in / `Vec`-out interface over both paths.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::cpu::{self, Cpu};
use crate::dtype::CONVERT_CHUNK;
use crate::gpu::tensor::Alloc;
use crate::gpu::{CeTarget, Gpu, Targets, Tensor};
use crate::options::{
    Activation, BceOptions, BceWeights, CrossEntropyOptions, Divergence, Grad, InfoOptions, Linear,
    LinearCrossEntropyOptions, LinearLoss, Loss, SoftmaxKind, SoftmaxOptions, Target,
    check_targets, non_empty, rows_of,
};
use crate::shard::{SHARD_STATS, ShardBatch};
use crate::{DType, Result};

/// The ops on host slices, implemented by [`Cpu`] and [`Gpu`] with the same results (to
/// floating-point tolerance). Row-wise ops take the row length `cols`; the number of rows is
/// `x.len() / cols`. On the GPU every call uploads, runs and reads back; keep data on the
/// GPU with [`Tensor`] instead when calls follow each other. [`Backend::typed`] gives the
/// same ops on f16 or bf16 data.
///
/// ```no_run
/// use xent::{Backend, Cpu, Gpu, SoftmaxOptions};
/// let x = [1.0f32, 2.0, 3.0, 4.0, 1.0, 1.0];
/// let cpu = Cpu.softmax(&x, 3, &SoftmaxOptions::default())?;
/// let gpu = Gpu::new()?.softmax(&x, 3, &SoftmaxOptions::default())?;
/// assert!(cpu.iter().zip(&gpu).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok::<(), xent::Error>(())
/// ```
pub trait Backend {
    /// Row-wise softmax or log-softmax.
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>>;
    /// Row-wise logsumexp, one value per row.
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>>;
    /// An elementwise activation.
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>>;
    /// Softmax cross-entropy against class indices or probability rows, optional class
    /// weights (`cols` values), and the gradient of the reduced loss when `grad` asks for it
    /// (SPEC.md §2; with [`Grad::InPlace`] the GPU computes it over its copy of the logits).
    ///
    /// ```no_run
    /// use xent::{Backend, Cpu, CrossEntropyOptions, Gpu, Grad, Target};
    /// let x = [2.0f32, 0.5, -1.0, 0.0, 3.0, 1.0];
    /// let t = Target::I64(&[0, 1]);
    /// let opts = CrossEntropyOptions::default();
    /// let cpu = Cpu.cross_entropy(&x, 3, t, None, &opts, Grad::New)?;
    /// let gpu = Gpu::new()?.cross_entropy(&x, 3, t, None, &opts, Grad::InPlace)?;
    /// assert_eq!(cpu.grad.unwrap().len(), gpu.grad.unwrap().len());
    /// assert!((cpu.loss[0] - gpu.loss[0]).abs() < 1e-6);
    /// # Ok::<(), xent::Error>(())
    /// ```
    fn cross_entropy(
        &self,
        x: &[f32],
        cols: usize,
        target: Target<'_>,
        weight: Option<&[f32]>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>>;
    /// Binary cross-entropy with logits against `target` (same length), with the gradient
    /// when `grad` is [`Grad::New`] ([`Grad::InPlace`] is an error).
    fn bce_with_logits(
        &self,
        x: &[f32],
        cols: usize,
        target: &[f32],
        weights: BceWeights<'_>,
        opts: &BceOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>>;
    /// Linear cross-entropy of the hidden states `hidden` (rows of `hidden_size`) through
    /// `head` against class indices, optional class weights, with the gradients the options
    /// ask for, the logits never held whole (SPEC.md §2; [`cpu::linear_cross_entropy`],
    /// [`Tensor::linear_cross_entropy`]). Under [`Backend::typed`] the hidden states, the
    /// weight and their gradients are of that type; the bias, class weights and `∂L/∂b` f32.
    fn linear_cross_entropy(
        &self,
        hidden: &[f32],
        hidden_size: usize,
        head: Linear<'_, [f32]>,
        target: Target<'_>,
        class_weight: Option<&[f32]>,
        opts: &LinearCrossEntropyOptions,
    ) -> Result<LinearLoss<Vec<f32>>>;
    /// Pass 1 of cross-entropy over a vocabulary split across devices (SPEC.md §2): the
    /// statistics of each row of this shard's logits `x` (rows of `batch.shard.width`),
    /// [`SHARD_STATS`](crate::SHARD_STATS) f32 per row, to merge with the other shards'
    /// ([`crate::merge_shard_stats`]). Class-index targets only, into the whole vocabulary.
    fn shard_stats(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        opts: &CrossEntropyOptions,
    ) -> Result<Vec<f32>>;
    /// Pass 2: from every shard's statistics merged, the loss (the same on every shard) and,
    /// when `grad` asks for it, this shard's columns of the gradient of the reduced loss.
    fn shard_backward(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        merged: &[f32],
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>>;
    /// Row-wise entropy of rows of `cols` (SPEC.md §3), one value per row.
    fn entropy(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>>;
    /// Elementwise self-information `-log_b P`.
    fn self_information(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>>;
    /// A divergence between rows `P` and `Q`, reduced by `opts.reduction`, with the
    /// gradient w.r.t. Q's logits when `grad` is [`Grad::New`] (inputs as logits;
    /// [`Grad::InPlace`] is an error).
    ///
    /// ```no_run
    /// use xent::{Backend, Cpu, Divergence, Grad, InfoOptions};
    /// let opts = InfoOptions::default();
    /// let d = Cpu.divergence(&[0.8, 0.2], &[0.7, 0.3], 2, Divergence::Kl, &opts, Grad::None)?;
    /// assert!((d.loss[0] - 0.0242).abs() < 1e-4);
    /// # Ok::<(), xent::Error>(())
    /// ```
    fn divergence(
        &self,
        p: &[f32],
        q: &[f32],
        cols: usize,
        kind: Divergence,
        opts: &InfoOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>>;
    /// Joint-table statistics: rows of `cols = X·Y` cells with `X = x`; `5` values per table.
    fn joint_entropies(
        &self,
        j: &[f32],
        cols: usize,
        x: usize,
        opts: &InfoOptions,
    ) -> Result<Vec<f32>>;

    /// This backend with its row inputs and row-shaped results of `dtype` (SPEC.md §4): the
    /// rows (`x`, `p`, `q`, probability targets, binary targets) are rounded to it (exact for
    /// values that already are of it), computed in f32, and the row-shaped results (softmax,
    /// log-softmax, the activations, self-information, every gradient) rounded to it; class
    /// and element weights and the per-row and reduced results stay f32. The GPU holds such rows in `dtype`, moving
    /// half the bytes of f32. Joint tables take f32 only: an error at a half type. The
    /// result is `Sync`, so that it can take a part in [`crate::cross_entropy_split`].
    ///
    /// ```no_run
    /// use xent::{Backend, Cpu, DType, Gpu, SoftmaxOptions};
    /// let x = [1.0f32, 2.0, 3.0, 4.0, 1.0, 1.0];
    /// let opts = SoftmaxOptions::default();
    /// let cpu = Cpu.typed(DType::Bf16).softmax(&x, 3, &opts)?;
    /// let gpu = Gpu::new()?.typed(DType::Bf16).softmax(&x, 3, &opts)?;
    /// // Values of bf16 both, one unit in the last place apart at most.
    /// assert!(cpu.iter().zip(&gpu).all(|(a, b)| (a - b).abs() <= a / 128.0));
    /// # Ok::<(), xent::Error>(())
    /// ```
    fn typed(&self, dtype: DType) -> Box<dyn Backend + Sync + '_>;

    /// Row-wise softmax.
    fn softmax(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        self.softmax_kind(x, cols, SoftmaxKind::Softmax, opts)
    }
    /// Row-wise log-softmax.
    fn log_softmax(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        self.softmax_kind(x, cols, SoftmaxKind::LogSoftmax, opts)
    }
    /// Elementwise sigmoid.
    fn sigmoid(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::Sigmoid)
    }
    /// Elementwise log-sigmoid.
    fn log_sigmoid(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::LogSigmoid)
    }
    /// Elementwise logit.
    fn logit(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::Logit)
    }
}

impl Backend for Cpu {
    fn typed(&self, dtype: DType) -> Box<dyn Backend + Sync + '_> {
        if dtype == DType::F32 {
            return Box::new(Cpu);
        }
        Box::new(Rounded { inner: self, dtype })
    }
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        cpu::softmax(x, cols, kind, opts)
    }
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        cpu::logsumexp(x, cols, opts)
    }
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>> {
        cpu::activation(x, act)
    }
    fn cross_entropy(
        &self,
        x: &[f32],
        cols: usize,
        target: Target<'_>,
        weight: Option<&[f32]>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        cpu::cross_entropy(x, cols, target, weight, opts, grad)
    }
    fn bce_with_logits(
        &self,
        x: &[f32],
        cols: usize,
        target: &[f32],
        weights: BceWeights<'_>,
        opts: &BceOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        cpu::bce_with_logits(x, cols, target, weights, opts, grad)
    }
    fn linear_cross_entropy(
        &self,
        hidden: &[f32],
        hidden_size: usize,
        head: Linear<'_, [f32]>,
        target: Target<'_>,
        class_weight: Option<&[f32]>,
        opts: &LinearCrossEntropyOptions,
    ) -> Result<LinearLoss<Vec<f32>>> {
        cpu::linear_cross_entropy(hidden, hidden_size, head, target, class_weight, opts)
    }
    fn shard_stats(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        opts: &CrossEntropyOptions,
    ) -> Result<Vec<f32>> {
        cpu::shard_stats(x, batch, opts)
    }
    fn shard_backward(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        merged: &[f32],
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        cpu::shard_backward(x, batch, merged, opts, grad)
    }
    fn entropy(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        cpu::entropy(p, cols, opts)
    }
    fn self_information(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        cpu::self_information(p, cols, opts)
    }
    fn divergence(
        &self,
        p: &[f32],
        q: &[f32],
        cols: usize,
        kind: Divergence,
        opts: &InfoOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        cpu::divergence(p, q, cols, kind, opts, grad)
    }
    fn joint_entropies(
        &self,
        j: &[f32],
        cols: usize,
        x: usize,
        opts: &InfoOptions,
    ) -> Result<Vec<f32>> {
        cpu::joint_entropies(j, cols, x, opts)
    }
}

/// Reads an optional result back.
fn read(t: Option<Tensor>) -> Result<Option<Vec<f32>>> {
    t.map(|t| t.to_vec()).transpose()
}

/// Reads a loss, its gradient and its extras back.
fn download(out: Loss<Tensor>) -> Result<Loss<Vec<f32>>> {
    Ok(Loss {
        loss: out.loss.to_vec()?,
        grad: read(out.grad)?,
        z_loss: read(out.z_loss)?,
        entropy: read(out.entropy)?,
    })
}

/// Reads a loss back, its gradient from what were the logits for [`Grad::InPlace`].
fn in_place(out: Loss<Tensor>, grad: Grad, logits: Tensor) -> Result<Loss<Vec<f32>>> {
    if grad == Grad::InPlace {
        return download(Loss {
            grad: Some(logits),
            ..out
        });
    }
    download(out)
}

/// Uploads an optional vector (class or element weights, f32 whatever the rows' type) as a
/// one-row pooled tensor.
fn upload(gpu: &Gpu, v: Option<&[f32]>) -> Result<Option<Tensor>> {
    v.map(|v| Tensor::upload_pooled(gpu, v, (1, v.len()), DType::F32))
        .transpose()
}

impl Gpu {
    /// Rows of the slice paths' type ([`Gpu::slices`]) in a pooled tensor.
    fn rows_in(&self, x: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
        Tensor::upload_pooled(self, x, (rows, cols), self.slices)
    }

    /// Class indices (not probabilities) on the device, for rows of `cols` classes.
    fn targets(&self, target: Target<'_>, ignore_index: i64, cols: usize) -> Result<Targets> {
        match target {
            Target::I32(t) => Targets::from_i32(self, t),
            Target::I64(t) => {
                // A value beyond i32 is a bad target like any other (as on the CPU), not a
                // conversion failure.
                if t.iter().any(|&v| i32::try_from(v).is_err()) {
                    check_targets(t, ignore_index, cols)?;
                }
                Targets::from_i64(self, t)
            }
            Target::Probs(_) => Err(crate::Error::InvalidArgument(
                "this op takes class-index targets, not probabilities".into(),
            )),
        }
    }

    /// A shard's logits, targets and class weights on the device.
    fn shard_in(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        opts: &CrossEntropyOptions,
    ) -> Result<(Tensor, Targets, Option<Tensor>)> {
        let rows = crate::shard::shard_rows(x, batch.shard)?;
        let logits = self.rows_in(x, rows, batch.shard.width)?;
        let targets = self.targets(batch.targets, opts.ignore_index, batch.shard.classes)?;
        Ok((logits, targets, upload(self, batch.weight)?))
    }

    /// A pooled tensor for a row-shaped result, of the slice paths' type.
    fn rows_out(&self, rows: usize, cols: usize) -> Result<Tensor> {
        Tensor::pooled(self, (rows, cols), self.slices)
    }
}

/// The slice paths run on pooled tensors (from the context's pool of device buffers): a
/// repeated call of the same shape reuses the device memory of the last one.
impl Backend for Gpu {
    fn typed(&self, dtype: DType) -> Box<dyn Backend + Sync + '_> {
        Box::new(Gpu {
            slices: dtype,
            ..self.clone()
        })
    }
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        opts.validate()?;
        let rows = rows_of(x.len(), cols)?;
        let t = self.rows_in(x, rows, cols)?;
        let out = self.rows_out(rows, cols)?;
        t.softmax_into(&out, kind, opts)?;
        out.to_vec()
    }
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        opts.validate()?;
        let rows = rows_of(x.len(), cols)?;
        let t = self.rows_in(x, rows, cols)?;
        let out = Tensor::pooled(self, (rows, 1), DType::F32)?;
        t.logsumexp_into(&out, opts)?;
        out.to_vec()
    }
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>> {
        non_empty(x.len())?;
        let t = self.rows_in(x, 1, x.len())?;
        let out = self.rows_out(1, x.len())?;
        t.activation_into(&out, act)?;
        out.to_vec()
    }
    fn cross_entropy(
        &self,
        x: &[f32],
        cols: usize,
        target: Target<'_>,
        weight: Option<&[f32]>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let rows = rows_of(x.len(), cols)?;
        let logits = self.rows_in(x, rows, cols)?;
        let weight = upload(self, weight)?;
        let weight = weight.as_ref();
        let run = |t: CeTarget<'_>| logits.ce_with(t, weight, opts, grad, Tensor::pooled);
        let out = match target {
            Target::Probs(q) => run(CeTarget::Probs(&self.rows_in(q, rows, cols)?))?,
            t => run(CeTarget::Indices(&self.targets(
                t,
                opts.ignore_index,
                cols,
            )?))?,
        };
        in_place(out, grad, logits)
    }
    fn bce_with_logits(
        &self,
        x: &[f32],
        cols: usize,
        target: &[f32],
        weights: BceWeights<'_>,
        opts: &BceOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        grad.refuse_in_place("binary cross-entropies")?;
        let rows = rows_of(x.len(), cols)?;
        crate::options::check_len("target", Some(target.len()), x.len())?;
        let logits = self.rows_in(x, rows, cols)?;
        let target = self.rows_in(target, rows, cols)?;
        let pos_weight = upload(self, weights.pos_weight)?;
        let weight = upload(self, weights.weight)?;
        let weights = (pos_weight.as_ref(), weight.as_ref());
        let shape = (logits.bce_loss_shape(opts), Tensor::pooled as Alloc);
        download(logits.loss_with(shape, grad, |ws, enc, out| {
            logits.record_bce_with_logits(ws, enc, &target, weights, opts, out)
        })?)
    }
    fn linear_cross_entropy(
        &self,
        hidden: &[f32],
        hidden_size: usize,
        head: Linear<'_, [f32]>,
        target: Target<'_>,
        class_weight: Option<&[f32]>,
        opts: &LinearCrossEntropyOptions,
    ) -> Result<LinearLoss<Vec<f32>>> {
        opts.validate()?;
        let n = rows_of(hidden.len(), hidden_size)?;
        let v = rows_of(head.weight.len(), hidden_size)?;
        let h = self.rows_in(hidden, n, hidden_size)?;
        let weight = self.rows_in(head.weight, v, hidden_size)?;
        let bias = upload(self, head.bias)?;
        let class_weight = upload(self, class_weight)?;
        let targets = self.targets(target, opts.loss.ignore_index, v)?;
        let head = Linear {
            weight: &weight,
            bias: bias.as_ref(),
        };
        let out = h.linear_cross_entropy(head, &targets, class_weight.as_ref(), opts)?;
        Ok(LinearLoss {
            loss: out.loss.to_vec()?,
            grad_input: read(out.grad_input)?,
            grad_weight: read(out.grad_weight)?,
            grad_bias: read(out.grad_bias)?,
            z_loss: read(out.z_loss)?,
            entropy: read(out.entropy)?,
        })
    }
    fn shard_stats(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        opts: &CrossEntropyOptions,
    ) -> Result<Vec<f32>> {
        let (logits, targets, weight) = self.shard_in(x, batch, opts)?;
        let batch = ShardBatch {
            shard: batch.shard,
            targets: &targets,
            weight: weight.as_ref(),
        };
        logits.shard_stats(batch, opts)?.to_vec()
    }
    fn shard_backward(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        merged: &[f32],
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let (logits, targets, weight) = self.shard_in(x, batch, opts)?;
        crate::shard::check_stats(merged.len(), logits.rows())?;
        let merged = Tensor::upload_pooled(self, merged, (logits.rows(), SHARD_STATS), DType::F32)?;
        let batch = ShardBatch {
            shard: batch.shard,
            targets: &targets,
            weight: weight.as_ref(),
        };
        let out = logits.shard_backward(batch, &merged, opts, grad)?;
        in_place(out, grad, logits)
    }
    fn entropy(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        let rows = rows_of(p.len(), cols)?;
        let t = self.rows_in(p, rows, cols)?;
        let out = Tensor::pooled(self, (rows, 1), DType::F32)?;
        t.submit_with("entropy", |ws, enc| t.record_entropy(ws, enc, opts, &out))?;
        out.to_vec()
    }
    fn self_information(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        let rows = rows_of(p.len(), cols)?;
        let t = self.rows_in(p, rows, cols)?;
        let out = self.rows_out(rows, cols)?;
        t.submit_with("self-information", |ws, enc| {
            t.record_self_information(ws, enc, opts, &out)
        })?;
        out.to_vec()
    }
    fn divergence(
        &self,
        p: &[f32],
        q: &[f32],
        cols: usize,
        kind: Divergence,
        opts: &InfoOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        grad.refuse_in_place("divergences")?;
        let rows = rows_of(p.len(), cols)?;
        crate::options::check_len("Q", Some(q.len()), p.len())?;
        let pt = self.rows_in(p, rows, cols)?;
        let qt = self.rows_in(q, rows, cols)?;
        let shape = (pt.divergence_shape(opts), Tensor::pooled as Alloc);
        download(pt.loss_with(shape, grad, |ws, enc, out| {
            pt.record_divergence(ws, enc, &qt, kind, opts, out)
        })?)
    }
    fn joint_entropies(
        &self,
        j: &[f32],
        cols: usize,
        x: usize,
        opts: &InfoOptions,
    ) -> Result<Vec<f32>> {
        let rows = rows_of(j.len(), cols)?;
        let t = self.rows_in(j, rows, cols)?;
        let out = Tensor::pooled(self, (rows, 5), DType::F32)?;
        t.submit_with("joint entropies", |ws, enc| {
            t.record_joint_entropies(ws, enc, x, opts, &out)
        })?;
        out.to_vec()
    }
}

/// [`Backend::typed`] over a backend that computes in f32 (the CPU): the rows rounded to
/// `dtype` on the way in, the row-shaped results on the way out.
struct Rounded<'a> {
    inner: &'a (dyn Backend + Sync),
    dtype: DType,
}

impl Rounded<'_> {
    /// `x` rounded to the type: a copy, each part copied and rounded by one task while in
    /// cache.
    fn round<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        let dtype = self.dtype;
        if dtype == DType::F32 {
            return Cow::Borrowed(x);
        }
        let mut v = vec![0f32; x.len()];
        v.par_chunks_mut(CONVERT_CHUNK)
            .zip(x.par_chunks(CONVERT_CHUNK))
            .for_each(|(d, s)| {
                d.copy_from_slice(s);
                dtype.round_in_place(d);
            });
        Cow::Owned(v)
    }

    /// A result rounded to the type, in place.
    fn round_out(&self, mut v: Vec<f32>) -> Vec<f32> {
        let dtype = self.dtype;
        v.par_chunks_mut(CONVERT_CHUNK)
            .for_each(|d| dtype.round_in_place(d));
        v
    }

    /// A loss whose gradient is rounded to the type.
    fn round_grad(&self, out: Loss<Vec<f32>>) -> Loss<Vec<f32>> {
        Loss {
            grad: out.grad.map(|g| self.round_out(g)),
            ..out
        }
    }

    /// Errors at a half type: for the ops that take f32 only, as on the GPU.
    fn f32_only(&self, what: &str) -> Result<()> {
        if self.dtype.is_half() {
            return Err(crate::Error::InvalidArgument(format!(
                "{what}: f32 only, not {}",
                self.dtype
            )));
        }
        Ok(())
    }
}

impl Backend for Rounded<'_> {
    fn typed(&self, dtype: DType) -> Box<dyn Backend + Sync + '_> {
        Box::new(Rounded {
            inner: self.inner,
            dtype,
        })
    }
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        let y = self.inner.softmax_kind(&self.round(x), cols, kind, opts)?;
        Ok(self.round_out(y))
    }
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        self.inner.logsumexp(&self.round(x), cols, opts)
    }
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>> {
        let y = self.inner.activation(&self.round(x), act)?;
        Ok(self.round_out(y))
    }
    fn cross_entropy(
        &self,
        x: &[f32],
        cols: usize,
        target: Target<'_>,
        weight: Option<&[f32]>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let q;
        let target = match target {
            Target::Probs(p) => {
                q = self.round(p);
                Target::Probs(&q)
            }
            t => t,
        };
        let out = self
            .inner
            .cross_entropy(&self.round(x), cols, target, weight, opts, grad)?;
        Ok(self.round_grad(out))
    }
    fn bce_with_logits(
        &self,
        x: &[f32],
        cols: usize,
        target: &[f32],
        weights: BceWeights<'_>,
        opts: &BceOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let out = self.inner.bce_with_logits(
            &self.round(x),
            cols,
            &self.round(target),
            weights,
            opts,
            grad,
        )?;
        Ok(self.round_grad(out))
    }
    fn linear_cross_entropy(
        &self,
        hidden: &[f32],
        hidden_size: usize,
        head: Linear<'_, [f32]>,
        target: Target<'_>,
        class_weight: Option<&[f32]>,
        opts: &LinearCrossEntropyOptions,
    ) -> Result<LinearLoss<Vec<f32>>> {
        let weight = self.round(head.weight);
        let head = Linear {
            weight: &weight[..],
            bias: head.bias,
        };
        let out = self.inner.linear_cross_entropy(
            &self.round(hidden),
            hidden_size,
            head,
            target,
            class_weight,
            opts,
        )?;
        Ok(LinearLoss {
            grad_input: out.grad_input.map(|g| self.round_out(g)),
            grad_weight: out.grad_weight.map(|g| self.round_out(g)),
            ..out
        })
    }
    fn shard_stats(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        opts: &CrossEntropyOptions,
    ) -> Result<Vec<f32>> {
        self.inner.shard_stats(&self.round(x), batch, opts)
    }
    fn shard_backward(
        &self,
        x: &[f32],
        batch: ShardBatch<'_, Target<'_>, [f32]>,
        merged: &[f32],
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let out = self
            .inner
            .shard_backward(&self.round(x), batch, merged, opts, grad)?;
        Ok(self.round_grad(out))
    }
    fn entropy(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        self.inner.entropy(&self.round(p), cols, opts)
    }
    fn self_information(&self, p: &[f32], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
        let y = self.inner.self_information(&self.round(p), cols, opts)?;
        Ok(self.round_out(y))
    }
    fn divergence(
        &self,
        p: &[f32],
        q: &[f32],
        cols: usize,
        kind: Divergence,
        opts: &InfoOptions,
        grad: Grad,
    ) -> Result<Loss<Vec<f32>>> {
        let out = self
            .inner
            .divergence(&self.round(p), &self.round(q), cols, kind, opts, grad)?;
        Ok(self.round_grad(out))
    }
    fn joint_entropies(
        &self,
        j: &[f32],
        cols: usize,
        x: usize,
        opts: &InfoOptions,
    ) -> Result<Vec<f32>> {
        self.f32_only("joint tables")?;
        self.inner.joint_entropies(j, cols, x, opts)
    }
}
