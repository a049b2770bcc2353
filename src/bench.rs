//! The GPU-vs-CPU table behind `xent bench`: every op at a few shapes, timed on both paths,
//! with GB/s counted from the fewest bytes each op must move and compared with the same
//! adapter's copy bandwidth measured in the same run (the roofline ratio, which is
//! comparable across machines where absolute times are not).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::gpu::{Gpu, GradOut, LinearOut, LossOut, Targets, Tensor, Workspace};
use crate::options::{
    Activation, BceOptions, BceWeights, CrossEntropyOptions, Divergence, Form, Grad, InfoOptions,
    Linear, LinearCrossEntropyOptions, SoftmaxKind, SoftmaxOptions, Target,
};
use crate::{Backend, Cpu, DType, Element, cpu};
use crate::{Error, Result};

/// One op at one shape.
#[derive(Clone, Debug)]
pub struct Row {
    /// Op name.
    pub op: &'static str,
    /// Rows of the input.
    pub rows: usize,
    /// Columns of the input.
    pub cols: usize,
    /// The fewest bytes the op must move (each input read once, each output written once).
    pub bytes: u64,
    /// GPU time with the data resident, if the GPU side ran (see [`Report::gpu_timer`]).
    pub gpu: Option<Timing>,
    /// Time of the slice-in / `Vec`-out call ([`Backend`] on the GPU): upload, run, read
    /// back.
    pub gpu_end_to_end: Option<Timing>,
    /// Of that: uploading one `rows × cols` input into a resident tensor
    /// ([`Tensor::write`]), waited for.
    pub gpu_upload: Option<Timing>,
    /// Of that: reading one `rows × cols` tensor back into a host slice
    /// ([`Tensor::read_into`]).
    pub gpu_readback: Option<Timing>,
    /// CPU time, if the CPU side ran.
    pub cpu: Option<Timing>,
    /// Steps timed together (`cross_entropy_loop`: steps recorded back to back, no
    /// readback; its times are per step), else 1.
    pub steps: usize,
}

/// One measured time: the median of `reps` repetitions after an untimed warm-up, and how far
/// apart the fastest and slowest were.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// The median.
    pub median: Duration,
    /// Repetitions timed.
    pub reps: usize,
    /// (slowest - fastest) / median.
    pub spread: f64,
}

impl Timing {
    /// The median and spread of `times` (at least one).
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let median = times[times.len() / 2];
        let range = times[times.len() - 1] - times[0];
        Timing {
            median,
            reps: times.len(),
            spread: range.as_secs_f64() / median.as_secs_f64().max(1e-12),
        }
    }
}

/// What a run measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Ops, from [`OPS`].
    pub ops: Vec<&'static str>,
    /// Shapes, rows × columns.
    pub shapes: Vec<(usize, usize)>,
    /// Time the GPU side.
    pub gpu: bool,
    /// Time the CPU side.
    pub cpu: bool,
    /// Time one measurement may take: at least [`MIN_REPS`] repetitions after the warm-up,
    /// then more while the budget lasts (at most [`MAX_REPS`]).
    pub budget: Duration,
    /// Another implementation's times on the same ops and shapes, shown beside the GPU's.
    pub peer: Option<Peer>,
    /// Linear cross-entropy's shapes, `N × H × V` (its own table, [`LinearRow`]), measured
    /// when `ops` holds [`LINEAR`].
    pub linear: Vec<(usize, usize, usize)>,
}

/// The op name of linear cross-entropy's table.
pub const LINEAR: &str = "linear_cross_entropy";

/// Another implementation's times for the table's ops and shapes, as
/// `scripts/pytorch_peer.py` writes them: `{"peer": name, "device": name, "device_type":
/// "cuda" | "cpu", "rows": [{"op", "rows", "cols", "ms"}, …]}`. A peer on the CPU is set
/// beside xent's CPU column, any other beside the GPU's.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// What ran, and on which device.
    pub name: String,
    /// Median milliseconds by op, rows and columns.
    pub ms: BTreeMap<(String, usize, usize), f64>,
    /// The peer ran on the CPU.
    pub on_cpu: bool,
}

impl Peer {
    /// Reads a peer's JSON; an error names what is missing.
    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |what: &str| Error::InvalidArgument(format!("peer times: {what}"));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let text_of = |key: &str| {
            v[key]
                .as_str()
                .ok_or_else(|| bad(&format!("no string {key:?}")))
        };
        let name = format!("{} on {}", text_of("peer")?, text_of("device")?);
        let rows = v["rows"]
            .as_array()
            .ok_or_else(|| bad("no array \"rows\""))?;
        let ms = rows
            .iter()
            .map(|r| {
                let n = |key: &str| r[key].as_u64().map(|x| x as usize);
                match (r["op"].as_str(), n("rows"), n("cols"), r["ms"].as_f64()) {
                    (Some(op), Some(rows), Some(cols), Some(ms)) => {
                        Ok(((Self::key(op, n("hidden")), rows, cols), ms))
                    }
                    _ => Err(bad(&format!("a row without op, rows, cols and ms: {r}"))),
                }
            })
            .collect::<Result<_>>()?;
        let on_cpu = v["device_type"].as_str() == Some("cpu");
        Ok(Self { name, ms, on_cpu })
    }

    /// The xent column the peer is compared with: "CPU" or "GPU".
    fn beside(&self) -> &'static str {
        if self.on_cpu { "CPU" } else { "GPU" }
    }

    /// The header of the peer's two columns.
    fn columns(&self) -> String {
        format!(" {:>9} {:>9}", "peer ms", format!("peer/{}", self.beside()))
    }

    /// The peer's two cells: its time `t` and its ratio to xent's `ours`.
    fn cells(t: Option<f64>, ours: Option<Timing>) -> String {
        let ratio = t.zip(ours).map(|(t, g)| t / (g.median.as_secs_f64() * 1e3));
        format!(
            " {:>9} {:>9}",
            t.map_or("-".into(), |t| format!("{t:.3}")),
            ratio.map_or("-".into(), |x| format!("{x:.2}x")),
        )
    }

    /// The peer's time for `row`, if it measured that op at that shape.
    pub fn time(&self, row: &Row) -> Option<f64> {
        self.ms
            .get(&(row.op.to_string(), row.rows, row.cols))
            .copied()
    }

    /// The peer's time for linear cross-entropy at `row`'s shape (a peer row of op
    /// [`LINEAR`] with `rows` N, `cols` V and `hidden` H).
    pub fn linear_time(&self, row: &LinearRow) -> Option<f64> {
        let key = (Self::key(LINEAR, Some(row.hidden)), row.n, row.classes);
        self.ms.get(&key).copied()
    }

    /// The map's op key: the op, and the hidden size of a linear row.
    fn key(op: &str, hidden: Option<usize>) -> String {
        match hidden {
            Some(h) => format!("{op} H={h}"),
            None => op.to_string(),
        }
    }
}

impl Plan {
    /// The full table: classification (65 536 × 10 and × 1000), language models
    /// (4096 × 32 000 and 512 × 128 256), small (32 × 1000) and single long rows (1 × 262 144
    /// and 8 × 131 072: sampling from a large vocabulary), every op, both sides.
    pub fn full() -> Self {
        Self {
            ops: OPS.to_vec(),
            shapes: vec![
                (65_536, 10),
                (65_536, 1000),
                (32, 1000),
                (1, 262_144),
                (8, 131_072),
                (4096, 32_000),
                (512, 128_256),
            ],
            gpu: true,
            cpu: true,
            budget: Duration::from_millis(400),
            peer: None,
            // A language model's head: 1024 tokens of 512 hidden units into a 32 000- and a
            // 128 256-word vocabulary.
            linear: vec![(1024, 512, 32_000), (1024, 512, 128_256)],
        }
    }

    /// 4096 × 4096 in place of the large shapes and a smaller budget (about half a minute on
    /// lavapipe).
    pub fn quick() -> Self {
        Self {
            shapes: vec![
                (65_536, 10),
                (32, 1000),
                (1, 262_144),
                (8, 131_072),
                (4096, 4096),
            ],
            budget: Duration::from_millis(100),
            // lavapipe's products run at a few GFLOP/s: a head small enough for seconds.
            linear: vec![(128, 256, 32_000)],
            ..Self::full()
        }
    }

    /// The row ops of the main table (all but [`LINEAR`]).
    fn row_ops(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.ops.iter().copied().filter(|&op| op != LINEAR)
    }

    /// Linear cross-entropy's shapes this plan measures.
    fn linear_shapes(&self) -> &[(usize, usize, usize)] {
        if self.ops.contains(&LINEAR) {
            &self.linear
        } else {
            &[]
        }
    }

    /// Rows this plan measures (the main table's and linear cross-entropy's).
    pub fn len(&self) -> usize {
        self.row_ops().count() * self.shapes.len() + self.linear_shapes().len()
    }

    /// True when it measures nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An op name of the table, or an error listing them.
pub fn parse_op(name: &str) -> Result<&'static str> {
    OPS.iter().copied().find(|o| *o == name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown op {name:?}; the ops are {}",
            OPS.join(", ")
        ))
    })
}

/// A shape written `ROWSxCOLS` (both > 0).
pub fn parse_shape(text: &str) -> Result<(usize, usize)> {
    let bad = || Error::InvalidArgument(format!("{text:?} is not a shape ROWSxCOLS"));
    let (r, c) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let (r, c): (usize, usize) = (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
    if r == 0 || c == 0 {
        return Err(bad());
    }
    Ok((r, c))
}

/// A linear cross-entropy shape written `NxHxV` (all > 0).
pub fn parse_linear_shape(text: &str) -> Result<(usize, usize, usize)> {
    let bad = || Error::InvalidArgument(format!("{text:?} is not a shape NxHxV"));
    let dims: Vec<usize> = text
        .split(['x', 'X'])
        .map(|d| d.parse().ok().filter(|&d| d > 0).ok_or_else(bad))
        .collect::<Result<_>>()?;
    match dims[..] {
        [n, h, v] => Ok((n, h, v)),
        _ => Err(bad()),
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The adapter, if any, in one line ([`Gpu::describe`]).
    pub adapter: Option<String>,
    /// The adapter's name, backend and driver, if any.
    pub adapter_info: Option<AdapterSummary>,
    /// How GPU times were taken: "timestamp queries" (two timestamps in the command buffer
    /// the op is recorded into) where the adapter has them, else "wall clock" (recording to
    /// the end of a wait).
    pub gpu_timer: Option<&'static str>,
    /// Copy bandwidth of that adapter in this run, GB/s (bytes read + written): the
    /// faster of a buffer copy and a copy kernel ([`copy_bandwidth`]), over buffers the size
    /// of the plan's largest input (256 MiB at least).
    pub copy_gbps: Option<f64>,
    /// One row per op and shape.
    pub rows: Vec<Row>,
    /// Linear cross-entropy's rows, after the others.
    pub linear: Vec<LinearRow>,
    /// The plan's peer, if any.
    pub peer: Option<Peer>,
}

/// Linear cross-entropy at one shape (the loss and `∂L/∂h`, `∂L/∂W`, no bias): fused on the
/// GPU against the unfused composition (the whole logits, then the fused cross-entropy,
/// then the two gradient products), the logits' matrix product alone, and the same on the
/// CPU path (`matrixmultiply`'s products).
#[derive(Clone, Debug)]
pub struct LinearRow {
    /// Rows of hidden states.
    pub n: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
    /// The GPU's fused op (default chunks), with the data resident.
    pub fused: Option<Timing>,
    /// The GPU's unfused composition.
    pub unfused: Option<Timing>,
    /// Bytes xent allocated beyond the inputs and the gradients (scratch, parameters; the
    /// whole logits for the unfused composition): its peak, since nothing it allocates is
    /// freed before the op returns.
    pub fused_bytes: Option<u64>,
    /// The same for the unfused composition.
    pub unfused_bytes: Option<u64>,
    /// The GPU's logits product alone (`N × V × H`).
    pub gemm: Option<Timing>,
    /// The CPU path's fused op.
    pub cpu: Option<Timing>,
    /// The CPU path's logits product alone.
    pub cpu_gemm: Option<Timing>,
}

impl LinearRow {
    /// Floating-point operations of one product, `2·N·H·V`; the op makes three.
    pub fn product_flops(&self) -> f64 {
        2.0 * self.n as f64 * self.hidden as f64 * self.classes as f64
    }
}

/// What identifies the adapter of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name.
    pub name: String,
    /// Vulkan, Metal, DX12 or GL.
    pub backend: String,
    /// Driver name and version.
    pub driver: String,
}

fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

/// Repetitions a measurement always times after its warm-up.
pub const MIN_REPS: usize = 3;
/// Repetitions a measurement times at most.
pub const MAX_REPS: usize = 51;

/// Times `f` (which returns its own duration): untimed calls until `warm` has passed (one at
/// least), then [`MIN_REPS`] timed ones, then more while `budget` lasts, up to [`MAX_REPS`].
fn measure(
    budget: Duration,
    warm: Duration,
    mut f: impl FnMut() -> Result<Duration>,
) -> Result<Timing> {
    let start = Instant::now();
    f()?;
    while start.elapsed() < warm {
        f()?;
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < MIN_REPS || (start.elapsed() < budget && times.len() < MAX_REPS) {
        times.push(f()?);
    }
    Ok(Timing::of(times))
}

/// [`measure`] of the wall-clock time of `f`.
fn measure_wall(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    measure(budget, Duration::ZERO, || {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed())
    })
}

/// [`measure_wall`] of `f` on each of the input `sets` in turn, one per call (the first call
/// on the second set), so that no call finds its input in the cache the last one left.
fn measure_sets<T>(
    budget: Duration,
    sets: &[T],
    mut f: impl FnMut(&T) -> Result<()>,
) -> Result<Timing> {
    let mut k = 0;
    measure_wall(budget, || {
        k = (k + 1) % sets.len();
        f(&sets[k])
    })
}

/// Times GPU work as a training loop runs it: calls submitted back to back, each timed by
/// timestamp queries inside its own command buffer where the adapter has them (neither the
/// host's recording nor the submission counted), else by the wall clock around a call and a
/// wait.
struct GpuTimer {
    gpu: Gpu,
    /// Two timestamps for each of up to [`MAX_REPS`] calls, and the buffer they resolve to.
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// How long the work runs untimed, back to back, before the timed calls: [`GPU_WARM`] on
    /// a GPU, nothing on a CPU adapter.
    warm: Duration,
}

/// Untimed work before a GPU measurement, so that it runs at the clocks a busy GPU keeps. An
/// H200 (Vulkan) drops its SM clock from 1 980 MHz to 345 MHz within 200 ms of idling (as
/// between the bench's host-side steps) and, under work that leaves it idle between calls
/// (each call waited for), may climb back only to 810 or 1 275 MHz (2026-11-26, nvidia-smi
/// every 200 ms): softmax over 4096 × 50 256 took 1.59–1.74 ms a call there and 0.66 ms at
/// full clock. Work queued back to back raised it to full within 200 ms in most runs seen,
/// not in all: with this warm-up alone, rows measured between the bench's host-side steps
/// still read slow (sigmoid over 4096 × 32 000 0.62 ms against 0.26), hence `time_resident`.
pub const GPU_WARM: Duration = Duration::from_millis(300);

/// Calls queued at most for a warm-up (tiny ops would need more than this for [`GPU_WARM`];
/// their time hardly depends on the clock).
const MAX_WARM_CALLS: usize = 2000;

impl GpuTimer {
    fn new(gpu: &Gpu) -> Self {
        let queries = gpu
            .device()
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("xent bench timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * MAX_REPS as u32,
                });
                let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("xent bench timestamps"),
                    size: 16 * MAX_REPS as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, resolve)
            });
        let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
        Self {
            gpu: gpu.clone(),
            queries,
            warm: if cpu { Duration::ZERO } else { GPU_WARM },
        }
    }

    /// "timestamp queries" or "wall clock".
    fn method(&self) -> &'static str {
        if self.queries.is_some() {
            "timestamp queries"
        } else {
            "wall clock"
        }
    }

    /// Calls of about `call` each that fill this timer's warm-up.
    fn warm_calls(&self, call: Duration) -> usize {
        let calls = self.warm.as_secs_f64() / call.as_secs_f64().max(1e-6);
        (calls.ceil() as usize).min(MAX_WARM_CALLS)
    }

    /// Times call k = 0, 1, ... of `record` (which records the work into an encoder): one
    /// call untimed (pipelines get built), one waited for (its wall time estimates a call),
    /// then [`GpuTimer::warm_calls`] untimed and the timed ones (as many as `budget` holds,
    /// [`MIN_REPS`] to [`MAX_REPS`]) queued back to back behind them, each in its own command
    /// buffer between two timestamps.
    fn measure(
        &self,
        ws: &mut Workspace,
        budget: Duration,
        mut record: impl FnMut(&mut Workspace, &mut wgpu::CommandEncoder, usize) -> Result<()>,
    ) -> Result<Timing> {
        let mut call = |ws: &mut Workspace, k: usize, marks: Option<u32>| {
            let mut enc = self.gpu.encoder();
            let marked = marks.zip(self.queries.as_ref());
            if let Some((i, (set, _))) = marked {
                mark(&mut enc, set, 2 * i);
            }
            record(ws, &mut enc, k)?;
            if let Some((i, (set, _))) = marked {
                mark(&mut enc, set, 2 * i + 1);
            }
            self.gpu.submit("bench", enc)
        };
        call(ws, 0, None)?;
        self.gpu.wait()?;
        let start = Instant::now();
        call(ws, 1, None)?;
        self.gpu.wait()?;
        let estimate = start.elapsed();
        let Some((set, resolve)) = &self.queries else {
            let mut k = 1;
            return measure(budget, self.warm, || {
                k += 1;
                let start = Instant::now();
                call(ws, k, None)?;
                self.gpu.wait()?;
                Ok(start.elapsed())
            });
        };
        let warm = self.warm_calls(estimate);
        let reps = ((budget.as_secs_f64() / estimate.as_secs_f64().max(1e-6)) as usize)
            .clamp(MIN_REPS, MAX_REPS);
        for k in 0..warm {
            call(ws, 2 + k, None)?;
        }
        for i in 0..reps {
            call(ws, 2 + warm + i, Some(i as u32))?;
        }
        let n = 2 * reps as u32;
        let mut enc = self.gpu.encoder();
        enc.resolve_query_set(set, 0..n, resolve, 0);
        self.gpu.submit("bench", enc)?;
        let ticks = self.gpu.read::<u64>(resolve, 0, n as usize)?;
        let period = f64::from(self.gpu.queue().get_timestamp_period());
        let times = ticks
            .chunks(2)
            .map(|t| Duration::from_nanos((t[1].saturating_sub(t[0]) as f64 * period) as u64))
            .collect();
        Ok(Timing::of(times))
    }
}

/// An empty pass that writes timestamp `index` when the queue reaches it.
fn mark(enc: &mut wgpu::CommandEncoder, set: &wgpu::QuerySet, index: u32) {
    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("xent bench mark"),
        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
            query_set: set,
            beginning_of_pass_write_index: Some(index),
            end_of_pass_write_index: None,
        }),
    });
}

/// The smallest copy the bench measures its reference with: smaller ones are launch-bound.
const MIN_COPY_BYTES: u64 = 256 << 20;

/// Bytes per buffer of the run's copy reference: the largest input of the plan's shapes, at
/// least [`MIN_COPY_BYTES`], at most the adapter's largest buffer. A copy reads as slow as
/// its fixed costs make it: on the H100, 256 MiB moved 2 380 GB/s and sigmoid over 4096 ×
/// 32 000 (500 MiB each way) 2 938, so a smaller copy put the large rows above 100 %.
fn copy_bytes(gpu: &Gpu, plan: &Plan) -> u64 {
    let largest = plan.shapes.iter().map(|&(r, c)| (r * c * 4) as u64).max();
    let most = gpu.inner.limits.max_buffer_size;
    largest.unwrap_or(0).max(MIN_COPY_BYTES).min(most) & !3
}

/// Device-to-device copy bandwidth of `bytes`-byte buffers, counting bytes read plus
/// bytes written, timed like the ops (see [`Report::gpu_timer`]) for about `budget`: the
/// faster of the API's buffer copy and a copy kernel launched like the activations. Either
/// can be the slow one: on an H200 (Vulkan) the buffer copy moved 850 GB/s and a kernel
/// 4 200 GB/s; on lavapipe the buffer copy is a memcpy, 2–3 times the kernel.
pub fn copy_bandwidth(gpu: &Gpu, bytes: u64, budget: Duration) -> Result<f64> {
    copy_bandwidth_with(&GpuTimer::new(gpu), bytes, budget)
}

fn copy_bandwidth_with(timer: &GpuTimer, bytes: u64, budget: Duration) -> Result<f64> {
    let gpu = &timer.gpu;
    let n = (bytes / 4) as usize;
    let src = Tensor::zeros(gpu, 1, n)?;
    let dst = Tensor::zeros(gpu, 1, n)?;
    let mut ws = Workspace::new(gpu);
    let buffer = timer.measure(&mut ws, budget, |_, enc, _| {
        enc.copy_buffer_to_buffer(
            src.buffer(),
            src.offset(),
            dst.buffer(),
            dst.offset(),
            bytes,
        );
        Ok(())
    })?;
    let kernel = timer.measure(&mut ws, budget, |ws, enc, _| src.record_copy(ws, enc, &dst))?;
    Ok(gbps(2 * bytes, buffer.median.min(kernel.median)))
}

/// Deterministic pseudo-random logits (no RNG dependency in the library).
fn inputs(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 16.0
        })
        .collect()
}

/// The ops of the table; `cross_entropy_loop` times [`LOOP_STEPS`] training steps recorded
/// back to back with one [`Workspace`] and nothing read back, [`LINEAR`] is linear
/// cross-entropy's own table ([`LinearRow`]). An op ending in `_bf16` or `_f16` is the same
/// op on rows of that type: half the bytes of f32.
pub const OPS: [&str; 17] = [
    "softmax",
    "softmax_bf16",
    "softmax_f16",
    "log_softmax",
    "logsumexp",
    "sigmoid",
    "logit",
    "cross_entropy",
    "cross_entropy_bf16",
    "cross_entropy_f16",
    "bce",
    "entropy",
    "kl",
    "js",
    "joint",
    "cross_entropy_loop",
    LINEAR,
];

/// The unfused cross-entropy sequence the fused kernel is measured against: log-softmax into
/// `lp`, then the gather `loss = -lp[y]`, then the gradient `grad = exp(lp) - one_hot(y)`;
/// three launches that move about 5 `rows × K` arrays where the fused kernel moves 3 (the
/// logits read twice, the gradient written once). Class-index targets, reduction none.
pub fn unfused(
    logits: &Tensor,
    targets: &Targets,
    lp: &Tensor,
    loss: &Tensor,
    grad: &Tensor,
) -> Result<()> {
    logits.submit_with("unfused cross-entropy", |ws, enc| {
        let opts = SoftmaxOptions::default();
        logits.record_softmax(ws, enc, lp, SoftmaxKind::LogSoftmax, &opts)?;
        lp.record_unfused_cross_entropy(ws, enc, targets, loss, grad)
    })
}

/// Runs `plan`: for each shape, the GPU-resident times of all its ops first, back to back
/// (`time_resident` says why), then each op's other columns; `on_row` sees each row as soon
/// as it is complete (with its index and the plan's row count). When `stop` is set (by a
/// Ctrl-C handler, say) the run ends after the row under way and returns the rows so far.
pub fn run(
    gpu: Option<&Gpu>,
    plan: &Plan,
    stop: &AtomicBool,
    mut on_row: impl FnMut(&Report, usize, usize),
) -> Result<Report> {
    let gpu = gpu.filter(|_| plan.gpu);
    let timer = gpu.map(GpuTimer::new);
    let copy_gbps = match (&timer, gpu) {
        (Some(t), Some(g)) => Some(copy_bandwidth_with(t, copy_bytes(g, plan), plan.budget)?),
        _ => None,
    };
    let mut report = Report {
        adapter: gpu.map(Gpu::describe),
        adapter_info: gpu.map(|g| {
            let i = g.adapter_info();
            AdapterSummary {
                name: i.name.clone(),
                backend: format!("{:?}", i.backend),
                driver: format!("{} {}", i.driver, i.driver_info),
            }
        }),
        gpu_timer: timer.as_ref().map(GpuTimer::method),
        copy_gbps,
        rows: Vec::new(),
        linear: Vec::new(),
        peer: plan.peer.clone(),
    };
    let total = plan.len();
    for &(r, c) in &plan.shapes {
        let n = r * c;
        // Three input sets, rotated, so that no cache holds the input between calls.
        let host: Vec<Vec<f32>> = (0..3).map(|k| inputs(n, k)).collect();
        let probs: Vec<Vec<f32>> = host
            .iter()
            .map(|x| x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect())
            .collect();
        let aux = Aux {
            classes: (0..r).map(|i| ((i * 7919) % c) as i32).collect(),
            probs: probs[0].clone(),
            q: inputs(n, 7),
            table_x: table_rows(c),
        };
        let ops: Vec<&'static str> = plan.row_ops().collect();
        let resident = match &timer {
            Some(t) => time_resident(t, &ops, (&host, &probs), &aux, (r, c), (plan.budget, stop))?,
            None => BTreeMap::new(),
        };
        // Upload and readback times at this shape, measured with the first GPU row.
        let mut transfers = None;
        for &op in &ops {
            if stop.load(Ordering::Relaxed) {
                return Ok(report);
            }
            let data = if op == "logit" { &probs } else { &host };
            if let (Some(g), None) = (gpu, transfers)
                && op != "cross_entropy_loop"
            {
                transfers = Some(time_transfers(g, &host, (r, c), plan.budget)?);
            }
            // The loop's CPU side is one cross-entropy call: a step of the same work.
            let single = if op == "cross_entropy_loop" {
                "cross_entropy"
            } else {
                op
            };
            let cpu = plan
                .cpu
                .then(|| time_cpu(single, data, c, &aux, plan.budget))
                .transpose()?;
            let (gpu_t, e2e, steps) = match (gpu, timer.as_ref()) {
                (Some(_), Some(timer)) if op == "cross_entropy_loop" => {
                    let steps = if n <= 1 << 24 {
                        LOOP_STEPS
                    } else {
                        LOOP_STEPS / 10
                    };
                    let t = cross_entropy_loop(timer, &host[0], (r, c), &aux.classes, steps)?;
                    (Some(t), None, steps)
                }
                (Some(g), Some(_)) => {
                    let e = time_slices(g, op, data, c, &aux, plan.budget)?;
                    (resident.get(op).copied(), Some(e), 1)
                }
                _ => (None, None, 1),
            };
            let row = Row {
                op,
                rows: r,
                cols: c,
                bytes: bytes_moved(single, r, c),
                gpu: gpu_t,
                gpu_end_to_end: e2e,
                gpu_upload: transfers.filter(|_| e2e.is_some()).map(|t| t.0),
                gpu_readback: transfers.filter(|_| e2e.is_some()).map(|t| t.1),
                cpu,
                steps,
            };
            report.rows.push(row);
            on_row(&report, report.rows.len(), total);
        }
    }
    for &shape in plan.linear_shapes() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let row = time_linear(timer.as_ref(), plan.cpu, shape, plan.budget)?;
        report.linear.push(row);
        on_row(&report, report.rows.len() + report.linear.len(), total);
    }
    Ok(report)
}

/// Measures linear cross-entropy at `(n, hidden, classes)` ([`LinearRow`]): on the GPU of
/// `timer` if any, on the CPU path if `cpu`.
fn time_linear(
    timer: Option<&GpuTimer>,
    cpu: bool,
    (n, hs, v): (usize, usize, usize),
    budget: Duration,
) -> Result<LinearRow> {
    // Hidden states of about unit size and a weight of 1/√H, as a trained head has.
    let scaled = |len, seed, by: f32| -> Vec<f32> {
        inputs(len, seed).iter().map(|x| x / 16.0 * by).collect()
    };
    let h = scaled(n * hs, 0, 2.0);
    let w = scaled(v * hs, 1, 2.0 / (hs as f32).sqrt());
    let classes: Vec<i32> = (0..n).map(|i| ((i * 7919) % v) as i32).collect();
    let opts = LinearCrossEntropyOptions {
        grad_input: true,
        grad_weight: true,
        ..LinearCrossEntropyOptions::default()
    };
    let mut row = LinearRow {
        n,
        hidden: hs,
        classes: v,
        fused: None,
        unfused: None,
        fused_bytes: None,
        unfused_bytes: None,
        gemm: None,
        cpu: None,
        cpu_gemm: None,
    };
    if let Some(timer) = timer {
        let g = &timer.gpu;
        let ht = Tensor::from_slice(g, &h, n, hs)?;
        let wt = Tensor::from_slice(g, &w, v, hs)?;
        let t = Targets::from_i32(g, &classes)?;
        let (loss, dh, dw) = (
            Tensor::zeros(g, 1, 1)?,
            Tensor::zeros(g, n, hs)?,
            Tensor::zeros(g, v, hs)?,
        );
        let head = Linear {
            weight: &wt,
            bias: None,
        };
        let out = LinearOut {
            loss: &loss,
            grad_input: Some(&dh),
            grad_weight: Some(&dw),
            grad_bias: None,
            extras: Default::default(),
        };
        let allocated = || g.stats().bytes_allocated;
        let before = allocated();
        let mut ws = Workspace::new(g);
        row.fused = Some(timer.measure(&mut ws, budget, |ws, enc, _| {
            ht.record_linear_cross_entropy(ws, enc, head, &t, None, &opts, out)
        })?);
        row.fused_bytes = Some(allocated() - before);
        drop(ws);
        let before = allocated();
        let mut ws = Workspace::new(g);
        let logits = Tensor::zeros(g, n, v)?;
        row.unfused = Some(timer.measure(&mut ws, budget, |ws, enc, _| {
            ht.record_unfused_linear(ws, enc, (&wt, &t), (&logits, &loss), (&dh, &dw))
        })?);
        row.unfused_bytes = Some(allocated() - before);
        row.gemm = Some(timer.measure(&mut ws, budget, |ws, enc, _| {
            ht.record_logits_product(ws, enc, &wt, &logits)
        })?);
    }
    if cpu {
        let head = Linear {
            weight: &w[..],
            bias: None,
        };
        row.cpu = Some(measure_wall(budget, || {
            cpu::linear_cross_entropy(&h, hs, head, Target::I32(&classes), None, &opts).map(drop)
        })?);
        let mut logits = vec![0.0f32; n * v];
        row.cpu_gemm = Some(measure_wall(budget, || {
            cpu::linear::product((n, hs, v), (&h, hs, 1), (&w, 1, hs), 0.0, &mut logits);
            Ok(())
        })?);
    }
    Ok(row)
}

/// The op of the table `op` names and the element type of its rows: `softmax_bf16` is
/// softmax on bf16 rows.
fn op_type(op: &str) -> (&str, DType) {
    if let Some(base) = op.strip_suffix("_bf16") {
        (base, DType::Bf16)
    } else if let Some(base) = op.strip_suffix("_f16") {
        (base, DType::F16)
    } else {
        (op, DType::F32)
    }
}

/// The fewest bytes `op` must move on `rows × cols` (row-shaped arrays of its type, per-row
/// values f32).
fn bytes_moved(op: &str, rows: usize, cols: usize) -> u64 {
    let (op, dtype) = op_type(op);
    let e = dtype.bytes() as u64;
    let (n, r) = ((rows * cols) as u64, rows as u64);
    match op {
        "logsumexp" | "entropy" => e * n + 4 * r,
        // Logits read, gradient written, targets read.
        "cross_entropy" => 2 * e * n + 4 * r,
        "bce" => 3 * e * n,
        "kl" | "js" => 2 * e * n + 4 * r,
        "joint" => e * n + 20 * r,
        _ => 2 * e * n,
    }
}

/// The wall clock of a call through `b` (the CPU path, or the GPU's slice-in / `Vec`-out
/// path), the three input sets in turn.
fn time_slices(
    b: &dyn Backend,
    op: &str,
    data: &[Vec<f32>],
    cols: usize,
    aux: &Aux,
    budget: Duration,
) -> Result<Timing> {
    let (op, dtype) = op_type(op);
    let b = b.typed(dtype);
    measure_sets(budget, data, |x| run_slices(&*b, op, x, cols, aux))
}

/// The wall clock of the CPU path's call, the three input sets in turn: the f32 slices
/// of [`time_slices`], or for a half-precision row the inputs converted to that type
/// beforehand and the typed call ([`cpu::softmax`], [`cpu::cross_entropy`] of `bf16` or
/// `f16` rows, results of that type).
fn time_cpu(
    op: &str,
    data: &[Vec<f32>],
    cols: usize,
    aux: &Aux,
    budget: Duration,
) -> Result<Timing> {
    match op_type(op) {
        (op, DType::Bf16) => time_typed::<half::bf16>(op, data, cols, aux, budget),
        (op, DType::F16) => time_typed::<half::f16>(op, data, cols, aux, budget),
        _ => time_slices(&Cpu, op, data, cols, aux, budget),
    }
}

/// [`time_cpu`] on rows of `E`: softmax and cross-entropy (the ops the table has in half
/// precision).
fn time_typed<E: Element>(
    op: &str,
    data: &[Vec<f32>],
    cols: usize,
    aux: &Aux,
    budget: Duration,
) -> Result<Timing> {
    let data: Vec<Vec<E>> = data.iter().map(|x| E::from_f32s(x)).collect();
    measure_sets(budget, &data, |x| match op {
        "softmax" => {
            cpu::softmax(x, cols, SoftmaxKind::Softmax, &SoftmaxOptions::default()).map(drop)
        }
        "cross_entropy" => {
            let t = Target::I32(&aux.classes);
            let opts = CrossEntropyOptions::default();
            cpu::cross_entropy(x, cols, t, None, &opts, Grad::New).map(drop)
        }
        _ => Err(Error::Internal(format!("no {} CPU row for {op}", E::DTYPE))),
    })
}

/// Upload and readback of one `rows × cols` f32 tensor through the staging pool: a write
/// into a resident tensor (waited for), a read into a host slice.
fn time_transfers(
    g: &Gpu,
    data: &[Vec<f32>],
    (r, c): (usize, usize),
    budget: Duration,
) -> Result<(Timing, Timing)> {
    let t = Tensor::from_slice(g, &data[0], r, c)?;
    let upload = measure_sets(budget, data, |x| {
        t.write(x)?;
        g.wait()
    })?;
    let mut host = vec![0.0; r * c];
    let readback = measure_wall(budget, || t.read_into(&mut host))?;
    Ok((upload, readback))
}

/// The resident GPU times of a shape's ops (`cross_entropy_loop` aside, which times itself),
/// measured one after the other on inputs uploaded once, so that the GPU stays busy from one
/// op to the next (an upload between them would let its clock fall, see [`GPU_WARM`]);
/// cross-entropy last, as it writes its gradient over its input. Stops early when `stop` is
/// set.
fn time_resident(
    timer: &GpuTimer,
    ops: &[&'static str],
    (host, probs): (&[Vec<f32>], &[Vec<f32>]),
    aux: &Aux,
    (r, c): (usize, usize),
    (budget, stop): (Duration, &AtomicBool),
) -> Result<BTreeMap<&'static str, Timing>> {
    let g = &timer.gpu;
    let upload = |sets: &[Vec<f32>], dtype| {
        sets.iter()
            .map(|x| Tensor::upload_pooled(g, x, (r, c), dtype))
            .collect::<Result<Vec<_>>>()
    };
    // Per element type the ops read: the inputs, and the row-shaped output for the ops that
    // write one.
    let mut typed: Vec<(DType, Vec<Tensor>, Tensor)> = Vec::new();
    for &op in ops {
        let (_, dtype) = op_type(op);
        if typed.iter().all(|(t, ..)| *t != dtype) {
            typed.push((
                dtype,
                upload(host, dtype)?,
                Tensor::zeros_as(g, r, c, dtype)?,
            ));
        }
    }
    let p = upload(probs, DType::F32)?;
    let gpu_aux = GpuAux {
        classes: Targets::from_i32(g, &aux.classes)?,
        probs: Tensor::from_slice(g, &aux.probs, r, c)?,
        q: Tensor::from_slice(g, &aux.q, r, c)?,
        table_x: aux.table_x,
        loss: Tensor::zeros(g, 1, 1)?,
        per_row: Tensor::zeros(g, r, 1)?,
        joint: Tensor::zeros(g, r, 5)?,
    };
    let mut ws = Workspace::new(g);
    let mut order: Vec<_> = ops
        .iter()
        .filter(|&&op| op != "cross_entropy_loop")
        .collect();
    order.sort_by_key(|&&op| op_type(op).0 == "cross_entropy");
    let mut times = BTreeMap::new();
    for &op in order {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (base, dtype) = op_type(op);
        let Some((_, x, out)) = typed.iter().find(|(t, ..)| *t == dtype) else {
            return Err(Error::Internal(format!("no {dtype} inputs for {op}")));
        };
        let xs = if op == "logit" { &p } else { x };
        let t = timer.measure(&mut ws, budget, |ws, enc, k| {
            record_gpu(base, &xs[k % 3], out, &gpu_aux, ws, enc)
        })?;
        times.insert(op, t);
    }
    Ok(times)
}

/// Steps of the `cross_entropy_loop` row (a tenth of them past 2^24 logits).
pub const LOOP_STEPS: usize = 100;

/// Wall-clock time per step of `steps` training steps of the fused cross-entropy (mean, the
/// gradient in place), each recorded into its own encoder and submitted, one workspace, no
/// readback; after warm-up steps (two waited for, then the timer's warm-up queued), until the
/// GPU is idle. One repetition: `steps` of them already average.
fn cross_entropy_loop(
    timer: &GpuTimer,
    x: &[f32],
    (rows, cols): (usize, usize),
    classes: &[i32],
    steps: usize,
) -> Result<Timing> {
    let gpu = &timer.gpu;
    let z = Tensor::from_slice(gpu, x, rows, cols)?;
    let targets = Targets::from_i32(gpu, classes)?;
    let loss = Tensor::zeros(gpu, 1, 1)?;
    let opts = CrossEntropyOptions::default();
    let mut ws = Workspace::new(gpu);
    let step = |ws: &mut Workspace| {
        let mut enc = gpu.encoder();
        let out = LossOut {
            loss: &loss,
            grad: GradOut::InPlace,
        };
        z.record_cross_entropy(ws, &mut enc, &targets, None, &opts, out)?;
        gpu.queue().submit([enc.finish()]);
        Ok::<(), Error>(())
    };
    step(&mut ws)?;
    gpu.wait()?;
    let start = Instant::now();
    step(&mut ws)?;
    gpu.wait()?;
    for _ in 0..timer.warm_calls(start.elapsed()) {
        step(&mut ws)?;
    }
    gpu.wait()?;
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut ws)?;
    }
    gpu.wait()?;
    let per_step = start.elapsed() / steps as u32;
    ws.check_targets()?;
    Ok(Timing {
        median: per_step,
        reps: 1,
        spread: 0.0,
    })
}

/// The second inputs: class indices (cross-entropy), probabilities (BCE targets, joint
/// tables), Q's logits (divergences), and X of the joint tables.
struct Aux {
    classes: Vec<i32>,
    probs: Vec<f32>,
    q: Vec<f32>,
    table_x: usize,
}

/// [`Aux`] on the GPU.
struct GpuAux {
    classes: Targets,
    probs: Tensor,
    q: Tensor,
    table_x: usize,
    /// A reduced loss (`1 × 1`).
    loss: Tensor,
    /// One value per row.
    per_row: Tensor,
    /// A joint table's five entropies per row.
    joint: Tensor,
}

/// X of an X × Y joint table of `cells` cells: the largest divisor up to its square root.
fn table_rows(cells: usize) -> usize {
    (1..=cells.isqrt())
        .rev()
        .find(|x| cells.is_multiple_of(*x))
        .unwrap_or(1)
}

/// The information-theory ops of the table read logits (the distillation setting).
fn from_logits() -> InfoOptions {
    InfoOptions::default().with_form(Form::Logits)
}

/// Runs `op` on host slices through `b` (the CPU path, or the GPU's slice-in / `Vec`-out
/// path). Cross-entropy asks for the gradient in place, as [`record_gpu`] does (on the CPU the
/// same as a new one).
fn run_slices(b: &dyn Backend, op: &str, x: &[f32], cols: usize, aux: &Aux) -> Result<()> {
    let opts = SoftmaxOptions::default();
    match op {
        "softmax" => b.softmax(x, cols, &opts).map(drop),
        "log_softmax" => b.log_softmax(x, cols, &opts).map(drop),
        "logsumexp" => b.logsumexp(x, cols, &opts).map(drop),
        "sigmoid" => b.activation(x, Activation::Sigmoid).map(drop),
        "logit" => b.activation(x, Activation::Logit).map(drop),
        "cross_entropy" => {
            let t = Target::I32(&aux.classes);
            let opts = CrossEntropyOptions::default();
            b.cross_entropy(x, cols, t, None, &opts, Grad::InPlace)
                .map(drop)
        }
        "bce" => {
            let w = BceWeights::default();
            b.bce_with_logits(x, cols, &aux.probs, w, &BceOptions::default(), Grad::New)
                .map(drop)
        }
        "entropy" => b.entropy(x, cols, &from_logits()).map(drop),
        "kl" => b
            .divergence(x, &aux.q, cols, Divergence::Kl, &from_logits(), Grad::None)
            .map(drop),
        "js" => b
            .divergence(x, &aux.q, cols, Divergence::Js, &from_logits(), Grad::None)
            .map(drop),
        _ => b
            .joint_entropies(&aux.probs, cols, aux.table_x, &InfoOptions::default())
            .map(drop),
    }
}

/// Records `op` on `x` into `enc`, its outputs into `out` (row-shaped and per-row results;
/// a BCE's gradient) and `aux`'s loss tensors. Cross-entropy writes its gradient in place
/// (the large-vocabulary setting): the input's contents change from call to call, its cost
/// does not.
fn record_gpu(
    op: &str,
    x: &Tensor,
    out: &Tensor,
    aux: &GpuAux,
    ws: &mut Workspace,
    enc: &mut wgpu::CommandEncoder,
) -> Result<()> {
    let opts = SoftmaxOptions::default();
    let loss = |grad| LossOut {
        loss: &aux.loss,
        grad,
    };
    match op {
        "softmax" => x.record_softmax(ws, enc, out, SoftmaxKind::Softmax, &opts),
        "log_softmax" => x.record_softmax(ws, enc, out, SoftmaxKind::LogSoftmax, &opts),
        "logsumexp" => x.record_logsumexp(ws, enc, &aux.per_row, &opts),
        "sigmoid" => x.record_activation(ws, enc, out, Activation::Sigmoid),
        "logit" => x.record_activation(ws, enc, out, Activation::Logit),
        "cross_entropy" => x.record_cross_entropy(
            ws,
            enc,
            &aux.classes,
            None,
            &CrossEntropyOptions::default(),
            loss(GradOut::InPlace),
        ),
        "bce" => x.record_bce_with_logits(
            ws,
            enc,
            &aux.probs,
            (None, None),
            &BceOptions::default(),
            loss(GradOut::Into(out)),
        ),
        "entropy" => x.record_entropy(ws, enc, &from_logits(), &aux.per_row),
        "kl" | "js" => {
            let kind = if op == "kl" {
                Divergence::Kl
            } else {
                Divergence::Js
            };
            let per_row = LossOut {
                loss: &aux.per_row,
                grad: GradOut::None,
            };
            x.record_divergence(ws, enc, &aux.q, kind, &from_logits(), per_row)
        }
        _ => aux.probs.record_joint_entropies(
            ws,
            enc,
            aux.table_x,
            &InfoOptions::default(),
            &aux.joint,
        ),
    }
}

impl Report {
    /// The same rows as JSON: the adapter (name, backend, driver), the copy bandwidth, and
    /// per row the op, shape, bytes, times in ms, GB/s and the GPU/copy ratio (`null` where a
    /// path did not run).
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |t: Option<Timing>| t.map(|t| t.median.as_secs_f64() * 1e3);
        let reps = |t: Option<Timing>| t.map(|t| t.reps);
        let spread = |t: Option<Timing>| t.map(|t| t.spread);
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let g = r.gpu.map(|t| gbps(r.bytes, t.median));
                serde_json::json!({
                    "op": r.op,
                    "rows": r.rows,
                    "cols": r.cols,
                    "bytes": r.bytes,
                    "gpu_ms": ms(r.gpu),
                    "gpu_end_to_end_ms": ms(r.gpu_end_to_end),
                    "gpu_upload_ms": ms(r.gpu_upload),
                    "gpu_readback_ms": ms(r.gpu_readback),
                    "cpu_ms": ms(r.cpu),
                    "gpu_gbps": g,
                    "cpu_gbps": r.cpu.map(|t| gbps(r.bytes, t.median)),
                    "gpu_copy_ratio": g.zip(self.copy_gbps).map(|(g, c)| g / c),
                    "speedup": r.speedup(),
                    "peer_ms": self.peer.as_ref().and_then(|p| p.time(r)),
                    "steps": r.steps,
                    "reps": {
                        "gpu": reps(r.gpu),
                        "gpu_end_to_end": reps(r.gpu_end_to_end),
                        "gpu_upload": reps(r.gpu_upload),
                        "gpu_readback": reps(r.gpu_readback),
                        "cpu": reps(r.cpu),
                    },
                    "spread": {
                        "gpu": spread(r.gpu),
                        "gpu_end_to_end": spread(r.gpu_end_to_end),
                        "gpu_upload": spread(r.gpu_upload),
                        "gpu_readback": spread(r.gpu_readback),
                        "cpu": spread(r.cpu),
                    },
                })
            })
            .collect();
        serde_json::json!({
            "adapter": self.adapter_info.as_ref().map(|a| serde_json::json!({
                "name": a.name,
                "backend": a.backend,
                "driver": a.driver,
            })),
            "gpu_timer": self.gpu_timer,
            "copy_gbps": self.copy_gbps,
            "peer": self.peer.as_ref().map(|p| p.name.clone()),
            "peer_beside": self.peer.as_ref().map(Peer::beside),
            "rows": rows,
            "linear": self.linear.iter().map(|r| {
                let gflops = |t: Option<Timing>, products: f64| {
                    t.map(|t| products * r.product_flops() / t.median.as_secs_f64() / 1e9)
                };
                serde_json::json!({
                    "n": r.n,
                    "hidden": r.hidden,
                    "classes": r.classes,
                    "fused_ms": ms(r.fused),
                    "unfused_ms": ms(r.unfused),
                    "gemm_ms": ms(r.gemm),
                    "cpu_ms": ms(r.cpu),
                    "cpu_gemm_ms": ms(r.cpu_gemm),
                    "fused_gflops": gflops(r.fused, 3.0),
                    "unfused_gflops": gflops(r.unfused, 3.0),
                    "gemm_gflops": gflops(r.gemm, 1.0),
                    "cpu_gflops": gflops(r.cpu, 3.0),
                    "cpu_gemm_gflops": gflops(r.cpu_gemm, 1.0),
                    "fused_bytes": r.fused_bytes,
                    "unfused_bytes": r.unfused_bytes,
                    "peer_ms": self.peer.as_ref().and_then(|p| p.linear_time(r)),
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// Draws GB/s per op and shape, GPU beside CPU, as an SVG file (written under a
    /// temporary name and renamed on success).
    pub fn plot(&self, path: &std::path::Path) -> Result<()> {
        use plotters::prelude::*;
        let file_err = |message: String| crate::Error::File {
            path: path.display().to_string(),
            message,
        };
        let labels: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{} {}x{}", r.op, r.rows, r.cols))
            .collect();
        let gpu: Vec<Option<f64>> = self
            .rows
            .iter()
            .map(|r| r.gpu.map(|t| gbps(r.bytes, t.median)))
            .collect();
        let cpu: Vec<Option<f64>> = self
            .rows
            .iter()
            .map(|r| r.cpu.map(|t| gbps(r.bytes, t.median)))
            .collect();
        let top = gpu
            .iter()
            .chain(&cpu)
            .flatten()
            .fold(0.0f64, |m, &v| m.max(v))
            .max(1e-3)
            * 1.1;
        let mut svg = String::new();
        {
            let height = 160 + 22 * labels.len() as u32;
            let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| file_err(e.to_string()))?;
            let title = match (&self.adapter_info, self.copy_gbps) {
                (Some(a), Some(c)) => {
                    format!("{} ({}): GB/s; copy {c:.1} GB/s", a.name, a.backend)
                }
                _ => "CPU GB/s (no GPU)".to_string(),
            };
            let n = labels.len();
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(200)
                .build_cartesian_2d(0.0..top, (0..n).into_segmented())
                .map_err(|e| file_err(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc("GB/s (fewest bytes the op must move)")
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .y_labels(n)
                .draw()
                .map_err(|e| file_err(e.to_string()))?;
            chart
                .draw_series(gpu.iter().enumerate().filter_map(|(i, g)| {
                    g.map(|g| {
                        Rectangle::new(
                            [
                                (0.0, SegmentValue::Exact(i)),
                                (g, SegmentValue::CenterOf(i)),
                            ],
                            BLUE.filled(),
                        )
                    })
                }))
                .map_err(|e| file_err(e.to_string()))?
                .label("GPU")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.filled()));
            chart
                .draw_series(cpu.iter().enumerate().filter_map(|(i, c)| {
                    c.map(|c| {
                        Rectangle::new(
                            [
                                (0.0, SegmentValue::CenterOf(i)),
                                (c, SegmentValue::Exact(i + 1)),
                            ],
                            RED.filled(),
                        )
                    })
                }))
                .map_err(|e| file_err(e.to_string()))?
                .label("CPU")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], RED.filled()));
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()
                .map_err(|e| file_err(e.to_string()))?;
            root.present().map_err(|e| file_err(e.to_string()))?;
        }
        crate::npy::write_bytes(path, svg.as_bytes())
    }

    /// The lines above the rows: the adapter, how GPU time is taken, the copy bandwidth,
    /// the column names.
    pub fn header(&self) -> String {
        let mut s = match (&self.adapter, self.copy_gbps) {
            (Some(a), Some(c)) => format!(
                "GPU: {a}\nGPU times: {}\ncopy: {c:.2} GB/s (read + write)\n",
                self.gpu_timer.unwrap_or("wall clock")
            ),
            _ => "GPU: none (CPU only)\n".to_string(),
        };
        if let Some(p) = &self.peer {
            let on = p.beside();
            s.push_str(&format!("peer: {} (peer ms / {on} ms)\n", p.name));
        }
        s.push_str(&format!(
            "{:<18} {:>14} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>8}",
            "op",
            "shape",
            "GPU ms",
            "GPU e2e ms",
            "CPU ms",
            "speedup",
            "GPU GB/s",
            "CPU GB/s",
            "GPU/copy"
        ));
        if let Some(p) = &self.peer {
            s.push_str(&p.columns());
        }
        s.push('\n');
        s
    }

    /// One row as a line of the table.
    pub fn line(&self, r: &Row) -> String {
        let ms = |t: Option<Timing>| {
            t.map_or("-".to_string(), |t| {
                format!("{:.3}", t.median.as_secs_f64() * 1e3)
            })
        };
        let rate = |t: Option<Timing>| t.map(|t| gbps(r.bytes, t.median));
        let g = rate(r.gpu);
        let mut line = format!(
            "{:<18} {:>14} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>8}",
            r.op,
            format!("{}x{}", r.rows, r.cols),
            ms(r.gpu),
            ms(r.gpu_end_to_end),
            ms(r.cpu),
            r.speedup().map_or("-".into(), |x| format!("{x:.2}x")),
            g.map_or("-".into(), |g| format!("{g:.2}")),
            rate(r.cpu).map_or("-".into(), |c| format!("{c:.2}")),
            match (g, self.copy_gbps) {
                (Some(g), Some(c)) => format!("{:.0}%", 100.0 * g / c),
                _ => "-".into(),
            },
        );
        if let Some(p) = &self.peer {
            let ours = if p.on_cpu { r.cpu } else { r.gpu };
            line.push_str(&Peer::cells(p.time(r), ours));
        }
        line.push('\n');
        line
    }

    /// Linear cross-entropy's table header: GPU fused and unfused (ms, GFLOP/s of the three
    /// products, MB allocated beyond the inputs and gradients), the GPU's product alone, and
    /// the CPU path's op and product.
    pub fn linear_header(&self) -> String {
        let peer = self.peer.as_ref().map_or(String::new(), Peer::columns);
        format!(
            "\nlinear cross-entropy (loss, ∂L/∂h, ∂L/∂W; GFLOP/s of the three products)\n\
             {:<20} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8} {:>10}{peer}\n",
            "N x H x V",
            "fused ms",
            "GFLOP/s",
            "MB",
            "unfused ms",
            "GFLOP/s",
            "MB",
            "GEMM GF/s",
            "CPU ms",
            "GFLOP/s",
            "CPU GEMM"
        )
    }

    /// One linear cross-entropy row as a line of its table.
    pub fn linear_line(&self, r: &LinearRow) -> String {
        let ms = |t: Option<Timing>| {
            t.map_or("-".to_string(), |t| {
                format!("{:.1}", t.median.as_secs_f64() * 1e3)
            })
        };
        let rate = |t: Option<Timing>, products: f64| {
            t.map_or("-".to_string(), |t| {
                format!(
                    "{:.1}",
                    products * r.product_flops() / t.median.as_secs_f64() / 1e9
                )
            })
        };
        let mb = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1e6));
        let peer = self.peer.as_ref().map_or(String::new(), |p| {
            let ours = if p.on_cpu { r.cpu } else { r.fused };
            Peer::cells(p.linear_time(r), ours)
        });
        format!(
            "{:<20} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8} {:>10}{peer}\n",
            format!("{}x{}x{}", r.n, r.hidden, r.classes),
            ms(r.fused),
            rate(r.fused, 3.0),
            mb(r.fused_bytes),
            ms(r.unfused),
            rate(r.unfused, 3.0),
            mb(r.unfused_bytes),
            rate(r.gemm, 1.0),
            ms(r.cpu),
            rate(r.cpu, 3.0),
            rate(r.cpu_gemm, 1.0),
        )
    }

    /// The text of row `done` (counted from 1 over the main table, then linear
    /// cross-entropy's) with the headers that go before it, and a short label for it.
    pub fn entry(&self, done: usize) -> (String, String) {
        let i = done - 1;
        if let Some(r) = self.rows.get(i) {
            let header = if i == 0 { self.header() } else { String::new() };
            let label = format!("{} {}x{}", r.op, r.rows, r.cols);
            return (header + &self.line(r), label);
        }
        let j = i - self.rows.len();
        let Some(r) = self.linear.get(j) else {
            return (String::new(), String::new());
        };
        let mut header = if i == 0 { self.header() } else { String::new() };
        if j == 0 {
            header.push_str(&self.linear_header());
        }
        let label = format!("{LINEAR} {}x{}x{}", r.n, r.hidden, r.classes);
        (header + &self.linear_line(r), label)
    }

    /// The table as aligned text: [`Report::header`], then a [`Report::line`] per row, then
    /// linear cross-entropy's table if it ran.
    pub fn table(&self) -> String {
        let mut s = self.header();
        for r in &self.rows {
            s.push_str(&self.line(r));
        }
        if !self.linear.is_empty() {
            s.push_str(&self.linear_header());
            for r in &self.linear {
                s.push_str(&self.linear_line(r));
            }
        }
        s
    }
}

impl Row {
    /// CPU time over GPU time, where both ran.
    pub fn speedup(&self) -> Option<f64> {
        let (g, c) = (self.gpu?, self.cpu?);
        Some(c.median.as_secs_f64() / g.median.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(ms: u64) -> Timing {
        Timing {
            median: Duration::from_millis(ms),
            reps: 3,
            spread: 0.1,
        }
    }

    #[test]
    fn json_rows_carry_the_adapter_and_the_copy_ratio() {
        let report = Report {
            adapter: Some("test adapter".into()),
            adapter_info: Some(AdapterSummary {
                name: "llvmpipe".into(),
                backend: "Vulkan".into(),
                driver: "Mesa".into(),
            }),
            gpu_timer: Some("timestamp queries"),
            copy_gbps: Some(20.0),
            rows: vec![Row {
                op: "softmax",
                rows: 2,
                cols: 5,
                bytes: 10_000_000,
                gpu: Some(timing(1)),
                gpu_end_to_end: Some(timing(2)),
                gpu_upload: Some(timing(1)),
                gpu_readback: Some(timing(1)),
                cpu: Some(timing(4)),
                steps: 1,
            }],
            linear: vec![LinearRow {
                n: 100,
                hidden: 50,
                classes: 1000,
                fused: Some(timing(30)),
                unfused: Some(timing(40)),
                fused_bytes: Some(1 << 20),
                unfused_bytes: Some(1 << 22),
                gemm: Some(timing(10)),
                cpu: None,
                cpu_gemm: None,
            }],
            peer: None,
        };
        let json = report.to_json();
        assert_eq!(json["adapter"]["backend"], "Vulkan");
        // 2·100·50·1000 = 10 MFLOP a product, three in 30 ms: 1 GFLOP/s.
        let linear = &json["linear"][0];
        assert!((linear["fused_gflops"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert!((linear["gemm_gflops"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(linear["unfused_bytes"], 1 << 22);
        assert!(linear["cpu_ms"].is_null());
        let table = report.table();
        assert!(table.contains("100x50x1000") && table.contains("linear cross-entropy"));
        assert_eq!(report.entry(2).1, "linear_cross_entropy 100x50x1000");
        let row = &json["rows"][0];
        assert_eq!(row["op"], "softmax");
        assert!((row["gpu_gbps"].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!((row["gpu_copy_ratio"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert!((row["speedup"].as_f64().unwrap() - 4.0).abs() < 1e-9);
        assert!((row["gpu_upload_ms"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        let cpu_only = Report {
            adapter: None,
            adapter_info: None,
            gpu_timer: None,
            copy_gbps: None,
            rows: report
                .rows
                .iter()
                .map(|r| Row {
                    gpu: None,
                    gpu_end_to_end: None,
                    gpu_upload: None,
                    gpu_readback: None,
                    ..r.clone()
                })
                .collect(),
            linear: Vec::new(),
            peer: None,
        };
        let json = cpu_only.to_json();
        assert!(json["adapter"].is_null() && json["rows"][0]["gpu_copy_ratio"].is_null());

        let dir = tempfile::tempdir().unwrap();
        for (name, r) in [("gpu.svg", &report), ("cpu.svg", &cpu_only)] {
            let path = dir.path().join(name);
            r.plot(&path).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("softmax 2x5"),
                "{svg}"
            );
        }
    }

    #[test]
    fn a_peers_times_sit_beside_the_rows_they_match() {
        let text = r#"{"peer": "PyTorch 2.11.0 eager", "device": "NVIDIA H200", "rows": [
            {"op": "softmax", "rows": 2, "cols": 5, "ms": 0.5, "reps": 51},
            {"op": "softmax", "rows": 4, "cols": 5, "ms": 9.0, "reps": 3},
            {"op": "linear_cross_entropy", "rows": 8, "cols": 100, "hidden": 16, "ms": 4.0}]}"#;
        let peer = Peer::from_json(text).unwrap();
        assert_eq!(peer.name, "PyTorch 2.11.0 eager on NVIDIA H200");
        let row = |op, cols| Row {
            op,
            rows: 2,
            cols,
            bytes: 80,
            gpu: Some(timing(2)),
            gpu_end_to_end: None,
            gpu_upload: None,
            gpu_readback: None,
            cpu: None,
            steps: 1,
        };
        let report = Report {
            adapter: Some("test adapter".into()),
            adapter_info: None,
            gpu_timer: Some("timestamp queries"),
            copy_gbps: Some(20.0),
            rows: vec![row("softmax", 5), row("softmax", 6), row("kl", 5)],
            linear: [16, 32]
                .map(|hidden| LinearRow {
                    n: 8,
                    hidden,
                    classes: 100,
                    fused: Some(timing(2)),
                    unfused: None,
                    fused_bytes: None,
                    unfused_bytes: None,
                    gemm: None,
                    cpu: None,
                    cpu_gemm: None,
                })
                .to_vec(),
            peer: Some(peer),
        };
        // The peer's linear row matches the shape with its hidden size only.
        let linear: Vec<String> = report
            .linear
            .iter()
            .map(|r| report.linear_line(r))
            .collect();
        assert!(
            linear[0].trim_end().ends_with("4.000     2.00x"),
            "{}",
            linear[0]
        );
        assert!(
            linear[1].trim_end().ends_with("-         -"),
            "{}",
            linear[1]
        );
        assert!(report.linear_header().contains("peer/GPU"));
        assert_eq!(report.to_json()["linear"][0]["peer_ms"], 4.0);
        assert!(
            report
                .header()
                .contains("peer: PyTorch 2.11.0 eager on NVIDIA H200")
        );
        let lines: Vec<String> = report.rows.iter().map(|r| report.line(r)).collect();
        assert!(
            lines[0].trim_end().ends_with("0.500     0.25x"),
            "{}",
            lines[0]
        );
        assert!(lines[1].trim_end().ends_with("-         -"), "{}", lines[1]);
        let json = report.to_json();
        assert_eq!(json["peer"], "PyTorch 2.11.0 eager on NVIDIA H200");
        assert_eq!(json["rows"][0]["peer_ms"], 0.5);
        assert!(json["rows"][2]["peer_ms"].is_null());
        // A peer on the CPU sits beside xent's CPU column (1 ms here).
        let text = text.replace(
            r#""device": "NVIDIA H200","#,
            r#""device": "c", "device_type": "cpu","#,
        );
        let on_cpu = Report {
            peer: Some(Peer::from_json(&text).unwrap()),
            rows: vec![Row {
                cpu: Some(timing(1)),
                ..report.rows[0].clone()
            }],
            ..report
        };
        assert!(
            on_cpu.header().contains("peer/CPU") && on_cpu.linear_header().contains("peer/CPU")
        );
        let line = on_cpu.line(&on_cpu.rows[0]);
        assert!(line.trim_end().ends_with("0.500     0.50x"), "{line}");
        assert_eq!(on_cpu.to_json()["peer_beside"], "CPU");
        for bad in [
            "[]",
            r#"{"peer": "p", "device": "d"}"#,
            r#"{"peer": "p", "device": "d", "rows": [{"op": "softmax", "rows": 2}]}"#,
        ] {
            let e = Peer::from_json(bad).unwrap_err().to_string();
            assert!(e.contains("peer times"), "{e}");
        }
    }
}
