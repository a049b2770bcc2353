//! The GPU context: adapter choice, device, limits, features, error scopes and readback.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::gpu::kernels::{
    self, Consts, CrossLane, Kernel, KernelDef, Kernels, RowSplit, Tuning, VecWidth, WORKGROUP_SIZE,
};
use crate::gpu::transfer::StagingPool;
use crate::gpu::workspace::Workspace;
use crate::{DType, Error, Result};

/// How to build a [`Gpu`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// How lanes combine their values; see [`CrossLane`].
    pub cross_lane: CrossLane,
    /// When rows are split across workgroups; see [`RowSplit`].
    pub row_split: RowSplit,
    /// Caps the bytes bound per storage binding below the device's
    /// `max_storage_buffer_binding_size`, so that row chunking can be exercised (and tested)
    /// on small tensors. `None` uses the device's limit. Either way xent binds at most
    /// 4 GiB at once, so that its 32-bit indices cannot wrap.
    pub max_binding_bytes: Option<u64>,
    /// Caps the workgroups per grid dimension below the device's
    /// `max_compute_workgroups_per_dimension` (65 535 nearly everywhere), so that 2-D grids
    /// can be exercised on small tensors. `None` uses the device's limit.
    pub max_workgroups_per_dimension: Option<u32>,
    /// Fills every tensor xent allocates for a result with NaN before the kernels run, so
    /// that an element a kernel fails to write shows up (a testing aid: it costs an upload
    /// per result). Default off: results start as zeros.
    pub poison_outputs: bool,
    /// Builds xent's shaders without naga's runtime bounds checks and loop bounding
    /// (`create_shader_module_trusted` with `ShaderRuntimeChecks::unchecked()`). Every index a
    /// kernel forms is bounded by its launch (windows sized to their rows, gathers clamped,
    /// rows past the end masked) and every loop by a count the host checks before each
    /// dispatch (at most 16 384 iterations per invocation), so the checks only cost. Default
    /// off; `XENT_UNCHECKED_SHADERS=1` turns it on too. On lavapipe it changed nothing
    /// measurable (2026-11-26, softmax, cross-entropy, entropy, KL, sigmoid, BCE at 4096 × 4096
    /// and 65 536 × 1000); gains of up to 25 % are reported on Metal (WGPU-NOTES.md).
    pub unchecked_shaders: bool,
    /// Binds every storage buffer read-write, so that one op may read a tensor and write
    /// another of the same buffer ([`Tensor::from_buffer`](crate::Tensor::from_buffer) views
    /// into one buffer, such as a memory pool's that places several tensors in each of its
    /// buffers: CubeCL's, under burn, which binds read-write for this reason). Default off: a
    /// read-only binding tells the driver that its loads see no writes. On lavapipe it cost
    /// nothing measurable (2026-11-26, softmax and cross-entropy with its gradient at
    /// 4096 × 4096 and 1024 × 32 000, two runs each: medians 51–73 ms against 63–67, 84–90
    /// against 81–92, 207–229 against 234–236, 247–249 against 261–290); not yet measured on
    /// a GPU.
    pub shared_buffers: bool,
    /// Requests every feature the adapter has (but `MAPPABLE_PRIMARY_BUFFERS`, which slows a
    /// discrete GPU's buffers), not only those xent uses: what another wgpu library that
    /// shares the device may need. CubeCL, under burn, assumes a device has all its adapter's
    /// features (see the module `xent::burn`, feature `burn`). Ignored by
    /// [`Gpu::from_device`]. Default off.
    pub all_features: bool,
}

/// Where data sits: a buffer and the byte offset of the data's first element in it (0 for
/// xent's own buffers; a tensor over a caller's buffer may start anywhere, see
/// [`Tensor::from_buffer`](crate::Tensor::from_buffer)). Byte positions inside the data are
/// counted from `offset`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region<'a> {
    pub(crate) buffer: &'a wgpu::Buffer,
    pub(crate) offset: u64,
}

impl<'a> Region<'a> {
    /// The whole of `buffer`, from its first byte.
    pub(crate) fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

/// A [`Region`] that holds its buffer (a clone), with the data's size when it is not the
/// rest of the buffer: for what a recording keeps beside borrowed tensors (a class-weight
/// tensor or the absent-input buffer, a loss tensor or scratch).
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) size: Option<NonZeroU64>,
}

impl Placed {
    /// The whole of `buffer`.
    pub(crate) fn whole(buffer: &wgpu::Buffer) -> Self {
        Self {
            buffer: buffer.clone(),
            offset: 0,
            size: None,
        }
    }

    /// The same place, borrowing the buffer.
    pub(crate) fn region(&self) -> Region<'_> {
        Region {
            buffer: &self.buffer,
            offset: self.offset,
        }
    }

    /// The data as one binding.
    pub(crate) fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: self.size,
        }
    }
}

/// A GPU device ready to run xent's kernels.
///
/// Cheap to clone (an `Arc`), `Send + Sync`, usable from several threads at once. Pipelines
/// are compiled once per `Gpu` on first use and shared by all clones.
///
/// ```no_run
/// let gpu = xent::Gpu::new()?;
/// println!("{}", gpu.describe());
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<Inner>,
    /// The element type the slice paths ([`Backend`](crate::Backend)) hold rows in on the
    /// device: f32, or a half type for [`Backend::typed`](crate::Backend::typed).
    pub(crate) slices: DType,
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) cross_lane: CrossLane,
    pub(crate) max_binding: u64,
    pub(crate) max_groups: u32,
    pub(crate) tuning: Tuning,
    pub(crate) poison_outputs: bool,
    /// [`GpuOptions::unchecked_shaders`], or the environment's.
    pub(crate) unchecked_shaders: bool,
    /// [`GpuOptions::shared_buffers`].
    pub(crate) shared_buffers: bool,
    pub(crate) kernels: Kernels,
    pub(crate) staging: StagingPool,
    /// A 16-byte storage buffer bound where a kernel's optional input is absent (read-only,
    /// but for [`GpuOptions::shared_buffers`]).
    pub(crate) dummy: wgpu::Buffer,
    pub(crate) counters: Counters,
    /// Errors that escaped every error scope (from work of another thread, say); reported by
    /// the next call instead of panicking inside wgpu's default handler.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// The instance and adapter of a context xent opened itself; `None` for
    /// [`Gpu::from_device`].
    origin: Option<Origin>,
}

/// The wgpu instance and adapter a device was requested from.
type Origin = (wgpu::Instance, wgpu::Adapter);

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("cross_lane", &self.inner.cross_lane)
            .finish()
    }
}

/// What a [`Gpu`] has done since it was made, counted over all its clones (see
/// [`Gpu::stats`]). Subtract two readings to see what a piece of work cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Buffers xent created: tensors, results, scratch, parameter uniforms, staging.
    pub buffers_created: u64,
    /// Their bytes.
    pub bytes_allocated: u64,
    /// Bind groups xent created.
    pub bind_groups_created: u64,
    /// Command buffers xent submitted itself (convenience methods, readbacks, uploads).
    pub submissions: u64,
    /// Bytes read back to the host.
    pub bytes_read_back: u64,
    /// Bytes uploaded through the staging buffers ([`Tensor::write`](crate::Tensor::write)
    /// and the slice paths; not tensors made with
    /// [`Tensor::from_slice`](crate::Tensor::from_slice)).
    pub bytes_uploaded: u64,
}

/// The most bytes one storage binding of xent's covers: 4 GiB, 2^30 f32, so that no u32
/// index a kernel computes inside a window (`row · cols`, an element's position, a count of
/// elements) can wrap, whatever the device allows (Metal's binding limit is its buffer limit,
/// often above 16 GiB). Larger tensors are processed in windows of it.
const MAX_WINDOW_BYTES: u64 = 1 << 32;

/// The bytes per storage binding: the device's limit, below `cap` if one is set, and never
/// above [`MAX_WINDOW_BYTES`].
fn binding_limit(device: u64, cap: Option<u64>) -> u64 {
    cap.map_or(device, |cap| cap.min(device))
        .min(MAX_WINDOW_BYTES)
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) buffers_created: AtomicU64,
    pub(crate) bytes_allocated: AtomicU64,
    pub(crate) bind_groups_created: AtomicU64,
    pub(crate) submissions: AtomicU64,
    pub(crate) bytes_read_back: AtomicU64,
    pub(crate) bytes_uploaded: AtomicU64,
}

/// The features xent uses when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::TIMESTAMP_QUERY);

impl Gpu {
    /// Opens the default adapter, blocking. Honors wgpu's environment variables:
    /// `WGPU_BACKEND` (e.g. `vulkan`, `gl`), `WGPU_ADAPTER_NAME` (a substring of the adapter's
    /// name) and `WGPU_POWER_PREF` (`low` / `high`).
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(GpuOptions::default()))
    }

    /// [`Gpu::new`] with options, blocking.
    pub fn with_options(options: GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Opens the default adapter (see [`Gpu::new`] for the environment variables).
    pub async fn new_async(options: GpuOptions) -> Result<Self> {
        let (instance, adapter) = select_adapter().await?;
        Self::open(instance, adapter, options).await
    }

    /// Opens every adapter wgpu finds that can run compute shaders (on the backends
    /// `WGPU_BACKEND` names, or all of them), one context each, blocking: the devices to
    /// split a vocabulary over ([`crate::cross_entropy_split`]). An adapter that fails to
    /// open is left out; none at all is [`Error::NoAdapter`].
    ///
    /// ```no_run
    /// for gpu in xent::Gpu::all(xent::GpuOptions::default())? {
    ///     println!("{}", gpu.describe());
    /// }
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn all(options: GpuOptions) -> Result<Vec<Self>> {
        pollster::block_on(async {
            let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
            let mut all = Vec::new();
            let mut errors = Vec::new();
            let instance = instance(backends);
            for adapter in instance.enumerate_adapters(backends).await {
                match Self::open(instance.clone(), adapter, options.clone()).await {
                    Ok(g) => all.push(g),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            if all.is_empty() {
                return Err(Error::NoAdapter(if errors.is_empty() {
                    "no adapter found".into()
                } else {
                    errors.join("; ")
                }));
            }
            Ok(all)
        })
    }

    /// A context on `adapter`.
    async fn open(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        options: GpuOptions,
    ) -> Result<Self> {
        let info = adapter.get_info();
        if !adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(Error::NoCompute(info.name));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("xent"),
                required_features: if options.all_features {
                    adapter
                        .features()
                        .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
                } else {
                    adapter.features() & WANTED_FEATURES
                },
                // The adapter's own limits: the defaults cap buffers at 256 MiB and bindings at
                // 128 MiB, far below what most GPUs can do.
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let origin = Some((instance, adapter));
        Self::build(device, queue, info, options, (uncaptured, origin))
    }

    /// Wraps a device and queue the caller already has. xent uses whatever features the
    /// device was created with (`SUBGROUP` enables the subgroup reductions) and its limits.
    /// The device's uncaptured-error handler is left as the caller set it.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: GpuOptions,
    ) -> Result<Self> {
        let info = device.adapter_info();
        Self::build(
            device,
            queue,
            info,
            options,
            (Arc::new(Mutex::new(None)), None),
        )
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: GpuOptions,
        (uncaptured, origin): (Arc<Mutex<Option<String>>>, Option<Origin>),
    ) -> Result<Self> {
        let limits = device.limits();
        let has_subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        let wanted = match (
            options.cross_lane,
            std::env::var("XENT_CROSS_LANE").as_deref(),
        ) {
            (CrossLane::Auto, Ok("subgroup")) => CrossLane::Subgroup,
            (CrossLane::Auto, Ok("workgroup")) => CrossLane::Workgroup,
            (r, _) => r,
        };
        let cross_lane = match wanted {
            CrossLane::Auto if has_subgroups && info.device_type != wgpu::DeviceType::Cpu => {
                CrossLane::Subgroup
            }
            CrossLane::Auto => CrossLane::Workgroup,
            CrossLane::Subgroup if !has_subgroups => {
                return Err(Error::InvalidArgument(format!(
                    "subgroup reductions requested but {} has no SUBGROUP feature",
                    info.name
                )));
            }
            r => r,
        };
        if limits.max_compute_invocations_per_workgroup < WORKGROUP_SIZE {
            return Err(Error::NoCompute(format!(
                "{} ({} invocations per workgroup, xent needs {})",
                info.name, limits.max_compute_invocations_per_workgroup, WORKGROUP_SIZE
            )));
        }
        // XENT_TUNING=gpu|cpu lays launches out as for that kind of adapter whatever this one
        // is: CI runs the GPU layout (long rows in many segments) on lavapipe this way.
        let max_groups = options
            .max_workgroups_per_dimension
            .map_or(limits.max_compute_workgroups_per_dimension, |cap| {
                cap.clamp(1, limits.max_compute_workgroups_per_dimension)
            });
        let mut tuning = Tuning {
            split: options.row_split,
            ..Tuning::for_adapter(match std::env::var("XENT_TUNING").as_deref() {
                Ok("gpu") => wgpu::DeviceType::DiscreteGpu,
                Ok("cpu") => wgpu::DeviceType::Cpu,
                _ => info.device_type,
            })
        };
        // A layout asks for at most a quarter of the grid's workgroups (only a grid capped
        // for testing comes near: 7 × 7 against the GPU tuning's 1024).
        let grid = (max_groups as usize).saturating_mul(max_groups as usize);
        tuning.min_workgroups = tuning.min_workgroups.min(grid / 4).max(1);
        let max_binding = binding_limit(
            limits.max_storage_buffer_binding_size,
            options.max_binding_bytes,
        );
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("xent absent input"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut gpu = Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                cross_lane,
                max_binding,
                max_groups,
                tuning,
                poison_outputs: options.poison_outputs,
                unchecked_shaders: options.unchecked_shaders
                    || std::env::var("XENT_UNCHECKED_SHADERS").is_ok_and(|v| v == "1"),
                shared_buffers: options.shared_buffers,
                kernels: Kernels::default(),
                staging: StagingPool::default(),
                dummy,
                counters: Counters::default(),
                uncaptured,
                origin,
            }),
            slices: DType::F32,
        };
        if cross_lane == CrossLane::Subgroup
            && let Some(why) = gpu.probe_lanes()?
        {
            if wanted == CrossLane::Subgroup {
                return Err(Error::InvalidArgument(format!(
                    "subgroup reductions requested but {}: {why}",
                    gpu.inner.info.name
                )));
            }
            // Nothing else holds the context yet; the probe's pipeline goes with the cache.
            let inner = Arc::get_mut(&mut gpu.inner).ok_or_else(|| {
                Error::Internal("the context was shared during its lane probe".into())
            })?;
            inner.cross_lane = CrossLane::Workgroup;
            inner.kernels = Kernels::default();
        }
        Ok(gpu)
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu instance and adapter this context's device was requested from: `None` for a
    /// context made with [`Gpu::from_device`], which never saw them. What another wgpu
    /// library needs to share the device (burn's `WgpuSetup`, for one).
    pub fn instance_adapter(&self) -> Option<(&wgpu::Instance, &wgpu::Adapter)> {
        self.inner.origin.as_ref().map(|(i, a)| (i, a))
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend, driver and device type.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// How lanes combine their values ([`CrossLane::Auto`] resolved).
    pub fn cross_lane(&self) -> CrossLane {
        self.inner.cross_lane
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// One line naming the adapter, backend and cross-lane path.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, driver {} {}), {:?} cross-lane reductions",
            i.name, i.backend, i.device_type, i.driver, i.driver_info, self.inner.cross_lane
        )
    }

    /// The compiled kernel for `def` at `width`, compiling it on first use.
    pub(crate) fn kernel(&self, def: &KernelDef, width: VecWidth) -> Result<Arc<Kernel>> {
        self.kernel_with(def, width, Consts::NONE)
    }

    /// [`Gpu::kernel`] with values for the shader's overridable constants.
    pub(crate) fn kernel_with(
        &self,
        def: &KernelDef,
        width: VecWidth,
        consts: Consts,
    ) -> Result<Arc<Kernel>> {
        self.inner.kernels.get_or_compile(def, (width, consts), || {
            let cross_lane = self.inner.cross_lane;
            let op = format!(
                "compiling {}::{} ({:?}, {width:?}, {cross_lane:?}, {consts:?})",
                def.shader.file(),
                def.entry,
                def.shader
            );
            let lanes = (cross_lane, self.inner.info.subgroup_min_size);
            self.scoped(&op, || {
                Ok(kernels::compile(
                    (
                        &self.inner.device,
                        self.inner.unchecked_shaders,
                        self.inner.shared_buffers,
                    ),
                    def,
                    (width, consts),
                    lanes,
                ))
            })
        })
    }

    /// A window of `bytes` bytes starting at byte `start` of `region`, bound from the nearest
    /// aligned offset below; returns the binding and the offset of `start` inside it in
    /// 4-byte elements.
    pub(crate) fn window<'a>(
        &self,
        region: Region<'a>,
        start: u64,
        bytes: u64,
    ) -> (wgpu::BufferBinding<'a>, u32) {
        self.window_of(region, (start, bytes), 4)
    }

    /// [`Gpu::window`] with the offset counted in elements of `elem_bytes`.
    pub(crate) fn window_of<'a>(
        &self,
        Region { buffer, offset }: Region<'a>,
        (start, bytes): (u64, u64),
        elem_bytes: u64,
    ) -> (wgpu::BufferBinding<'a>, u32) {
        let start = offset + start;
        let align = u64::from(self.inner.limits.min_storage_buffer_offset_alignment);
        let offset = start - start % align;
        let binding = wgpu::BufferBinding {
            buffer,
            offset,
            size: NonZeroU64::new(start - offset + bytes),
        };
        (binding, ((start - offset) / elem_bytes) as u32)
    }

    /// How many items (rows, or elements) of `item_bytes` one dispatch may cover so that every
    /// window fits in one binding, rounded down to a multiple of `multiple` (a vector width);
    /// an error when not even `multiple` items fit.
    pub(crate) fn items_per_dispatch(
        &self,
        total: usize,
        item_bytes: u64,
        multiple: usize,
    ) -> Result<usize> {
        let limit = self.inner.max_binding;
        if total as u64 * item_bytes <= limit {
            return Ok(total);
        }
        let align = u64::from(self.inner.limits.min_storage_buffer_offset_alignment);
        let per = (limit.saturating_sub(align) / item_bytes) as usize;
        let per = per - per % multiple;
        if per == 0 {
            return Err(Error::RowTooLarge {
                cols: (item_bytes / 4) as usize * multiple,
                bytes: item_bytes * multiple as u64 + align,
                limit,
            });
        }
        Ok(per)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns whatever they
    /// catch into [`Error::Wgpu`] naming `op`.
    pub(crate) fn scoped<T>(&self, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let caught = pollster::block_on(validation.pop()).or(pollster::block_on(oom.pop()));
        if let Some(e) = caught {
            return Err(Error::Wgpu {
                op: op.to_string(),
                message: e.to_string(),
            });
        }
        let escaped = self
            .inner
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(message) = escaped {
            return Err(Error::Wgpu {
                op: op.to_string(),
                message,
            });
        }
        out
    }

    /// Submits one encoder's commands (inside error scopes).
    pub(crate) fn submit(&self, op: &str, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.scoped(op, || {
            self.submit_unscoped(encoder);
            Ok(())
        })
    }

    /// Submits one encoder's commands; call inside [`Gpu::scoped`].
    pub(crate) fn submit_unscoped(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.count(|c| &c.submissions, 1);
        self.inner.queue.submit([encoder.finish()])
    }

    /// The convenience forms' run: `record` into a fresh encoder and workspace, one
    /// submission (`op` names it in errors), then the cross-entropy target check, read at
    /// once ([`Error::Target`] without a batch number: there is one batch).
    pub(crate) fn run_checked(
        &self,
        op: &str,
        record: impl FnOnce(&mut Workspace, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let mut ws = Workspace::new(self);
        let mut encoder = self.encoder();
        record(&mut ws, &mut encoder)?;
        self.submit(op, encoder)?;
        ws.check_targets().map_err(|e| match e {
            Error::Target {
                row,
                value,
                classes,
                ..
            } => Error::Target {
                batch: None,
                row,
                value,
                classes,
            },
            e => e,
        })
    }

    /// What this context has done so far (all clones together).
    ///
    /// ```no_run
    /// let gpu = xent::Gpu::new()?;
    /// let before = gpu.stats();
    /// let p = xent::Tensor::from_slice(&gpu, &[1.0, 2.0], 1, 2)?.softmax(&Default::default())?;
    /// println!("{} buffers", gpu.stats().buffers_created - before.buffers_created);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            buffers_created: get(&c.buffers_created),
            bytes_allocated: get(&c.bytes_allocated),
            bind_groups_created: get(&c.bind_groups_created),
            submissions: get(&c.submissions),
            bytes_read_back: get(&c.bytes_read_back),
            bytes_uploaded: get(&c.bytes_uploaded),
        }
    }

    /// Adds `n` to one counter.
    pub(crate) fn count(&self, which: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        which(&self.inner.counters).fetch_add(n, Ordering::Relaxed);
    }

    /// A new buffer (counted). Call inside [`Gpu::scoped`].
    pub(crate) fn buffer(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        self.count(|c| &c.buffers_created, 1);
        self.count(|c| &c.bytes_allocated, bytes);
        self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    }

    /// A new buffer holding `data` (counted). Call inside [`Gpu::scoped`].
    pub(crate) fn buffer_with(
        &self,
        label: &str,
        data: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        self.count(|c| &c.buffers_created, 1);
        self.count(|c| &c.bytes_allocated, data.len() as u64);
        self.inner
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage,
            })
    }

    /// Blocks until every submitted command has finished.
    pub fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Readback(e.to_string()))
    }

    /// The one readback path: `len` values of `T` (4-byte f32, i32 or u32) from byte
    /// `offset` of `src`, through the pooled staging buffers (in chunks). The host memory is
    /// reserved first, fallibly: a result too large for the host is [`Error::HostMemory`]
    /// before any GPU work, not an abort.
    pub(crate) fn read<T: bytemuck::Pod>(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let mut data: Vec<T> = Vec::new();
        data.try_reserve_exact(len).map_err(|_| Error::HostMemory {
            bytes,
            what: "a readback".into(),
        })?;
        self.read_chunks(src, offset, bytes, |chunk| {
            data.extend_from_slice(bytemuck::cast_slice::<u8, T>(chunk));
        })?;
        Ok(data)
    }

    /// [`Gpu::read`] into the caller's `out` (its length is the count).
    pub(crate) fn read_into<T: bytemuck::Pod>(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        out: &mut [T],
    ) -> Result<()> {
        let out: &mut [u8] = bytemuck::cast_slice_mut(out);
        let mut at = 0;
        self.read_chunks(src, offset, out.len() as u64, |chunk| {
            out[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        })
    }

    /// Usage of xent's storage buffers.
    const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// A new storage buffer of at least `bytes` bytes (uninitialised contents are zero in
    /// wgpu), for intermediate results. Call inside [`Gpu::scoped`].
    pub(crate) fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.buffer(label, bytes.max(4).next_multiple_of(4), Self::STORAGE)
    }

    /// A new storage buffer holding `data`. Call inside [`Gpu::scoped`].
    pub(crate) fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        self.buffer_with(label, bytemuck::cast_slice(data), Self::STORAGE)
    }

    /// A new command encoder.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("xent"),
            })
    }

    /// Errors unless `other` is this context.
    pub(crate) fn same(&self, other: &Gpu) -> Result<()> {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch)
        }
    }
}

/// An instance over `backends`, with wgpu's other environment settings.
fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// The backends to try, in order: those `WGPU_BACKEND` names, or else the primary ones
/// (Vulkan, Metal, DX12) first and GL only as a fallback. Probing GL needlessly is slow and
/// makes some drivers print warnings.
fn backend_tiers() -> Vec<wgpu::Backends> {
    match wgpu::Backends::from_env() {
        Some(b) => vec![b],
        None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::SECONDARY],
    }
}

/// The first tier of [`backend_tiers`] that has a matching adapter.
async fn select_adapter() -> Result<Origin> {
    let mut last = Error::NoAdapter("no backend available".into());
    for backends in backend_tiers() {
        let instance = instance(backends);
        match select_adapter_in(&instance).await {
            Ok(a) => return Ok((instance, a)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `WGPU_ADAPTER_NAME` picks by name (case-insensitive substring) among the instance's
/// adapters; otherwise wgpu's choice under `WGPU_POWER_PREF`.
async fn select_adapter_in(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted = wanted.to_lowercase();
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "none matches WGPU_ADAPTER_NAME={wanted:?} (found: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            });
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter(e.to_string()))
}

/// Every adapter wgpu can see (all backends, or those `WGPU_BACKEND` names): for `xent info`.
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance(backends).enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_stay_within_4_gib_whatever_the_device_allows() {
        const GIB: u64 = 1 << 30;
        assert_eq!(binding_limit(128 << 20, None), 128 << 20);
        assert_eq!(binding_limit(16 * GIB, None), 4 * GIB);
        assert_eq!(binding_limit(16 * GIB, Some(8 * GIB)), 4 * GIB);
        assert_eq!(binding_limit(16 * GIB, Some(GIB)), GIB);
        assert_eq!(binding_limit(GIB, Some(8 * GIB)), GIB);
    }
}
