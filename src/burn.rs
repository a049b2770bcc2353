//! xent's fused losses on [burn](https://burn.dev)'s wgpu tensors (feature `burn`, burn 0.22
//! without its `fusion` feature): [`cross_entropy`], [`linear_cross_entropy`] and the
//! distillation [`divergence`]s.
//!
//! burn and xent share one wgpu device: [`open`] opens a [`Gpu`] and a burn device on it,
//! [`device`] makes a burn device on a [`Gpu`] xent opened for it, [`init`] makes a [`Gpu`] on
//! a burn device before burn first uses it. The losses here then read burn's tensors where
//! they sit, in burn's own buffers, and write their results into buffers burn allocated: no
//! copy of the logits and no host round trip (only the 32-byte target check of cross-entropy is
//! read back, as in [`Tensor::cross_entropy`]).
//!
//! With autodiff, the forward pass computes the loss and the gradients of the inputs burn
//! tracks in one pass over the logits (kept for the backward pass, as Liger-Kernel does); the
//! backward pass only scales them by the incoming gradient. Class weights, targets and a
//! divergence's teacher get no gradient.
//!
//! ```no_run
//! use burn::tensor::{Distribution, Int, Tensor};
//! use xent::CrossEntropyOptions;
//!
//! let (gpu, device) = xent::burn::open(Default::default())?;
//! println!("{}", gpu.describe());
//! let device = device.autodiff();
//! let logits = Tensor::<2>::random([4, 10], Distribution::Default, &device).require_grad();
//! let targets = Tensor::<1, Int>::from_ints([1, 0, 9, 3], &device);
//! let loss = xent::burn::cross_entropy(logits.clone(), targets, None, &CrossEntropyOptions::default())?;
//! let grads = loss.backward();
//! let dlogits = logits.grad(&grads).unwrap();
//! # Ok::<(), xent::Error>(())
//! ```
//!
//! # Ordering
//!
//! burn records its work and submits it to the shared queue in batches; every function here
//! first has burn submit what it has recorded (so xent's kernels see the tensors' values),
//! then submits xent's work to the same queue, where burn's later work follows it. Nothing else
//! needs flushing by hand. Work burn runs on other threads' streams is submitted as well when
//! it wrote the tensors passed in.

use std::sync::Mutex;

use ::burn::backend::Autodiff;
use ::burn::backend::autodiff::checkpoint::base::Checkpointer;
use ::burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use ::burn::backend::autodiff::grads::Gradients;
use ::burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use ::burn::backend::ops::{FloatTensorOps, IntTensorOps};
use ::burn::backend::tensor::FloatTensor;
use ::burn::backend::wgpu::graphics::AutoGraphicsApi;
use ::burn::backend::wgpu::{
    AutoCompiler, CubeBackend, CubeTensor, RuntimeOptions, WgpuDevice, WgpuSetup, try_init_device,
    try_init_setup,
};
use ::burn::cubecl::Device as CubeDevice;
use ::burn::cubecl::wgpu::WgpuServer;
use ::burn::tensor::{DType as BurnDType, Device, FloatDType, Int, IntDType, Shape};
use burn_cubecl::kernel::into_contiguous;

use crate::gpu::{CeExtras, GradOut, LinearOut, LossOut, Workspace};
use crate::{
    CrossEntropyOptions, DType, Divergence, Error, Form, Gpu, GpuOptions, InfoOptions, Linear,
    LinearCrossEntropyOptions, LossReduction, Result, Targets, Tensor,
};

/// A burn tensor (burn's `Tensor<D, K>`).
pub type BurnTensor<const D: usize, K = ::burn::tensor::Float> = ::burn::tensor::Tensor<D, K>;

/// The burn devices shared with xent, and the [`Gpu`] each runs xent's kernels on.
static SHARED: Mutex<Vec<(WgpuDevice, Gpu)>> = Mutex::new(Vec::new());

/// A [`Gpu`] on the default adapter (as [`Gpu::with_options`]), made for burn
/// ([`GpuOptions::shared_buffers`] and [`GpuOptions::all_features`] set whatever `options`
/// say), and a burn device on it ([`device`]).
pub fn open(options: GpuOptions) -> Result<(Gpu, Device)> {
    let gpu = Gpu::with_options(GpuOptions {
        shared_buffers: true,
        all_features: true,
        ..options
    })?;
    let device = device(&gpu)?;
    Ok((gpu, device))
}

/// A burn device on `gpu`'s wgpu device, instance and queue: burn's tensors made on it (or on
/// its `.autodiff()`) can be passed to this module's losses. Each call registers a new burn
/// device (its own memory pools): make it once and clone it.
///
/// `gpu` must be one xent opened ([`Gpu::new`], [`Gpu::with_options`]; a [`Gpu::from_device`]
/// context has no adapter to hand burn: use [`init`] from burn's side then), made with
/// [`GpuOptions::shared_buffers`], because burn keeps several tensors in one buffer, and
/// [`GpuOptions::all_features`], because burn's kernels use what the adapter offers
/// ([`open`] sets both). Otherwise an [`Error::InvalidArgument`].
pub fn device(gpu: &Gpu) -> Result<Device> {
    if !gpu.inner.shared_buffers {
        return Err(Error::InvalidArgument(
            "a Gpu shared with burn needs GpuOptions { shared_buffers: true, .. }: burn keeps \
             several tensors in one buffer"
                .into(),
        ));
    }
    let (instance, adapter) = gpu.instance_adapter().ok_or_else(|| {
        Error::InvalidArgument(
            "this Gpu was made with Gpu::from_device and has no adapter to share: make it \
             with xent::burn::init on burn's device instead"
                .into(),
        )
    })?;
    let missing = adapter
        .features()
        .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
        .difference(gpu.device().features());
    if !missing.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "burn's kernels may use every feature of the adapter, and the device lacks \
             {missing:?}: make the Gpu with GpuOptions {{ all_features: true, .. }}"
        )));
    }
    let setup = WgpuSetup {
        instance: instance.clone(),
        adapter: adapter.clone(),
        device: gpu.device().clone(),
        queue: gpu.queue().clone(),
        backend: gpu.inner.info.backend,
    };
    let wgpu_device = try_init_device(setup, RuntimeOptions::default())
        .map_err(|e| Error::Burn(e.to_string()))?;
    lock().push((wgpu_device.clone(), gpu.clone()));
    Ok(Device::new(wgpu_device))
}

/// A [`Gpu`] on burn's wgpu device `device`, which this call brings up (through burn's
/// `try_init_setup`, on the graphics API the device names or the first one this machine
/// has): call it before anything else uses `device`, which then runs burn's work and xent's.
/// `options.shared_buffers` is set whatever it was. An error if burn has brought `device` up
/// already, or cannot.
///
/// ```no_run
/// use burn::backend::wgpu::WgpuDevice;
/// let gpu = xent::burn::init(&WgpuDevice::default(), Default::default())?;
/// let device = burn::tensor::Device::new(WgpuDevice::default()).autodiff();
/// # Ok::<(), xent::Error>(())
/// ```
pub fn init(device: &WgpuDevice, options: GpuOptions) -> Result<Gpu> {
    let setup = try_init_setup::<AutoGraphicsApi>(device, RuntimeOptions::default())
        .map_err(|e| Error::Burn(e.to_string()))?;
    let options = GpuOptions {
        shared_buffers: true,
        ..options
    };
    let gpu = Gpu::from_device(setup.device, setup.queue, options)?;
    lock().push((device.clone(), gpu.clone()));
    Ok(gpu)
}

/// The [`Gpu`] xent runs on for burn's `device` (autodiff or not), if it is shared: made by
/// [`device`] or [`init`].
pub fn gpu(device: &Device) -> Option<Gpu> {
    let inner = device.clone().inner();
    lock()
        .iter()
        .find(|(d, _)| Device::new(d.clone()) == inner)
        .map(|(_, g)| g.clone())
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(WgpuDevice, Gpu)>> {
    SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The [`Gpu`] of a tensor's device, or an error naming what to do.
fn shared_gpu(device: &CubeDevice) -> Result<Gpu> {
    let CubeDevice::Wgpu(device) = device else {
        return Err(Error::Burn(format!(
            "the tensors are on {device:?}, not a wgpu device"
        )));
    };
    lock()
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, g)| g.clone())
        .ok_or_else(|| {
            Error::Burn(format!(
                "{device:?} is not shared with xent: make it with xent::burn::device or \
                 xent::burn::init"
            ))
        })
}

/// Softmax cross-entropy of burn logits (`N × K`) against class indices (`N`, any integer
/// type), with optional class weights (`K`), under every option of [`CrossEntropyOptions`]
/// but the per-row extras (PyTorch's `F.cross_entropy` semantics, SPEC.md §2): the loss, `[1]`
/// reduced or `[N]` for [`LossReduction::None`], f32, on the logits' device. On an autodiff
/// device the logits' gradient flows back through it.
///
/// Errors: shapes that do not match, tensors on different devices or on a device not shared
/// with xent ([`device`], [`init`]), logits not f32/f16/bf16, a target outside `[0, K)` that
/// is not `ignore_index` ([`Error::Target`]), a failure of the device.
pub fn cross_entropy(
    logits: BurnTensor<2>,
    targets: BurnTensor<1, Int>,
    weight: Option<BurnTensor<1>>,
    opts: &CrossEntropyOptions,
) -> Result<BurnTensor<1>> {
    opts.validate()?;
    if opts.z_loss_output || opts.entropy_output {
        return Err(Error::InvalidArgument(
            "the per-row extras (z_loss_output, entropy_output) are not returned through burn"
                .into(),
        ));
    }
    let [n, k] = logits.dims();
    if targets.dims() != [n] {
        return Err(Error::Shape(format!(
            "{:?} targets for {n} rows of logits",
            targets.dims()
        )));
    }
    if let Some(w) = &weight
        && w.dims() != [k]
    {
        return Err(Error::Shape(format!(
            "{:?} class weights for {k} classes",
            w.dims()
        )));
    }
    let device = logits.device();
    if targets.device() != device || weight.as_ref().is_some_and(|w| w.device() != device) {
        return Err(Error::DeviceMismatch);
    }
    let targets = int_primitive(targets)?;
    let weight = weight.map(constant).transpose()?;
    let opts = *opts;
    let per_row = opts.reduction == LossReduction::None;
    fused([float_primitive(logits)?], per_row, move |[x], [grad]| {
        let (loss, dx) = run_cross_entropy(x, targets, weight, &opts, grad)?;
        Ok((loss, [dx]))
    })
}

/// A divergence between a teacher's logits `p` and a student's `q` (both `N × K`, same
/// type), per row or reduced by `opts.reduction`, f32, with the student's gradient flowing
/// back on an autodiff device (the teacher gets none): [`Tensor::divergence`] with
/// `opts.form` [`Form::Logits`] (any other form is an error). Temperature and softcap apply
/// to both sides; the gradient is that of the value as defined (no `T²` factor).
///
/// Errors as [`cross_entropy`]'s, and [`Divergence::CrossEntropy`] is refused here (use
/// `Kl`: it differs from the cross-entropy by the teacher's entropy, a constant).
pub fn divergence(
    p: BurnTensor<2>,
    q: BurnTensor<2>,
    kind: Divergence,
    opts: &InfoOptions,
) -> Result<BurnTensor<1>> {
    opts.validate()?;
    if opts.form != Form::Logits {
        return Err(Error::InvalidArgument(
            "divergences of burn tensors take logits: use Form::Logits".into(),
        ));
    }
    if kind == Divergence::CrossEntropy {
        return Err(Error::InvalidArgument(
            "use Divergence::Kl: it has the same gradient w.r.t. the student".into(),
        ));
    }
    if p.dims() != q.dims() {
        return Err(Error::Shape(format!(
            "the teacher is {:?}, the student {:?}",
            p.dims(),
            q.dims()
        )));
    }
    if p.device() != q.device() {
        return Err(Error::DeviceMismatch);
    }
    let p = constant(p)?;
    let opts = *opts;
    let per_row = opts.reduction == crate::DivReduction::None;
    fused([float_primitive(q)?], per_row, move |[q], [grad]| {
        let (loss, dq) = run_divergence(p, q, kind, &opts, grad)?;
        Ok((loss, [dq]))
    })
}

/// Linear cross-entropy of burn tensors: the cross-entropy of the logits `h·Wᵀ + b` of the
/// hidden states `hidden` (`N × H`) through the layer `weight` (`V × H`, one row per class,
/// the hidden states' type: PyTorch's and Liger-Kernel's layout; a burn `nn::Linear` keeps
/// `H × V`: pass its `weight.val().transpose()`, copied once) and `bias` (`V`, f32) against
/// class indices, with optional class weights (`V`): [`Tensor::linear_cross_entropy`], whose
/// logits never exist whole (chunks of `opts.chunk_rows` or `opts.chunk_bytes`). The loss
/// is `[1]` reduced or `[N]` for [`LossReduction::None`], f32.
///
/// On an autodiff device the gradients of the hidden states, the weight and the bias flow
/// back, each computed in the forward pass only when its tensor is tracked (`opts.grad_*` are
/// set accordingly; what they say is ignored). Through autodiff the loss must be reduced
/// (mean or sum): the weight's gradient of a per-row loss weighted by an incoming gradient is
/// not a multiple of the one xent computes.
///
/// Errors as [`cross_entropy`]'s, and a per-row loss through autodiff, a bias that is not f32,
/// a weight of another type than the hidden states.
pub fn linear_cross_entropy(
    hidden: BurnTensor<2>,
    (weight, bias): (BurnTensor<2>, Option<BurnTensor<1>>),
    targets: BurnTensor<1, Int>,
    class_weight: Option<BurnTensor<1>>,
    opts: &LinearCrossEntropyOptions,
) -> Result<BurnTensor<1>> {
    opts.validate()?;
    let ce = opts.loss;
    if ce.z_loss_output || ce.entropy_output {
        return Err(Error::InvalidArgument(
            "the per-row extras (z_loss_output, entropy_output) are not returned through burn"
                .into(),
        ));
    }
    let ([n, h], [v, wh]) = (hidden.dims(), weight.dims());
    if wh != h {
        return Err(Error::Shape(format!(
            "the weight is {v}×{wh}, the hidden states {n}×{h}: both need {h} columns"
        )));
    }
    for (what, len) in [
        ("targets", Some(targets.dims()[0]).filter(|&t| t != n)),
        (
            "bias values",
            bias.as_ref().map(|b| b.dims()[0]).filter(|&b| b != v),
        ),
        (
            "class weights",
            class_weight
                .as_ref()
                .map(|c| c.dims()[0])
                .filter(|&c| c != v),
        ),
    ] {
        if let Some(len) = len {
            return Err(Error::Shape(format!(
                "{len} {what} for {n} rows of {v} classes"
            )));
        }
    }
    let device = hidden.device();
    let others = [weight.device(), targets.device()]
        .into_iter()
        .chain(bias.as_ref().map(BurnTensor::device))
        .chain(class_weight.as_ref().map(BurnTensor::device));
    for other in others {
        if other != device {
            return Err(Error::DeviceMismatch);
        }
    }
    let targets = int_primitive(targets)?;
    let class_weight = class_weight.map(constant).transpose()?;
    let opts = *opts;
    let reduced = ce.reduction != LossReduction::None;
    let (hidden, weight) = (float_primitive(hidden)?, float_primitive(weight)?);
    match bias {
        Some(bias) => {
            let inputs = [hidden, weight, float_primitive(bias)?];
            fused_reduced(inputs, reduced, move |[h, w, b], [gh, gw, gb]| {
                let run = (targets, class_weight, &opts);
                let (loss, [dh, dw, db]) = run_linear(h, w, Some(b), run, [gh, gw, gb])?;
                Ok((loss, [dh, dw, db]))
            })
        }
        None => fused_reduced([hidden, weight], reduced, move |[h, w], [gh, gw]| {
            let run = (targets, class_weight, &opts);
            let (loss, [dh, dw, _]) = run_linear(h, w, None, run, [gh, gw, false])?;
            Ok((loss, [dh, dw]))
        }),
    }
}

/// [`fused`] for a loss whose gradients through autodiff need it reduced: an error otherwise
/// (when any input is tracked).
fn fused_reduced<const N: usize>(
    inputs: [Float; N],
    reduced: bool,
    run: impl FnOnce([CubeTensor; N], [bool; N]) -> Result<(CubeTensor, [Option<CubeTensor>; N])>,
) -> Result<BurnTensor<1>> {
    if !reduced && inputs.iter().any(|x| !matches!(x, Float::Plain(_))) {
        return Err(Error::InvalidArgument(
            "linear cross-entropy through burn's autodiff takes the mean or sum reduction".into(),
        ));
    }
    fused(inputs, false, run)
}

/// A float primitive of one of the backends this module runs on.
enum Float {
    Plain(CubeTensor),
    Tracked(FloatTensor<Autodiff<CubeBackend>>),
    Balanced(FloatTensor<Autodiff<CubeBackend, BalancedCheckpointing>>),
}

impl Float {
    /// The values, without the autodiff graph.
    fn into_inner(self) -> CubeTensor {
        match self {
            Float::Plain(t) => t,
            Float::Tracked(t) | Float::Balanced(t) => t.into_primitive(),
        }
    }
}

fn float_primitive<const D: usize>(t: BurnTensor<D>) -> Result<Float> {
    let tried = |e: ::burn::tensor::PrimitiveConversionError| format!("{e:?}");
    let plain = t.clone().try_into_primitive::<CubeBackend>().map_err(tried);
    let tracked = || {
        t.clone()
            .try_into_primitive::<Autodiff<CubeBackend>>()
            .map_err(tried)
    };
    let balanced = || {
        t.clone()
            .try_into_primitive::<Autodiff<CubeBackend, BalancedCheckpointing>>()
            .map_err(tried)
    };
    plain
        .map(Float::Plain)
        .or_else(|e| tracked().map(Float::Tracked).map_err(|f| (e, f)))
        .or_else(|(e, f)| {
            balanced().map(Float::Balanced).map_err(|g| {
                Error::Burn(format!(
                    "a tensor xent cannot run on (burn's wgpu backend without fusion, autodiff \
                     or not): {e}; {f}; {g}"
                ))
            })
        })
}

/// A float tensor's values, without its autodiff graph: an input that gets no gradient.
fn constant<const D: usize>(t: BurnTensor<D>) -> Result<CubeTensor> {
    Ok(float_primitive(t)?.into_inner())
}

fn int_primitive(t: BurnTensor<1, Int>) -> Result<CubeTensor> {
    let tried = |e: ::burn::tensor::PrimitiveConversionError| format!("{e:?}");
    t.clone()
        .try_into_primitive::<CubeBackend>()
        .map_err(tried)
        .or_else(|e| {
            t.clone()
                .try_into_primitive::<Autodiff<CubeBackend>>()
                .map_err(|f| (e, tried(f)))
        })
        .or_else(|(e, f)| {
            t.try_into_primitive::<Autodiff<CubeBackend, BalancedCheckpointing>>()
                .map_err(|g| {
                    Error::Burn(format!(
                        "targets xent cannot read (burn's wgpu backend without fusion): {e}; \
                         {f}; {}",
                        tried(g)
                    ))
                })
        })
}

/// Runs a fused loss on the tensors `inputs` whose gradients it computes: `run(inputs,
/// wanted)` returns the loss and, for each input `wanted`, its gradient. Without autodiff
/// nothing is wanted. On an autodiff device (every input on the same one) the inputs that are
/// tracked are wanted, and the result carries a backward step that scales their kept
/// gradients by the incoming one (`[N]`, one per row, when `per_row`, else `[1]`).
fn fused<const N: usize>(
    inputs: [Float; N],
    per_row: bool,
    run: impl FnOnce([CubeTensor; N], [bool; N]) -> Result<(CubeTensor, [Option<CubeTensor>; N])>,
) -> Result<BurnTensor<1>> {
    let mixed =
        || Error::Burn("the tensors are not all on one device, with or without autodiff".into());
    let first = inputs.iter().map(std::mem::discriminant).next();
    if inputs
        .iter()
        .any(|x| Some(std::mem::discriminant(x)) != first)
    {
        return Err(mixed());
    }
    match inputs.first() {
        Some(Float::Tracked(_)) => {
            let xs = inputs.into_iter().filter_map(|x| match x {
                Float::Tracked(t) => Some(t),
                _ => None,
            });
            let xs = array(xs.collect(), mixed)?;
            let loss = fused_tracked::<NoCheckpointing, N>(xs, per_row, run)?;
            Ok(BurnTensor::from_primitive::<Autodiff<CubeBackend>>(loss))
        }
        Some(Float::Balanced(_)) => {
            let xs = inputs.into_iter().filter_map(|x| match x {
                Float::Balanced(t) => Some(t),
                _ => None,
            });
            let xs = array(xs.collect(), mixed)?;
            let loss = fused_tracked::<BalancedCheckpointing, N>(xs, per_row, run)?;
            Ok(BurnTensor::from_primitive::<
                Autodiff<CubeBackend, BalancedCheckpointing>,
            >(loss))
        }
        _ => {
            let xs = inputs.map(Float::into_inner);
            Ok(BurnTensor::from_primitive::<CubeBackend>(
                run(xs, [false; N])?.0,
            ))
        }
    }
}

/// `N` values as an array, or `err()` if there are not `N`.
fn array<T, const N: usize>(v: Vec<T>, err: impl FnOnce() -> Error) -> Result<[T; N]> {
    v.try_into().map_err(|_| err())
}

/// Whether burn's autodiff wants `x`'s gradient (it requires one, or something computed
/// from it does).
fn tracked<C: CheckpointStrategy>(x: &FloatTensor<Autodiff<CubeBackend, C>>) -> bool {
    matches!(
        KeptGradients
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful(),
        OpsKind::Tracked(_)
    )
}

fn fused_tracked<C: CheckpointStrategy, const N: usize>(
    xs: [FloatTensor<Autodiff<CubeBackend, C>>; N],
    per_row: bool,
    run: impl FnOnce([CubeTensor; N], [bool; N]) -> Result<(CubeTensor, [Option<CubeTensor>; N])>,
) -> Result<FloatTensor<Autodiff<CubeBackend, C>>> {
    let wanted = xs.each_ref().map(tracked::<C>);
    let (xs, nodes): (Vec<_>, Vec<_>) = xs.into_iter().map(|x| x.into_parts()).unzip();
    let lost = || Error::Internal("a fused loss lost an input".into());
    let (xs, nodes) = (array(xs, lost)?, array(nodes, lost)?);
    let (loss, grads) = run(xs, wanted)?;
    Ok(
        match KeptGradients.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((grads, per_row), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        },
    )
}

/// The backward step of a fused loss: each gradient computed with the loss, times the
/// incoming gradient (one per row, or one).
#[derive(Debug)]
struct KeptGradients;

impl<const N: usize> Backward<CubeBackend, N> for KeptGradients {
    type State = ([Option<CubeTensor>; N], bool);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let incoming = grads.consume::<CubeBackend>(&ops.node);
        let (kept, per_row) = ops.state;
        for (parent, grad) in ops.parents.into_iter().zip(kept) {
            let (Some(parent), Some(grad)) = (parent, grad) else {
                continue;
            };
            let mut shape = vec![1; grad.meta.shape().num_dims()];
            if per_row {
                shape[0] = grad.meta.shape()[0];
            }
            let incoming = CubeBackend::float_reshape(incoming.clone(), Shape::from(shape));
            let incoming = if incoming.dtype == grad.dtype {
                incoming
            } else {
                CubeBackend::float_cast(incoming, FloatDType::from(grad.dtype))
            };
            grads.register::<CubeBackend>(parent.id, CubeBackend::float_mul(grad, incoming));
        }
    }
}

/// xent's type for a burn float type.
fn dtype_of(t: &CubeTensor) -> Result<DType> {
    match t.dtype {
        BurnDType::F32 => Ok(DType::F32),
        BurnDType::F16 => Ok(DType::F16),
        BurnDType::BF16 => Ok(DType::Bf16),
        other => Err(Error::Burn(format!(
            "xent reads f32, f16 or bf16 logits, not {other:?}"
        ))),
    }
}

/// A contiguous burn tensor of `shape` and `dtype` on `like`'s device, for xent to write:
/// uninitialized, or NaN under [`GpuOptions::poison_outputs`] (so that what xent leaves
/// unwritten shows).
fn empty(gpu: &Gpu, like: &CubeTensor, shape: &[usize], dtype: BurnDType) -> CubeTensor {
    let shape = Shape::from(shape.to_vec());
    if gpu.inner.poison_outputs {
        return CubeBackend::float_full(shape, f32::NAN.into(), &like.device, dtype.into());
    }
    let handle = like.client.empty(shape.num_elements() * dtype.size());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

/// burn's tensors in their buffers, as xent sees them, held in place while xent's work is
/// recorded and submitted.
struct Views {
    gpu: Gpu,
    /// burn's claims on the allocations (`ManagedResource`s).
    held: Vec<Box<dyn std::any::Any>>,
}

impl Views {
    fn new(gpu: Gpu) -> Self {
        Self {
            gpu,
            held: Vec::new(),
        }
    }

    /// `t`'s buffer and offset, kept in place until `self` drops.
    fn place(&mut self, t: &CubeTensor) -> Result<(wgpu::Buffer, u64)> {
        let held = t
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(t.handle.clone())
            .map_err(|e| Error::Burn(format!("{e:?}")))?;
        let resource = held.resource();
        let place = (resource.buffer.clone(), resource.offset);
        self.held.push(Box::new(held));
        Ok(place)
    }

    /// Class-index targets as xent's (of any integer type: i32 is read in place) and class
    /// weights as an f32 tensor (`1 × len`).
    fn class_inputs(
        &mut self,
        targets: CubeTensor,
        weight: Option<CubeTensor>,
    ) -> Result<(Targets, Option<Tensor>)> {
        let targets = into_contiguous(match targets.dtype {
            BurnDType::I32 => targets,
            _ => CubeBackend::int_cast(targets, IntDType::I32),
        });
        let (buffer, offset) = self.place(&targets)?;
        let targets = Targets::from_buffer(&self.gpu, buffer, offset, targets.meta.shape()[0])?;
        let weight = weight
            .map(|w| {
                let w = into_contiguous(match w.dtype {
                    BurnDType::F32 => w,
                    _ => CubeBackend::float_cast(w, FloatDType::F32),
                });
                self.tensor(&w, 1, w.meta.shape()[0])
            })
            .transpose()?;
        Ok((targets, weight))
    }

    /// `t` (contiguous, `rows × cols`) as an xent tensor.
    fn tensor(&mut self, t: &CubeTensor, rows: usize, cols: usize) -> Result<Tensor> {
        let (buffer, offset) = self.place(t)?;
        Tensor::from_buffer(&self.gpu, buffer, offset, rows, cols, dtype_of(t)?)
    }
}

/// Has burn submit what it recorded, so that xent's work follows it on the queue.
fn flush(t: &CubeTensor) -> Result<()> {
    t.client.flush().map_err(|e| Error::Burn(format!("{e:?}")))
}

/// The outputs of a fused loss over `x` (contiguous, `n × k`): a loss of `loss_rows` f32 and,
/// when `grad`, a gradient like `x`, in buffers burn allocates; `record` writes them from
/// `x`'s view (with whatever else `views` holds by then), after burn's recorded work.
fn run_loss(
    mut views: Views,
    x: &CubeTensor,
    (loss_rows, grad): (usize, bool),
    what: &str,
    record: impl FnOnce(&mut Workspace, &mut wgpu::CommandEncoder, &Tensor, LossOut<'_>) -> Result<()>,
) -> Result<(CubeTensor, Option<CubeTensor>)> {
    let gpu = views.gpu.clone();
    let (n, k) = (x.meta.shape()[0], x.meta.shape()[1]);
    let loss = empty(&gpu, x, &[loss_rows], BurnDType::F32);
    let dx = grad.then(|| empty(&gpu, x, &[n, k], x.dtype));
    let x_view = views.tensor(x, n, k)?;
    let loss_view = views.tensor(&loss, loss_rows, 1)?;
    let grad_view = dx.as_ref().map(|g| views.tensor(g, n, k)).transpose()?;
    flush(x)?;
    let out = LossOut {
        loss: &loss_view,
        grad: grad_view.as_ref().map_or(GradOut::None, GradOut::Into),
    };
    gpu.run_checked(what, |ws, enc| record(ws, enc, &x_view, out))?;
    Ok((loss, dx))
}

fn run_cross_entropy(
    logits: CubeTensor,
    targets: CubeTensor,
    weight: Option<CubeTensor>,
    opts: &CrossEntropyOptions,
    grad: bool,
) -> Result<(CubeTensor, Option<CubeTensor>)> {
    let gpu = shared_gpu(&logits.device)?;
    dtype_of(&logits)?;
    let logits = into_contiguous(logits);
    let n = logits.meta.shape()[0];
    let mut views = Views::new(gpu);
    let (t, w) = views.class_inputs(targets, weight)?;
    let per_row = opts.reduction == LossReduction::None;
    let shape = (if per_row { n } else { 1 }, grad);
    run_loss(
        views,
        &logits,
        shape,
        "cross-entropy of burn tensors",
        |ws, enc, x, out| x.record_cross_entropy(ws, enc, &t, w.as_ref(), opts, out),
    )
}

fn run_divergence(
    p: CubeTensor,
    q: CubeTensor,
    kind: Divergence,
    opts: &InfoOptions,
    grad: bool,
) -> Result<(CubeTensor, Option<CubeTensor>)> {
    let gpu = shared_gpu(&q.device)?;
    if p.dtype != q.dtype {
        return Err(Error::Burn(format!(
            "the teacher is {:?}, the student {:?}",
            p.dtype, q.dtype
        )));
    }
    dtype_of(&q)?;
    let (p, q) = (into_contiguous(p), into_contiguous(q));
    let (n, k) = (q.meta.shape()[0], q.meta.shape()[1]);
    let mut views = Views::new(gpu);
    let p_view = views.tensor(&p, n, k)?;
    let per_row = opts.reduction == crate::DivReduction::None;
    let shape = (if per_row { n } else { 1 }, grad);
    run_loss(
        views,
        &q,
        shape,
        "divergence of burn tensors",
        |ws, enc, q, out| p_view.record_divergence(ws, enc, q, kind, opts, out),
    )
}

/// The linear cross-entropy's inputs besides the layer: targets, class weights, options.
type LinearRun<'a> = (
    CubeTensor,
    Option<CubeTensor>,
    &'a LinearCrossEntropyOptions,
);

/// Linear cross-entropy of `h` through `w` and `b`, with the gradients of those `wanted`
/// (`∂L/∂h`, `∂L/∂W`, `∂L/∂b`) in buffers burn allocates.
fn run_linear(
    h: CubeTensor,
    w: CubeTensor,
    b: Option<CubeTensor>,
    (targets, class_weight, opts): LinearRun<'_>,
    wanted: [bool; 3],
) -> Result<(CubeTensor, [Option<CubeTensor>; 3])> {
    let gpu = shared_gpu(&h.device)?;
    dtype_of(&h)?;
    if w.dtype != h.dtype {
        return Err(Error::Burn(format!(
            "the weight is {:?}, the hidden states {:?}",
            w.dtype, h.dtype
        )));
    }
    if let Some(b) = &b
        && b.dtype != BurnDType::F32
    {
        return Err(Error::Burn(format!("the bias is {:?}, not f32", b.dtype)));
    }
    let (h, w, b) = (
        into_contiguous(h),
        into_contiguous(w),
        b.map(into_contiguous),
    );
    let ([n, hs], v) = ([h.meta.shape()[0], h.meta.shape()[1]], w.meta.shape()[0]);
    let mut views = Views::new(gpu.clone());
    let (t, cw) = views.class_inputs(targets, class_weight)?;
    let (h_view, w_view) = (views.tensor(&h, n, hs)?, views.tensor(&w, v, hs)?);
    let b_view = b.as_ref().map(|b| views.tensor(b, 1, v)).transpose()?;
    let loss_rows = if opts.loss.reduction == LossReduction::None {
        n
    } else {
        1
    };
    let loss = empty(&gpu, &h, &[loss_rows], BurnDType::F32);
    let [gh, gw, gb] = wanted;
    let grads = [
        gh.then(|| empty(&gpu, &h, &[n, hs], h.dtype)),
        gw.then(|| empty(&gpu, &h, &[v, hs], h.dtype)),
        gb.then(|| empty(&gpu, &h, &[v], BurnDType::F32)),
    ];
    let loss_view = views.tensor(&loss, loss_rows, 1)?;
    let [dh, dw, db] = [(0, n, hs), (1, v, hs), (2, 1, v)].map(|(i, rows, cols)| {
        grads[i]
            .as_ref()
            .map(|g| views.tensor(g, rows, cols))
            .transpose()
    });
    let (dh, dw, db) = (dh?, dw?, db?);
    flush(&h)?;
    let opts = LinearCrossEntropyOptions {
        grad_input: gh,
        grad_weight: gw,
        grad_bias: gb,
        ..*opts
    };
    let out = LinearOut {
        loss: &loss_view,
        grad_input: dh.as_ref(),
        grad_weight: dw.as_ref(),
        grad_bias: db.as_ref(),
        extras: CeExtras::default(),
    };
    let head = Linear {
        weight: &w_view,
        bias: b_view.as_ref(),
    };
    gpu.run_checked("linear cross-entropy of burn tensors", |ws, enc| {
        h_view.record_linear_cross_entropy(ws, enc, head, &t, cw.as_ref(), &opts, out)
    })?;
    Ok((loss, grads))
}
