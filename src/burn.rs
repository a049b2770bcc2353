//! xent's fused losses on [burn](https://burn.dev)'s wgpu tensors (feature `burn`, burn 0.22
//! without its `fusion` feature).
//!
//! burn and xent share one wgpu device: [`open`] opens a [`Gpu`] and a burn device on it,
//! [`device`] makes a burn device on a [`Gpu`] xent opened for it, [`init`] makes a [`Gpu`] on
//! a burn device before burn first uses it. The losses
//! here then read burn's tensors where they sit, in burn's own buffers, and write their
//! results into buffers burn allocated: no copy of the logits and no host round trip (only the
//! 4-byte target check of cross-entropy is read back, as in [`Tensor::cross_entropy`]).
//!
//! With autodiff, the forward pass computes the loss and its gradient in one pass over the
//! logits (the gradient is kept for the backward pass, as Liger-Kernel does); the backward
//! pass only scales it by the incoming gradient. Class weights and a divergence's teacher get
//! no gradient.
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
use ::burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
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

use crate::gpu::{GradOut, LossOut, Workspace};
use crate::{
    CrossEntropyOptions, DType, Divergence, Error, Form, Gpu, GpuOptions, InfoOptions,
    LossReduction, Result, Targets, Tensor,
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
    let weight = weight
        .map(|w| Ok(float_primitive(w)?.into_inner()))
        .transpose()?;
    let opts = *opts;
    fused(
        logits,
        opts.reduction == LossReduction::None,
        move |x, grad| run_cross_entropy(x, targets, weight, &opts, grad),
    )
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
    let p = float_primitive(p)?.into_inner();
    let opts = *opts;
    let per_row = opts.reduction == crate::DivReduction::None;
    fused(q, per_row, move |q, grad| {
        run_divergence(p, q, kind, &opts, grad)
    })
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

/// Runs a fused loss on the tensor `x` whose gradient it computes: `run(x, grad)` returns the
/// loss and, when `grad`, the gradient w.r.t. `x`. On an autodiff device the result carries a
/// backward step that scales the kept gradient by the incoming one (`[N]` per row when
/// `per_row`, else `[1]`).
fn fused(
    x: BurnTensor<2>,
    per_row: bool,
    run: impl FnOnce(CubeTensor, bool) -> Result<(CubeTensor, Option<CubeTensor>)>,
) -> Result<BurnTensor<1>> {
    Ok(match float_primitive(x)? {
        Float::Plain(x) => BurnTensor::from_primitive::<CubeBackend>(run(x, false)?.0),
        Float::Tracked(x) => {
            BurnTensor::from_primitive::<Autodiff<CubeBackend>>(fused_tracked::<NoCheckpointing>(
                x, per_row, run,
            )?)
        }
        Float::Balanced(x) => BurnTensor::from_primitive::<
            Autodiff<CubeBackend, BalancedCheckpointing>,
        >(fused_tracked::<BalancedCheckpointing>(x, per_row, run)?),
    })
}

fn fused_tracked<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<CubeBackend, C>>,
    per_row: bool,
    run: impl FnOnce(CubeTensor, bool) -> Result<(CubeTensor, Option<CubeTensor>)>,
) -> Result<FloatTensor<Autodiff<CubeBackend, C>>> {
    let (x, node) = x.into_parts();
    let (loss, grad) = run(x, true)?;
    let grad = grad.ok_or_else(|| Error::Internal("a fused loss returned no gradient".into()))?;
    Ok(
        match KeptGradient.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((grad, per_row), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        },
    )
}

/// The backward step of a fused loss: the gradient computed with the loss, times the
/// incoming gradient (one per row, or one).
#[derive(Debug)]
struct KeptGradient;

impl Backward<CubeBackend, 1> for KeptGradient {
    type State = (CubeTensor, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (grad, per_row) = ops.state;
        unary::<CubeBackend, _>(ops.parents, ops.node, grads, |incoming| {
            let rows = if per_row { grad.meta.shape()[0] } else { 1 };
            let incoming = CubeBackend::float_reshape(incoming, Shape::new([rows, 1]));
            let incoming = if incoming.dtype == grad.dtype {
                incoming
            } else {
                CubeBackend::float_cast(incoming, FloatDType::from(grad.dtype))
            };
            CubeBackend::float_mul(grad, incoming)
        });
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
    let targets = match targets.dtype {
        BurnDType::I32 => targets,
        _ => CubeBackend::int_cast(targets, IntDType::I32),
    };
    let targets = into_contiguous(targets);
    let weight = weight.map(|w| {
        let w = match w.dtype {
            BurnDType::F32 => w,
            _ => CubeBackend::float_cast(w, FloatDType::F32),
        };
        into_contiguous(w)
    });
    let (n, k) = (logits.meta.shape()[0], logits.meta.shape()[1]);
    let mut views = Views::new(gpu.clone());
    let (buffer, offset) = views.place(&targets)?;
    let t = Targets::from_buffer(&gpu, buffer, offset, n)?;
    let w = weight.as_ref().map(|w| views.tensor(w, 1, k)).transpose()?;
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
