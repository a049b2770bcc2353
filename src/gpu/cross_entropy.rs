//! Host side of shaders/cross_entropy.wgsl: the fused softmax cross-entropy loss and its
//! gradient, with class-index or probability targets.

use crate::gpu::context::{Placed, Region};
use crate::gpu::kernels::{
    Consts, KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE, partial_chunks,
};
use crate::gpu::reduce::{SUM_ITEMS, SumTo};
use crate::gpu::rows::{REDUCE_ITERS, RowLaunch, RowLoops};
use crate::gpu::tensor::{Alloc, GradOut, LossOut, Targets, Tensor};
use crate::gpu::workspace::{Workspace, begin_pass};
use crate::options::{
    CrossEntropyOptions, Grad, Loss, LossReduction, check_cross_entropy, check_len,
};
use crate::{Error, Result};

/// Twin of `Params` in shaders/cross_entropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CeParams {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) in_off: u32,
    pub(crate) out_off: u32,
    pub(crate) g: u32,
    pub(crate) t_off: u32,
    pub(crate) l_off: u32,
    pub(crate) row0: u32,
    pub(crate) ignore_index: i32,
    pub(crate) has_weight: u32,
    pub(crate) grad: u32,
    pub(crate) divide: u32,
    pub(crate) smoothing: f32,
    pub(crate) z: f32,
    pub(crate) scale: f32,
    pub(crate) segs: u32,
    pub(crate) span: u32,
    pub(crate) phase: u32,
    /// Softcap c (0: none).
    pub(crate) softcap: f32,
    /// Shard kernels: the shard's first class, the whole vocabulary's K, the first element
    /// of the statistics.
    pub(crate) col0: u32,
    pub(crate) classes: u32,
    pub(crate) s_off: u32,
}

impl CeParams {
    /// The parameters every launch of a batch of `rows × k` logits against `kind` starts
    /// from.
    pub(crate) fn base(
        kind: CeTarget<'_>,
        (rows, k): (usize, usize),
        weighted: bool,
        grad: bool,
        opts: &CrossEntropyOptions,
    ) -> Self {
        let mean = opts.reduction == LossReduction::Mean;
        // Soft targets' mean divides by the rows; the indices' by Σ w_y, known on the GPU.
        let (scale, divide) = match kind {
            CeTarget::Probs(_) if mean => (1.0 / rows as f32, false),
            CeTarget::Probs(_) => (1.0, false),
            CeTarget::Indices(_) => (1.0, mean),
        };
        CeParams {
            cols: k as u32,
            ignore_index: opts.ignore_index as i32,
            has_weight: u32::from(weighted),
            grad: u32::from(grad),
            divide: u32::from(divide),
            smoothing: opts.label_smoothing,
            z: opts.z_loss,
            scale,
            softcap: opts.softcap.unwrap_or(0.0),
            ..CeParams::default()
        }
    }
}

/// Targets one lane of `ce_targets` checks. Twin: `TARGET_ITEMS`.
const TARGET_ITEMS: usize = 16;
/// Targets one workgroup of `ce_targets` checks.
const TARGETS_PER_GROUP: usize = TARGET_ITEMS * WORKGROUP_SIZE as usize;

use Slot::{Read, ReadWrite, Uniform};

const CE_TARGETS: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_targets",
    bindings: &[
        (0, Uniform),
        (3, Read),
        (4, Read),
        (6, ReadWrite),
        (8, ReadWrite),
    ],
};

/// The class-index row kernels' bindings: logits read, gradient apart (or a token).
const CE_ROWS_BINDINGS: &[(u32, Slot)] = &[
    (0, Uniform),
    (1, Read),
    (2, ReadWrite),
    (3, Read),
    (4, Read),
    (5, ReadWrite),
    (6, ReadWrite),
    (7, Read),
    (10, ReadWrite),
    (11, ReadWrite),
    (12, ReadWrite),
];

/// The same with the gradient written over the logits.
const CE_ROWS_IN_PLACE_BINDINGS: &[(u32, Slot)] = &[
    (0, Uniform),
    (1, ReadWrite),
    (3, Read),
    (4, Read),
    (5, ReadWrite),
    (6, ReadWrite),
    (7, Read),
    (10, ReadWrite),
    (11, ReadWrite),
    (12, ReadWrite),
];

const CE_ROWS: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_rows",
    bindings: CE_ROWS_BINDINGS,
};

const CE_ROWS_IN_PLACE: KernelDef = KernelDef {
    shader: Shader::CrossEntropyInPlace,
    entry: "ce_rows",
    bindings: CE_ROWS_IN_PLACE_BINDINGS,
};

/// `ce_rows` for kept rows (`RowPlan::kept`): each row read once.
const CE_ROWS_KEPT: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_rows_kept",
    bindings: CE_ROWS_BINDINGS,
};

const CE_ROWS_KEPT_IN_PLACE: KernelDef = KernelDef {
    shader: Shader::CrossEntropyInPlace,
    entry: "ce_rows_kept",
    bindings: CE_ROWS_IN_PLACE_BINDINGS,
};

const CE_SOFT_ROWS: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_soft_rows",
    bindings: &[
        (0, Uniform),
        (1, Read),
        (2, ReadWrite),
        (4, Read),
        (5, ReadWrite),
        (7, Read),
        (9, Read),
        (10, ReadWrite),
        (11, ReadWrite),
        (12, ReadWrite),
    ],
};

const CE_SOFT_ROWS_IN_PLACE: KernelDef = KernelDef {
    shader: Shader::CrossEntropyInPlace,
    entry: "ce_soft_rows",
    bindings: &[
        (0, Uniform),
        (1, ReadWrite),
        (4, Read),
        (5, ReadWrite),
        (7, Read),
        (9, Read),
        (10, ReadWrite),
        (11, ReadWrite),
        (12, ReadWrite),
    ],
};

/// `ce_rows`: the stats pass and the gradient pass, two reductions; split rows run (m, d),
/// the gradient, then the loss.
const CE_LOOPS: RowLoops = RowLoops {
    passes: 2,
    reductions: 2,
    phases: 3,
    // The last phase gathers the pair, the first sums and the second sums.
    gathers: 3,
};

/// `ce_rows` or `ce_soft_rows` writing the rows' entropies: one reduction more (of the entropy
/// sum beside the pair), and a split row's later phases gather the segments' sums once more.
fn with_entropy(loops: RowLoops) -> RowLoops {
    RowLoops {
        reductions: loops.reductions + 1,
        gathers: loops.gathers + 1,
        ..loops
    }
}

/// `ce_soft_rows`: S, (m, d) and the loss/gradient passes, three reductions; split rows as
/// `ce_rows`.
const CE_SOFT_LOOPS: RowLoops = RowLoops {
    passes: 3,
    reductions: 3,
    phases: 3,
    // The last phase gathers the pair, the first sums and the second sums.
    gathers: 3,
};

const CE_FINISH: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_finish",
    bindings: &[(0, Uniform), (6, ReadWrite)],
};

/// Loop iterations of `ce_finish_sum`'s busiest lane: one block sum (shared/sum.wgsl).
const CE_FINISH_SUM_ITERS: usize = SUM_ITEMS + REDUCE_ITERS;

const CE_FINISH_SUM: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "ce_finish_sum",
    bindings: &[
        (0, Uniform),
        (5, ReadWrite),
        (6, ReadWrite),
        (7, Read),
        (8, ReadWrite),
    ],
};

#[cfg(feature = "cli")]
const UNFUSED_GATHER: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "unfused_gather",
    bindings: &[(0, Uniform), (1, Read), (3, Read), (5, ReadWrite)],
};

#[cfg(feature = "cli")]
const UNFUSED_GRAD: KernelDef = KernelDef {
    shader: Shader::CrossEntropy,
    entry: "unfused_grad",
    bindings: &[(0, Uniform), (1, Read), (2, ReadWrite), (3, Read)],
};

/// Cross-entropy's targets on the GPU: class indices, or probability rows shaped and typed
/// like the logits.
#[derive(Clone, Copy, Debug)]
pub enum CeTarget<'a> {
    /// One class index per row.
    Indices(&'a Targets),
    /// One probability row per row of logits.
    Probs(&'a Tensor),
}

/// The per-row extras a recorded cross-entropy writes beside the loss, from the same pass
/// (SPEC.md §2): each a `rows × 1` f32 tensor, or none.
#[derive(Clone, Copy, Debug, Default)]
pub struct CeExtras<'a> {
    /// The z-loss term `z·logsumexp(x)²` of each row (class indices only; 0 for an ignored
    /// row; the loss still includes it).
    pub z_loss: Option<&'a Tensor>,
    /// The entropy of each row's softmax, after the softcap (0 for an ignored row).
    pub entropy: Option<&'a Tensor>,
}

impl Tensor {
    /// Softmax cross-entropy of these logits (`rows × K`) against class indices, and the
    /// gradient of the reduced loss w.r.t. the logits, in one fused launch (SPEC.md §2).
    ///
    /// `weight` holds K class weights (an f32 tensor of `1 × K`, or any shape of K values,
    /// whatever the logits' type). With [`Grad::InPlace`] the gradient replaces the logits
    /// and [`Loss::grad`] is `None`. The loss is `rows × 1` for [`LossReduction::None`],
    /// else `1 × 1`, f32; the gradient is of the logits' type (f32, f16 or bf16: the math is
    /// f32 either way).
    ///
    /// Targets are checked on the GPU before anything is written: a target outside `[0, K)`
    /// that is not `ignore_index` returns [`Error::Target`] naming the first such row, and
    /// leaves the logits untouched. Reading that check back waits for the GPU.
    ///
    /// ```no_run
    /// use xent::{CrossEntropyOptions, Gpu, Grad, Targets, Tensor};
    /// let gpu = Gpu::new()?;
    /// let logits = Tensor::from_slice(&gpu, &[2.0, 0.5, -1.0, 0.0, 3.0, 1.0], 2, 3)?;
    /// let targets = Targets::from_i32(&gpu, &[0, 1])?;
    /// let out = logits.cross_entropy(&targets, None, &CrossEntropyOptions::default(), Grad::New)?;
    /// println!("loss {:?}, grad {:?}", out.loss.to_vec()?, out.grad.unwrap().to_vec()?);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn cross_entropy(
        &self,
        target: &Targets,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Tensor>> {
        self.ce_with(
            CeTarget::Indices(target),
            weight,
            opts,
            grad,
            Tensor::output,
        )
    }

    /// Softmax cross-entropy against probability targets (`rows × K` of the logits' type,
    /// soft labels):
    /// `-Σ_c w_c·q'_c·log_softmax(x)_c` with `q' = (1-ε)·q + ε/K`; `mean` divides by the rows
    /// (as PyTorch). `ignore_index` does not apply and `z_loss` must be 0. Otherwise as
    /// [`Tensor::cross_entropy`]; nothing is read back.
    pub fn cross_entropy_soft(
        &self,
        target: &Tensor,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        grad: Grad,
    ) -> Result<Loss<Tensor>> {
        self.ce_with(CeTarget::Probs(target), weight, opts, grad, Tensor::output)
    }

    /// The convenience forms: outputs from `alloc`, the per-row extras the options ask for
    /// among them ([`Loss::z_loss`], [`Loss::entropy`]).
    pub(crate) fn ce_with(
        &self,
        target: CeTarget<'_>,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        grad: Grad,
        alloc: Alloc,
    ) -> Result<Loss<Tensor>> {
        let per_row = |on: bool| {
            on.then(|| alloc(self.gpu(), (self.rows(), 1), crate::DType::F32))
                .transpose()
        };
        let (z_loss, entropy) = (per_row(opts.z_loss_output)?, per_row(opts.entropy_output)?);
        let extras = CeExtras {
            z_loss: z_loss.as_ref(),
            entropy: entropy.as_ref(),
        };
        let shape = (self.ce_loss_shape(opts.reduction), alloc);
        let out = self.loss_with(shape, grad, |ws, enc, out| {
            self.record_cross_entropy_extras(ws, enc, target, weight, opts, (out, extras))
        })?;
        Ok(Loss {
            z_loss,
            entropy,
            ..out
        })
    }

    /// Records [`Tensor::cross_entropy`] into the caller's encoder, writing into `out`
    /// (the loss `rows × 1` for [`LossReduction::None`], else `1 × 1`; the gradient `rows × K`
    /// or in place). Nothing is submitted, read back or, with a warm `ws`, allocated.
    ///
    /// The targets are checked on the GPU, and a batch with a bad one writes nothing (in
    /// place, the logits keep their values); the check is read later, for every batch at once,
    /// by [`Workspace::check_targets`].
    pub fn record_cross_entropy(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        target: &Targets,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        out: LossOut<'_>,
    ) -> Result<()> {
        let outputs = (out, CeExtras::default());
        self.record_cross_entropy_extras(
            ws,
            encoder,
            CeTarget::Indices(target),
            weight,
            opts,
            outputs,
        )
    }

    /// Records [`Tensor::cross_entropy_soft`] into the caller's encoder, writing into `out`
    /// (as [`Tensor::record_cross_entropy`]).
    pub fn record_cross_entropy_soft(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        target: &Tensor,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        out: LossOut<'_>,
    ) -> Result<()> {
        let outputs = (out, CeExtras::default());
        self.record_cross_entropy_extras(
            ws,
            encoder,
            CeTarget::Probs(target),
            weight,
            opts,
            outputs,
        )
    }

    /// Records cross-entropy against either kind of target, writing the loss and gradient
    /// into `out` and the per-row extras into the tensors `extras` gives (each `rows × 1`
    /// f32), from the same pass over the logits: the entropy costs no second read of them.
    /// The tensors decide what is written; options that ask for an extra
    /// ([`CrossEntropyOptions::z_loss_output`], [`CrossEntropyOptions::entropy_output`])
    /// without its tensor are an error.
    ///
    /// ```no_run
    /// use xent::{CeExtras, CeTarget, CrossEntropyOptions, GradOut, Gpu, LossOut, Targets, Tensor, Workspace};
    /// let gpu = Gpu::new()?;
    /// let logits = Tensor::from_slice(&gpu, &[2.0, 0.5, -1.0, 0.0, 3.0, 1.0], 2, 3)?;
    /// let targets = Targets::from_i32(&gpu, &[0, 2])?;
    /// let (loss, entropy) = (Tensor::zeros(&gpu, 1, 1)?, Tensor::zeros(&gpu, 2, 1)?);
    /// let mut ws = Workspace::new(&gpu);
    /// let mut enc = gpu.encoder();
    /// let out = LossOut { loss: &loss, grad: GradOut::InPlace };
    /// let extras = CeExtras { entropy: Some(&entropy), ..Default::default() };
    /// let opts = CrossEntropyOptions::default();
    /// logits.record_cross_entropy_extras(&mut ws, &mut enc, CeTarget::Indices(&targets), None, &opts, (out, extras))?;
    /// gpu.queue().submit([enc.finish()]);
    /// ws.check_targets()?;
    /// println!("per-token entropy {:?}", entropy.to_vec()?);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn record_cross_entropy_extras(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        target: CeTarget<'_>,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        (out, extras): (LossOut<'_>, CeExtras<'_>),
    ) -> Result<()> {
        match target {
            CeTarget::Indices(t) => {
                self.gpu().same(t.gpu())?;
                if t.len() != self.rows() {
                    return Err(Error::Shape(format!(
                        "{} targets for {} rows of logits",
                        t.len(),
                        self.rows()
                    )));
                }
            }
            CeTarget::Probs(q) => {
                self.gpu().same(q.gpu())?;
                self.check_dtype(q, "the probability targets")?;
                if (q.rows(), q.cols()) != (self.rows(), self.cols()) {
                    return Err(Error::Shape(format!(
                        "probability targets are {}×{}, the logits {}×{}",
                        q.rows(),
                        q.cols(),
                        self.rows(),
                        self.cols()
                    )));
                }
                if extras.z_loss.is_some() {
                    return Err(Error::InvalidArgument(
                        "z-loss is defined for class-index targets only".into(),
                    ));
                }
            }
        }
        let asked = [
            (opts.z_loss_output, extras.z_loss, "z_loss_output"),
            (opts.entropy_output, extras.entropy, "entropy_output"),
        ];
        for (on, tensor, name) in asked {
            match tensor {
                Some(t) => self.check_out(t, (self.rows(), 1), crate::DType::F32)?,
                None if on => {
                    return Err(Error::InvalidArgument(format!(
                        "the options ask for {name} but no tensor is given for it (CeExtras)"
                    )));
                }
                None => {}
            }
        }
        self.record_any(ws, encoder, target, weight, opts, (out, extras))
    }

    /// The loss's shape: one per row, or one.
    pub(crate) fn ce_loss_shape(&self, reduction: LossReduction) -> (usize, usize) {
        match reduction {
            LossReduction::None => (self.rows(), 1),
            LossReduction::Sum | LossReduction::Mean => (1, 1),
        }
    }

    fn record_any(
        &self,
        ws: &mut Workspace,
        enc: &mut wgpu::CommandEncoder,
        kind: CeTarget<'_>,
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        (out, extras): (LossOut<'_>, CeExtras<'_>),
    ) -> Result<()> {
        check_cross_entropy(opts, matches!(kind, CeTarget::Probs(_)))?;
        let gpu = self.gpu();
        gpu.same(ws.gpu())?;
        let (rows, k) = (self.rows(), self.cols());
        if let Some(w) = weight {
            gpu.same(w.gpu())?;
            check_len("weight", Some(w.len()), k)?;
            w.require_f32("class weights")?;
        }
        self.check_loss_out(&out, self.ce_loss_shape(opts.reduction))?;
        let grad = !matches!(out.grad, GradOut::None);
        let base = CeParams::base(kind, (rows, k), weight.is_some(), grad, opts);
        gpu.scoped("recording cross-entropy", || {
            let mut pass = begin_pass(enc, "xent cross-entropy");
            let step = Step::begin(
                ws,
                &mut pass,
                (kind, rows, k),
                weight,
                opts,
                (base, &out, extras),
            )?;
            step.record_rows(ws, &mut pass, self, 0, &out.grad)?;
            step.finish(ws, &mut pass, out.loss)
        })
    }
}

/// What the launches of one recorded cross-entropy batch share: its targets are checked and
/// the mean's denominator taken once over the whole batch ([`Step::begin`]), then its rows
/// go through the row kernel in one or more pieces ([`Step::record_rows`]; linear
/// cross-entropy's chunks of logits), then the loss is reduced ([`Step::finish`]).
pub(crate) struct Step<'a> {
    kind: CeTarget<'a>,
    /// The batch's rows and classes.
    rows: usize,
    cols: usize,
    /// The parameters every launch starts from.
    base: CeParams,
    /// The class weights, or the absent-input buffer.
    weight: Placed,
    /// One loss per row: the output itself without a reduction, else scratch.
    pub(crate) per_row: Placed,
    /// `[Σ w_y for mean, Σ w for smoothing]`.
    pub(crate) scalars: wgpu::Buffer,
    /// The target checks (class indices only).
    status: Option<wgpu::Buffer>,
    /// The per-row extras' tensors.
    extras: CeExtras<'a>,
    reduction: LossReduction,
}

impl<'a> Step<'a> {
    /// Records the batch's target checks and the sums its rows need (the mean's denominator
    /// Σ w_y, the smoothing's Σ w) into `pass`: the batch is `rows` rows of `k` classes
    /// against `kind`, `base` the parameters of every launch. The caller has checked the
    /// options and shapes.
    pub(crate) fn begin(
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        (kind, rows, k): (CeTarget<'a>, usize, usize),
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        (base, out, extras): (CeParams, &LossOut<'_>, CeExtras<'a>),
    ) -> Result<Self> {
        let step = Self::new(ws, (kind, rows, k), weight, opts, (base, out, extras));
        if let (CeTarget::Indices(t), Some(status)) = (kind, &step.status) {
            let denominator = (opts.reduction == LossReduction::Mean).then_some(&step.scalars);
            record_targets(ws, pass, (t, k), &step.weight, base, (status, denominator))?;
        }
        if let Some(w) = weight.filter(|_| opts.label_smoothing > 0.0) {
            let to = SumTo {
                dst: &step.scalars,
                index: 1,
                scale: 1.0,
                divide_by: None,
            };
            ws.record_sum(pass, w.buffer(), w.first_elem(), k, &to)?;
        }
        Ok(step)
    }

    /// The batch of a vocabulary shard (src/gpu/shard.rs): its targets checked against the
    /// whole vocabulary's `classes`, and no sums (the merged statistics hold them).
    pub(crate) fn begin_shard(
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        (t, rows, classes): (&'a Targets, usize, usize),
        opts: &CrossEntropyOptions,
        (base, out, extras): (CeParams, &LossOut<'_>, CeExtras<'a>),
    ) -> Result<Self> {
        let kind = CeTarget::Indices(t);
        let step = Self::new(ws, (kind, rows, classes), None, opts, (base, out, extras));
        record_shard_targets(ws, pass, (t, classes), base, step.status()?)?;
        Ok(step)
    }

    /// The batch's buffers: per-row losses, scalars, the target status for class indices.
    fn new(
        ws: &mut Workspace,
        (kind, rows, k): (CeTarget<'a>, usize, usize),
        weight: Option<&Tensor>,
        opts: &CrossEntropyOptions,
        (base, out, extras): (CeParams, &LossOut<'_>, CeExtras<'a>),
    ) -> Self {
        let gpu = ws.gpu().clone();
        let weight = weight.map_or_else(|| Placed::whole(&gpu.inner.dummy), Tensor::placed);
        let per_row = match opts.reduction {
            LossReduction::None => out.loss.placed(),
            _ => Placed::whole(&ws.scratch("xent per-row losses", rows as u64 * 4)),
        };
        let scalars = ws.scratch("xent loss scalars", 8);
        let status = match kind {
            CeTarget::Indices(_) => Some(ws.target_status()),
            CeTarget::Probs(_) => None,
        };
        Step {
            kind,
            rows,
            cols: k,
            base,
            weight,
            per_row,
            scalars,
            status,
            extras,
            reduction: opts.reduction,
        }
    }

    /// The target status (class indices only).
    pub(crate) fn status(&self) -> Result<&wgpu::Buffer> {
        self.status
            .as_ref()
            .ok_or_else(|| Error::Internal("class indices without a status buffer".into()))
    }

    /// The batch's loss from its per-row losses, once every row has been recorded.
    pub(crate) fn finish(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        loss: &Tensor,
    ) -> Result<()> {
        if self.reduction != LossReduction::None {
            self.record_reduced_loss(ws, pass, loss)
        } else {
            self.record_unreduced_finish(ws, pass)
        }
    }
}

/// Records `ce_targets` over the targets of a vocabulary shard's batch: checked against the
/// whole vocabulary's `classes` into `status`, no sums (the shard's weights hold none of the
/// other classes: the check reads none).
pub(crate) fn record_shard_targets(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    (t, classes): (&Targets, usize),
    base: CeParams,
    status: &wgpu::Buffer,
) -> Result<()> {
    let check = CeParams {
        cols: classes as u32,
        has_weight: 0,
        ..base
    };
    let dummy = Placed::whole(&ws.gpu().inner.dummy);
    record_targets(ws, pass, (t, classes), &dummy, check, (status, None))
}

/// Records `ce_finish`: the batch's target check kept in `status` and readied for the next.
pub(crate) fn record_batch_finish(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    status: &wgpu::Buffer,
    base: &CeParams,
) -> Result<()> {
    let finish = ws
        .gpu()
        .kernel(&CE_FINISH, VecWidth::for_len(base.cols as usize))?;
    let bindings = [(6, status.as_entire_buffer_binding())];
    ws.dispatch(pass, &finish, base, &bindings, 1, 0)
}

/// Records `ce_targets` over the targets `t` of rows of `k` classes: their check into
/// `status` and, for `mean`, the denominator Σ w_y into `denominator[0]`.
fn record_targets(
    ws: &mut Workspace,
    pass: &mut wgpu::ComputePass<'_>,
    (t, k): (&Targets, usize),
    weight: &Placed,
    base: CeParams,
    (status, denominator): (&wgpu::Buffer, Option<&wgpu::Buffer>),
) -> Result<()> {
    let gpu = t.gpu();
    let rows = t.len();
    let kernel = gpu.kernel(&CE_TARGETS, VecWidth::for_len(k))?;
    let per = gpu.items_per_dispatch(rows, 4, 1)?;
    let (chunks, groups) = partial_chunks(rows, per, TARGETS_PER_GROUP);
    // A single workgroup's total is the denominator itself: it goes straight there
    // (the same bits as a sum of one partial, one launch fewer).
    let direct = denominator.filter(|_| groups == 1);
    let partial = match direct {
        Some(dst) => dst.clone(),
        None => ws.scratch("xent partial weights", groups as u64 * 4),
    };
    for c in chunks {
        let (tb, t_off) = gpu.window(t.region(), c.start as u64 * 4, c.count as u64 * 4);
        let params = CeParams {
            rows: c.count as u32,
            out_off: c.first_partial as u32,
            t_off,
            row0: c.start as u32,
            ..base
        };
        let bindings = [
            (3, tb),
            (4, weight.binding()),
            (6, status.as_entire_buffer_binding()),
            (8, partial.as_entire_buffer_binding()),
        ];
        ws.dispatch(
            pass,
            &kernel,
            &params,
            &bindings,
            c.groups,
            TARGET_ITEMS + REDUCE_ITERS,
        )?;
    }
    if let (Some(dst), None) = (denominator, direct) {
        let to = SumTo {
            dst,
            index: 0,
            scale: 1.0,
            divide_by: None,
        };
        ws.record_sum(pass, &partial, 0, groups, &to)?;
    }
    Ok(())
}

impl Step<'_> {
    /// The row kernel over `logits`, rows `first ..` of the batch, in as many dispatches as
    /// the bindings need: per-row losses and the gradient into `grad`.
    pub(crate) fn record_rows(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        logits: &Tensor,
        first: usize,
        grad: &GradOut<'_>,
    ) -> Result<()> {
        let gpu = logits.gpu();
        let (def, loops, kept) = match (self.kind, grad) {
            (CeTarget::Indices(_), GradOut::InPlace) => {
                (&CE_ROWS_IN_PLACE, CE_LOOPS, Some(&CE_ROWS_KEPT_IN_PLACE))
            }
            (CeTarget::Indices(_), _) => (&CE_ROWS, CE_LOOPS, Some(&CE_ROWS_KEPT)),
            (CeTarget::Probs(_), GradOut::InPlace) => (&CE_SOFT_ROWS_IN_PLACE, CE_SOFT_LOOPS, None),
            (CeTarget::Probs(_), _) => (&CE_SOFT_ROWS, CE_SOFT_LOOPS, None),
        };
        let (z_out, h_out) = (self.extras.z_loss, self.extras.entropy);
        let consts = Consts::NONE
            .softcap(self.base.softcap > 0.0)
            .with("Z_OUT", u32::from(z_out.is_some()))
            .with("H_OUT", u32::from(h_out.is_some()));
        let loops = if h_out.is_some() {
            with_entropy(loops)
        } else {
            loops
        };
        let launch = RowLaunch::new(ws, (def, consts), loops, logits)?.kept_by(kept)?;
        let plan = launch.plan;
        let no_grad = ws.scratch("xent no gradient", 16);
        // Bound where an extra is absent (two, since both are written to).
        let no_z = ws.scratch("xent no z-loss output", 16);
        let no_h = ws.scratch("xent no entropy output", 16);
        for (r0, n) in launch.chunks() {
            let rows_window = |b| launch.window(b, (r0, n));
            let (xb, in_off) = rows_window(logits.region());
            // Per-row windows, the extras' at the same offset as the loss's (P.l_off).
            // The batch's row of this dispatch's first.
            let row0 = first + r0;
            let per_row = |b| gpu.window(b, row0 as u64 * 4, n as u64 * 4);
            let (lb, l_off) = per_row(self.per_row.region());
            let zb = match z_out {
                Some(t) => per_row(t.region()).0,
                None => no_z.as_entire_buffer_binding(),
            };
            let hb = match h_out {
                Some(t) => per_row(t.region()).0,
                None => no_h.as_entire_buffer_binding(),
            };
            let mut params = CeParams {
                rows: n as u32,
                in_off,
                g: plan.g,
                l_off,
                row0: row0 as u32,
                segs: plan.segs,
                span: plan.span,
                ..self.base
            };
            let mut bindings = vec![
                (1, xb),
                (4, self.weight.binding()),
                (5, lb),
                (7, self.scalars.as_entire_buffer_binding()),
                (11, zb),
                (12, hb),
            ];
            match grad {
                GradOut::Into(g) => {
                    let (gb, out_off) = rows_window(g.region());
                    params.out_off = out_off;
                    bindings.push((2, gb));
                }
                GradOut::None => bindings.push((2, no_grad.as_entire_buffer_binding())),
                GradOut::InPlace => {}
            }
            match (self.kind, &self.status) {
                (CeTarget::Indices(t), Some(status)) => {
                    let (tb, t_off) = per_row(t.region());
                    params.t_off = t_off;
                    bindings.push((3, tb));
                    bindings.push((6, status.as_entire_buffer_binding()));
                }
                (CeTarget::Probs(q), _) => {
                    let (qb, t_off) = launch.window(q.region(), (row0, n));
                    params.t_off = t_off;
                    bindings.push((9, qb));
                }
                (CeTarget::Indices(_), None) => {
                    return Err(Error::Internal(
                        "class indices without a status buffer".into(),
                    ));
                }
            }
            let phased = |phase| CeParams { phase, ..params };
            launch.record(ws, pass, n, phased, &bindings)?;
        }
        Ok(())
    }

    /// The per-row losses (scratch of their own under a reduction) summed into `loss` (scaled,
    /// or over the denominator); with class indices, fused with the batch's finish (a bad
    /// batch writes no loss).
    fn record_reduced_loss(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
        loss: &Tensor,
    ) -> Result<()> {
        let gpu = ws.gpu().clone();
        let rows = self.rows;
        let Some(status) = &self.status else {
            let to = SumTo {
                dst: loss.buffer(),
                index: loss.first_elem(),
                scale: self.base.scale,
                divide_by: (self.base.divide != 0).then_some(&self.scalars),
            };
            return ws.record_sum(pass, &self.per_row.buffer, 0, rows, &to);
        };
        let (src, first, n) = ws.record_partial_sums(pass, &self.per_row.buffer, 0, rows)?;
        let (lb, l_off) = gpu.window(Region::whole(&src), first as u64 * 4, n as u64 * 4);
        let params = CeParams {
            rows: n as u32,
            l_off,
            ..self.base
        };
        let bindings = [
            (5, lb),
            (6, status.as_entire_buffer_binding()),
            (7, self.scalars.as_entire_buffer_binding()),
            (8, gpu.window(loss.region(), 0, 4).0),
        ];
        let finish = gpu.kernel(&CE_FINISH_SUM, self.width())?;
        ws.dispatch(pass, &finish, &params, &bindings, 1, CE_FINISH_SUM_ITERS)
    }

    /// Without a reduction, the batch's finish alone (class indices only).
    fn record_unreduced_finish(
        &self,
        ws: &mut Workspace,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<()> {
        match &self.status {
            Some(status) => record_batch_finish(ws, pass, status, &self.base),
            None => Ok(()),
        }
    }

    /// The width of the kernels that read no logits (the weights, f32, at most).
    fn width(&self) -> VecWidth {
        VecWidth::for_len(self.cols)
    }
}

#[cfg(feature = "cli")]
impl Tensor {
    /// The unfused baseline's last two launches, recorded into `encoder`: from these
    /// log-probabilities, the per-row loss `-lp[y]` into `loss` (`rows × 1`) and the gradient
    /// `exp(lp) - one_hot(y)` into `grad`. For benchmarks ([`crate::bench::unfused`]).
    pub(crate) fn record_unfused_cross_entropy(
        &self,
        ws: &mut Workspace,
        encoder: &mut wgpu::CommandEncoder,
        target: &Targets,
        loss: &Tensor,
        grad: &Tensor,
    ) -> Result<()> {
        let gpu = self.gpu();
        self.require_f32("the unfused cross-entropy")?;
        self.check_out(grad, (self.rows(), self.cols()), crate::DType::F32)?;
        self.check_out(loss, (self.rows(), 1), crate::DType::F32)?;
        gpu.same(target.gpu())?;
        gpu.scoped("unfused cross-entropy", || {
            let (rows, k) = (self.rows(), self.cols());
            let width = VecWidth::for_len(k);
            let gather = gpu.kernel(&UNFUSED_GATHER, width)?;
            let grad_kernel = gpu.kernel(&UNFUSED_GRAD, width)?;
            let row_bytes = k as u64 * 4;
            let per = gpu.items_per_dispatch(rows, row_bytes, 1)?;
            let wg = WORKGROUP_SIZE as usize;
            let mut pass = begin_pass(encoder, "xent unfused cross-entropy");
            for r0 in (0..rows).step_by(per) {
                let n = per.min(rows - r0);
                let rows_window = |b| gpu.window(b, r0 as u64 * row_bytes, n as u64 * row_bytes);
                let (lp, in_off) = rows_window(self.region());
                let (gb, out_off) = rows_window(grad.region());
                let (tb, t_off) = gpu.window(target.region(), r0 as u64 * 4, n as u64 * 4);
                let (lb, l_off) = gpu.window(loss.region(), r0 as u64 * 4, n as u64 * 4);
                let params = CeParams {
                    rows: n as u32,
                    cols: k as u32,
                    in_off,
                    out_off,
                    t_off,
                    l_off,
                    ignore_index: -100,
                    ..CeParams::default()
                };
                let (lp2, tb2) = (lp.clone(), tb.clone());
                ws.dispatch(
                    &mut pass,
                    &gather,
                    &params,
                    &[(1, lp), (3, tb), (5, lb)],
                    n.div_ceil(wg),
                    0,
                )?;
                let vectors = n * (k / width.lanes());
                ws.dispatch(
                    &mut pass,
                    &grad_kernel,
                    &params,
                    &[(1, lp2), (2, gb), (3, tb2)],
                    vectors.div_ceil(wg),
                    0,
                )?;
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
        let (size, names) = wgsl_params(Shader::CrossEntropy);
        assert_eq!(size, std::mem::size_of::<CeParams>());
        assert_eq!(
            names,
            [
                "rows",
                "cols",
                "in_off",
                "out_off",
                "g",
                "t_off",
                "l_off",
                "row0",
                "ignore_index",
                "has_weight",
                "grad",
                "divide",
                "smoothing",
                "z",
                "scale",
                "segs",
                "span",
                "phase",
                "softcap",
                "col0",
                "classes",
                "s_off"
            ]
        );
    }
}
