//! What recordings reuse: scratch buffers, parameter uniforms with their bind groups, and the
//! target checks of cross-entropy, gathered until the caller reads them.

use std::collections::HashMap;
use std::num::NonZeroU64;

use crate::gpu::context::Gpu;
use crate::gpu::kernels::Kernel;
use crate::gpu::rows::MAX_LANE_ITERS;
use crate::{Error, Result};

/// Reusable state for recording xent's ops into your own encoders: once an op has been
/// recorded with the same shapes and buffers, recording it again creates no buffer and no
/// bind group (see [`Gpu::stats`]).
///
/// A workspace belongs to one [`Gpu`]; keep one per training loop (or per thread) and pass it
/// to every `record_*` call. Scratch buffers are reused by the next op recorded with the same
/// workspace, which is safe because a queue runs an encoder's passes in order; outputs are
/// always yours. Dropping the workspace frees what it holds. Its cache of bind groups keeps
/// the buffers it has bound alive; it holds at most [`Workspace::CACHED_BINDINGS`] entries
/// and starts afresh beyond that.
///
/// Cross-entropy with class indices checks its targets on the GPU: a recording returns
/// nothing to wait for, and a batch with a bad target writes nothing (its logits stay as they
/// were, even in place) while later batches run normally. [`Workspace::check_targets`] reads
/// the checks of every batch recorded since the last call, once, after you have submitted
/// them.
///
/// ```no_run
/// use xent::{CrossEntropyOptions, GradOut, Gpu, LossOut, Targets, Tensor, Workspace};
/// let gpu = Gpu::new()?;
/// let mut ws = Workspace::new(&gpu);
/// let logits = Tensor::from_slice(&gpu, &[2.0, 0.5, -1.0, 0.0, 3.0, 1.0], 2, 3)?;
/// let targets = Targets::from_i32(&gpu, &[0, 1])?;
/// let loss = Tensor::zeros(&gpu, 1, 1)?;
/// let opts = CrossEntropyOptions::default();
/// for _ in 0..10 {
///     let mut enc = gpu.encoder();
///     let out = LossOut { loss: &loss, grad: GradOut::None };
///     logits.record_cross_entropy(&mut ws, &mut enc, &targets, None, &opts, out)?;
///     gpu.queue().submit([enc.finish()]);
/// }
/// ws.check_targets()?;           // one readback for the ten batches
/// println!("{:?}", loss.to_vec()?);
/// # Ok::<(), xent::Error>(())
/// ```
pub struct Workspace {
    gpu: Gpu,
    scratch: HashMap<&'static str, wgpu::Buffer>,
    binds: HashMap<BindKey, wgpu::BindGroup>,
    status: Option<wgpu::Buffer>,
}

/// A dispatch's identity: the kernel, its parameters' bytes and its bound windows.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    kernel: usize,
    params: Vec<u8>,
    buffers: Vec<(u32, wgpu::Buffer, u64, Option<NonZeroU64>)>,
}

/// A status word's value where no target is bad. Twin: `NO_ERROR` in
/// shaders/cross_entropy.wgsl.
const NO_ERROR: u32 = u32::MAX;

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("scratch_buffers", &self.scratch.len())
            .field("cached_bindings", &self.binds.len())
            .field("checks_targets", &self.status.is_some())
            .finish()
    }
}

impl Workspace {
    /// Bind groups kept before the cache starts afresh.
    pub const CACHED_BINDINGS: usize = 4096;

    /// An empty workspace for `gpu`.
    pub fn new(gpu: &Gpu) -> Self {
        Self {
            gpu: gpu.clone(),
            scratch: HashMap::new(),
            binds: HashMap::new(),
            status: None,
        }
    }

    /// The context this workspace belongs to.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A scratch buffer of at least `bytes` bytes for `purpose`, reused from earlier
    /// recordings when it is large enough (grown to the next power of two otherwise). Its
    /// contents are whatever the last user left. Call inside [`Gpu::scoped`].
    pub(crate) fn scratch(&mut self, purpose: &'static str, bytes: u64) -> wgpu::Buffer {
        let bytes = bytes.max(16);
        if let Some(b) = self.scratch.get(purpose).filter(|b| b.size() >= bytes) {
            return b.clone();
        }
        let b = self.gpu.storage(purpose, bytes.next_power_of_two());
        self.scratch.insert(purpose, b.clone());
        b
    }

    /// Records one dispatch of `kernel` covering `groups` workgroups, binding `params` at
    /// binding 0 and `buffers` at their binding numbers; the uniform and bind group are made
    /// once per distinct dispatch and reused. The grid is 2-D when `groups` is over the
    /// per-dimension limit. `lane_iters` is the launch's count of the loop iterations of its
    /// busiest invocation: over [`MAX_LANE_ITERS`] it is an [`Error::Internal`], never a
    /// launch.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        kernel: &Kernel,
        params: &P,
        buffers: &[(u32, wgpu::BufferBinding<'_>)],
        groups: usize,
        lane_iters: usize,
    ) -> Result<()> {
        if lane_iters > MAX_LANE_ITERS {
            return Err(Error::Internal(format!(
                "a launch of {} would loop {lane_iters} times in one invocation (bound {MAX_LANE_ITERS})",
                kernel.name
            )));
        }
        let max_x = self.gpu.inner.max_groups as usize;
        let x = groups.min(max_x);
        let y = groups.div_ceil(x);
        if y > max_x {
            return Err(Error::Shape(format!(
                "{groups} workgroups exceed this device's {max_x}×{max_x} grid"
            )));
        }
        let key = key_of(kernel, params, buffers);
        if !self.binds.contains_key(&key) && self.binds.len() >= Self::CACHED_BINDINGS {
            self.binds.clear();
        }
        let gpu = &self.gpu;
        let group = self.binds.entry(key).or_insert_with(|| {
            let uniform = gpu.buffer_with(
                "xent params",
                bytemuck::bytes_of(params),
                wgpu::BufferUsages::UNIFORM,
            );
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }];
            entries.extend(buffers.iter().map(|(binding, b)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            }));
            gpu.count(|s| &s.bind_groups_created, 1);
            gpu.inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.name),
                    layout: &kernel.layout,
                    entries: &entries,
                })
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &*group, &[]);
        pass.dispatch_workgroups(x as u32, y as u32, 1);
        Ok(())
    }

    /// The status words of cross-entropy's target checks (created on first use). Call
    /// inside `Gpu::scoped`.
    pub(crate) fn target_status(&mut self) -> wgpu::Buffer {
        let gpu = &self.gpu;
        self.status
            .get_or_insert_with(|| gpu.storage_init("xent target checks", &TargetStatus::CLEAR))
            .clone()
    }

    /// Reads the target checks of every cross-entropy batch recorded with this workspace
    /// since the last call (one readback of a few bytes, after waiting for submitted work),
    /// and clears them. [`Error::Target`] names the first batch, in submission order, with a
    /// target outside `[0, K)` that is not `ignore_index`, and its first such row: that batch
    /// wrote nothing. Call it after submitting the encoders the batches were recorded into.
    pub fn check_targets(&mut self) -> Result<()> {
        let Some(status) = &self.status else {
            return Ok(());
        };
        let words = self.gpu.read::<u32>(status, 0, TargetStatus::CLEAR.len())?;
        self.gpu.scoped("clearing target checks", || {
            let clear = bytemuck::cast_slice(&TargetStatus::CLEAR);
            self.gpu.inner.queue.write_buffer(status, 0, clear);
            Ok(())
        })?;
        let s = TargetStatus::from_words(&words);
        if s.first_bad_batch == NO_ERROR {
            return Ok(());
        }
        Err(Error::Target {
            batch: Some(s.first_bad_batch as usize),
            row: s.first_bad_row as usize,
            value: i64::from(s.first_bad_value as i32),
            classes: s.first_bad_classes as usize,
        })
    }
}

/// The status words of cross-entropy's target checks. Twin: the `status` words named in
/// shaders/cross_entropy.wgsl (`BATCHES` .. `FIRST_BAD_CLASSES`).
struct TargetStatus {
    first_bad_batch: u32,
    first_bad_row: u32,
    first_bad_value: u32,
    first_bad_classes: u32,
}

impl TargetStatus {
    /// No batch counted, none bad.
    const CLEAR: [u32; 8] = [0, NO_ERROR, 0, NO_ERROR, 0, 0, 0, 0];

    fn from_words(w: &[u32]) -> Self {
        Self {
            first_bad_batch: w[3],
            first_bad_row: w[4],
            first_bad_value: w[5],
            first_bad_classes: w[6],
        }
    }
}

/// Begins the compute pass that one op records all its dispatches into. A pass per op rather
/// than per dispatch: each pass costs its own setup (about 20 µs per pass on lavapipe,
/// measured), while dispatches in one pass are still ordered by wgpu's barriers.
pub(crate) fn begin_pass<'e>(
    encoder: &'e mut wgpu::CommandEncoder,
    label: &str,
) -> wgpu::ComputePass<'e> {
    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    })
}

/// The cache key of a dispatch (see [`Workspace::dispatch`]).
fn key_of<P: bytemuck::Pod>(
    kernel: &Kernel,
    params: &P,
    buffers: &[(u32, wgpu::BufferBinding<'_>)],
) -> BindKey {
    BindKey {
        kernel: std::ptr::from_ref(kernel) as usize,
        params: bytemuck::bytes_of(params).to_vec(),
        buffers: buffers
            .iter()
            .map(|(i, b)| (*i, b.buffer.clone(), b.offset, b.size))
            .collect(),
    }
}
