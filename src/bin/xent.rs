//! The `xent` command line (SPEC.md §6): arguments and `.npy` I/O only; the work is the
//! library's.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use xent::bench::{Peer, Plan};
use xent::npy::{self, Values};
use xent::{
    Activation, Backend, BceOptions, BceWeights, Cpu, CrossEntropyOptions, DType, DivReduction,
    Divergence, Error, Form, Gpu, Grad, InfoOptions, Linear, LinearCrossEntropyOptions, Loss,
    LossReduction, SoftmaxKind, SoftmaxOptions, Target,
};

#[derive(Parser)]
#[command(
    name = "xent",
    version,
    about = "Softmax, cross-entropy and information theory on the GPU (wgpu) or the CPU"
)]
struct Cli {
    /// Where to compute: `auto` uses the GPU when an adapter exists, else the CPU.
    #[arg(long, global = true, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Gpu,
    Cpu,
}

/// The input and output files of a command.
#[derive(Args)]
struct Io {
    /// Input .npy (f32, f64 or f16, C order; f16 stays f16 on the device).
    #[arg(long)]
    input: PathBuf,
    /// Output .npy, written only on success: f32, or f16 for a row-shaped result of an f16
    /// input (softmax, the activations).
    #[arg(long)]
    output: PathBuf,
}

/// How per-sample losses are reduced.
#[derive(Clone, Copy, ValueEnum)]
enum ReductionArg {
    Mean,
    Sum,
    None,
}

impl From<ReductionArg> for LossReduction {
    fn from(r: ReductionArg) -> Self {
        match r {
            ReductionArg::Mean => LossReduction::Mean,
            ReductionArg::Sum => LossReduction::Sum,
            ReductionArg::None => LossReduction::None,
        }
    }
}

/// How distributions are given.
#[derive(Clone, Copy, ValueEnum)]
enum FromArg {
    Probs,
    Logprobs,
    Logits,
}

impl From<FromArg> for Form {
    fn from(f: FromArg) -> Self {
        match f {
            FromArg::Probs => Form::Probs,
            FromArg::Logprobs => Form::LogProbs,
            FromArg::Logits => Form::Logits,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Kl,
    CrossEntropy,
    Js,
}

/// Reductions of a divergence (PyTorch's `kl_div`: mean over elements, batchmean over rows).
#[derive(Clone, Copy, ValueEnum)]
enum DivReductionArg {
    None,
    Sum,
    Mean,
    Batchmean,
}

/// An op of the bench table.
fn parse_op(s: &str) -> Result<&'static str, String> {
    xent::bench::parse_op(s).map_err(|e| e.to_string())
}

/// A shape ROWSxCOLS.
fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    xent::bench::parse_shape(s).map_err(|e| e.to_string())
}

fn parse_linear_shape(s: &str) -> Result<(usize, usize, usize), String> {
    xent::bench::parse_linear_shape(s).map_err(|e| e.to_string())
}

/// The base of the logarithm: `e`, or a number > 1.
fn parse_base(s: &str) -> Result<f32, String> {
    if s == "e" {
        return Ok(std::f32::consts::E);
    }
    s.parse::<f32>()
        .map_err(|_| format!("{s:?} is not `e` or a number"))
}

/// The distribution options of the information-theory commands.
#[derive(Args)]
struct InfoArgs {
    /// How the input holds its distributions (rows along the last axis).
    #[arg(long = "from", value_enum, default_value_t = FromArg::Probs)]
    form: FromArg,
    /// Logarithm base: e (nats), 2 (bits) or any number > 1.
    #[arg(long, default_value = "e", value_parser = parse_base, allow_negative_numbers = true)]
    base: f32,
}

/// The files and reduction of a loss command.
#[derive(Args)]
struct LossIo {
    /// Logits .npy (f32, f64 or f16); the last axis is the classes (or, for bce, columns).
    /// f16 logits stay f16 on the device and their gradient is written in f16, unless the
    /// targets are f32 (probabilities).
    #[arg(long)]
    logits: PathBuf,
    /// Targets .npy.
    #[arg(long)]
    target: PathBuf,
    /// Loss .npy (f32): one value per sample for `--reduction none`, else a 0-d array.
    #[arg(long)]
    output: PathBuf,
    /// Also write the gradient of the reduced loss w.r.t. the logits here (f32, the logits'
    /// shape).
    #[arg(long)]
    grad_output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReductionArg::Mean)]
    reduction: ReductionArg,
}

#[derive(Subcommand)]
enum Command {
    /// Adapters, backend, features and limits.
    Info,
    /// Row-wise softmax (or log-softmax) over the last axis.
    Softmax(SoftmaxArgs),
    /// Row-wise logsumexp over the last axis (the output drops that axis).
    Logsumexp(Io),
    /// Elementwise sigmoid (or log-sigmoid).
    Sigmoid(SigmoidArgs),
    /// Elementwise logit ln(p / (1 - p)).
    Logit(Io),
    /// Softmax cross-entropy (fused loss and gradient). An integer target of the logits'
    /// shape without the last axis holds class indices; a float target of the logits' shape
    /// holds probabilities.
    CrossEntropy(CrossEntropyArgs),
    /// Binary cross-entropy with logits, elementwise (target of the logits' shape).
    Bce(BceArgs),
    /// Cross-entropy of a linear layer's logits h·Wᵀ + b against class indices, the logits
    /// computed and differentiated in chunks of rows, never whole (f16 hidden states and
    /// weight stay f16 and so do their gradients; the bias and ∂L/∂b are f32).
    LinearCrossEntropy(LinearArgs),
    /// Row-wise entropy H(P) (the output drops the last axis).
    Entropy(EntropyArgs),
    /// Row-wise KL or JS divergence, or cross-entropy H(P,Q), between P and Q.
    Divergence(DivergenceArgs),
    /// H(X), H(Y), H(X,Y), H(Y|X), I(X;Y) of joint tables [B, X, Y] (counts or probabilities).
    Joint(JointArgs),
    /// The GPU-vs-CPU table for every op, with GB/s and the ratio to buffer-copy bandwidth.
    Bench(BenchArgs),
}

#[derive(Args)]
struct SoftmaxArgs {
    #[command(flatten)]
    io: Io,
    /// Write log-softmax instead.
    #[arg(long)]
    log: bool,
    /// Divide the logits by T first.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
}

#[derive(Args)]
struct SigmoidArgs {
    #[command(flatten)]
    io: Io,
    /// Write log-sigmoid instead.
    #[arg(long)]
    log: bool,
}

/// The cross-entropy options of both cross-entropy commands.
#[derive(Args)]
struct CeOptionArgs {
    /// Rows whose target equals N are ignored.
    #[arg(long, default_value_t = -100, allow_negative_numbers = true)]
    ignore_index: i64,
    /// Label smoothing ε in [0, 1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    label_smoothing: f32,
    /// z-loss coefficient: adds z·logsumexp² per row (class indices only).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    z_loss: f32,
    /// Logit softcapping C > 0: every logit x is read as C·tanh(x / C).
    #[arg(long, allow_negative_numbers = true)]
    softcap: Option<f32>,
}

impl CeOptionArgs {
    /// These options with `reduction`, no per-row extras.
    fn options(&self, reduction: ReductionArg) -> CrossEntropyOptions {
        CrossEntropyOptions {
            reduction: reduction.into(),
            ignore_index: self.ignore_index,
            label_smoothing: self.label_smoothing,
            z_loss: self.z_loss,
            softcap: self.softcap,
            ..CrossEntropyOptions::default()
        }
    }
}

#[derive(Args)]
struct CrossEntropyArgs {
    #[command(flatten)]
    io: LossIo,
    #[command(flatten)]
    ce: CeOptionArgs,
    /// Class weights .npy, one per class.
    #[arg(long)]
    weight: Option<PathBuf>,
    /// Also write each row's z-loss term z·logsumexp² here (f32, one per row; class indices
    /// only), from the same pass.
    #[arg(long)]
    z_loss_output: Option<PathBuf>,
    /// Also write each row's entropy of the softmax here (f32 nats, one per row), from the
    /// same pass.
    #[arg(long)]
    entropy_output: Option<PathBuf>,
}

#[derive(Args)]
struct LinearArgs {
    /// Hidden states .npy [..., H] (rows along the leading axes).
    #[arg(long)]
    input: PathBuf,
    /// The layer's weight .npy [V, H], one row per class.
    #[arg(long)]
    weight: PathBuf,
    /// The layer's bias .npy [V].
    #[arg(long)]
    bias: Option<PathBuf>,
    /// Class indices .npy (integers), the hidden states' shape without the last axis.
    #[arg(long)]
    target: PathBuf,
    /// Loss .npy (f32): one value per row for `--reduction none`, else a 0-d array.
    #[arg(long)]
    output: PathBuf,
    /// Also write ∂L/∂h here (the hidden states' shape and type).
    #[arg(long)]
    grad_input: Option<PathBuf>,
    /// Also write ∂L/∂W here ([V, H], the weight's type).
    #[arg(long)]
    grad_weight: Option<PathBuf>,
    /// Also write ∂L/∂b here (f32, [V]).
    #[arg(long)]
    grad_bias: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReductionArg::Mean)]
    reduction: ReductionArg,
    #[command(flatten)]
    ce: CeOptionArgs,
    /// Rows of logits computed at once (default: as many as 128 MiB of logits hold).
    #[arg(long)]
    chunk_rows: Option<usize>,
}

#[derive(Args)]
struct BceArgs {
    #[command(flatten)]
    io: LossIo,
    /// Positive-class weights .npy, one per column (the logits' last axis).
    #[arg(long)]
    pos_weight: Option<PathBuf>,
    /// Element weights .npy, the logits' shape.
    #[arg(long)]
    weight: Option<PathBuf>,
}

#[derive(Args)]
struct EntropyArgs {
    #[command(flatten)]
    io: Io,
    #[command(flatten)]
    info: InfoArgs,
}

#[derive(Args)]
struct DivergenceArgs {
    /// Which: D(P‖Q), H(P,Q) or JS(P,Q).
    #[arg(long, value_enum)]
    kind: KindArg,
    /// P .npy.
    #[arg(long)]
    p: PathBuf,
    /// Q .npy, P's shape.
    #[arg(long)]
    q: PathBuf,
    /// Output .npy: one value per row, or a 0-d array when reduced.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    info: InfoArgs,
    #[arg(long, value_enum, default_value_t = DivReductionArg::None)]
    reduction: DivReductionArg,
    /// Temperature T of both softmaxes (logits only): softmax(x / T).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Logit softcapping C > 0 (logits only): every logit x is read as C·tanh(x / C).
    #[arg(long, allow_negative_numbers = true)]
    softcap: Option<f32>,
}

#[derive(Args)]
struct JointArgs {
    #[command(flatten)]
    io: Io,
    /// Logarithm base: e (nats), 2 (bits) or any number > 1.
    #[arg(long, default_value = "e", value_parser = parse_base)]
    base: f32,
}

#[derive(Args)]
struct BenchArgs {
    /// 4096 × 4096 in place of the vocabulary-size shapes and a smaller time budget per
    /// measurement (about half a minute on lavapipe).
    #[arg(long)]
    quick: bool,
    /// Only these ops, comma-separated (softmax,softmax_bf16,softmax_f16,log_softmax,
    /// logsumexp,sigmoid,logit,cross_entropy,cross_entropy_bf16,cross_entropy_f16,bce,entropy,
    /// kl,js,joint,cross_entropy_loop,linear_cross_entropy; _bf16 and _f16: the op on rows of
    /// that type; linear_cross_entropy has its own table and shapes, see --linear-shapes).
    #[arg(long, value_delimiter = ',', value_parser = parse_op)]
    ops: Option<Vec<&'static str>>,
    /// Only these shapes, comma-separated ROWSxCOLS (any shape, e.g. 4096x32000,1x262144).
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    shapes: Option<Vec<(usize, usize)>>,
    /// Linear cross-entropy's shapes, comma-separated NxHxV (rows, hidden size, classes;
    /// default 1024x512x32000,1024x512x128256, with --quick 128x256x32000).
    #[arg(long, value_delimiter = ',', value_parser = parse_linear_shape)]
    linear_shapes: Option<Vec<(usize, usize, usize)>>,
    /// Also write the rows as JSON (with the adapter's name, backend and driver).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw GB/s per op, GPU beside CPU, as an SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Show another implementation's times beside the GPU's (a CPU peer's beside the
    /// CPU's): a JSON file as scripts/pytorch_peer.py writes it (same ops and shapes).
    #[arg(long)]
    peer: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans lines (the problem, a tip, the usage); keep the problem.
            let rendered = e.to_string();
            let problem: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            eprintln!("xent: {}", problem.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("xent: internal error: {}", msg.lines().next().unwrap_or(""));
    }));
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("xent: {}", e.to_string().replace('\n', " "));
            ExitCode::from(1)
        }
        Err(_) => ExitCode::from(1),
    }
}

/// Fails before any work unless every output can be created: its directory exists, it is
/// not a directory itself, and no two outputs name the same file (one would silently
/// replace the other).
fn check_outputs(paths: &[&Path]) -> Result<(), Error> {
    let mut seen = Vec::new();
    for path in paths {
        let file_err = |message: &str| Error::File {
            path: path.display().to_string(),
            message: message.into(),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Ok(dir) = dir.canonicalize() else {
            return Err(file_err("the output's directory does not exist"));
        };
        if path.is_dir() {
            return Err(file_err("is a directory, not an output file"));
        }
        let Some(name) = path.file_name() else {
            return Err(file_err("names no file"));
        };
        let resolved = dir.join(name);
        if seen.contains(&resolved) {
            return Err(Error::InvalidArgument(format!(
                "{} is named as two outputs",
                path.display()
            )));
        }
        seen.push(resolved);
    }
    Ok(())
}

impl Command {
    /// The files the command writes.
    fn outputs(&self) -> Vec<&Path> {
        match self {
            Command::Softmax(SoftmaxArgs { io, .. })
            | Command::Logsumexp(io)
            | Command::Sigmoid(SigmoidArgs { io, .. })
            | Command::Logit(io)
            | Command::Entropy(EntropyArgs { io, .. })
            | Command::Joint(JointArgs { io, .. }) => vec![&io.output],
            Command::Divergence(DivergenceArgs { output, .. }) => vec![output],
            Command::CrossEntropy(CrossEntropyArgs {
                io,
                z_loss_output,
                entropy_output,
                ..
            }) => std::iter::once(io.output.as_path())
                .chain(io.grad_output.as_deref())
                .chain(z_loss_output.as_deref())
                .chain(entropy_output.as_deref())
                .collect(),
            Command::Bce(BceArgs { io, .. }) => std::iter::once(io.output.as_path())
                .chain(io.grad_output.as_deref())
                .collect(),
            Command::LinearCrossEntropy(a) => std::iter::once(a.output.as_path())
                .chain(a.grad_input.as_deref())
                .chain(a.grad_weight.as_deref())
                .chain(a.grad_bias.as_deref())
                .collect(),
            Command::Bench(BenchArgs { json, plot, .. }) => {
                json.iter().chain(plot).map(PathBuf::as_path).collect()
            }
            Command::Info => Vec::new(),
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    check_outputs(&cli.command.outputs())?;
    let device = cli.device;
    match cli.command {
        Command::Info => info(),
        Command::Softmax(args) => args.run(device),
        Command::Logsumexp(io) => {
            let (x, cols) = read_rows(&io.input)?;
            let b = backend(device)?;
            let y = b
                .typed(x.dtype)
                .logsumexp(&x.data, cols, &SoftmaxOptions::default())?;
            npy::write(&io.output, &x.shape[..x.shape.len() - 1], &y)
        }
        Command::Sigmoid(SigmoidArgs { io, log }) => {
            let act = if log {
                Activation::LogSigmoid
            } else {
                Activation::Sigmoid
            };
            elementwise(device, &io, act)
        }
        Command::Logit(io) => elementwise(device, &io, Activation::Logit),
        Command::CrossEntropy(args) => args.run(device),
        Command::Bce(args) => args.run(device),
        Command::LinearCrossEntropy(args) => args.run(device),
        Command::Entropy(EntropyArgs { io, info }) => {
            let opts = info_options(&info, DivReduction::None, (1.0, None))?;
            let (p, cols) = read_rows(&io.input)?;
            check_distributions(&io.input, &p.data, cols, opts.form)?;
            let h = backend(device)?
                .typed(p.dtype)
                .entropy(&p.data, cols, &opts)?;
            npy::write(&io.output, &p.shape[..p.shape.len() - 1], &h)
        }
        Command::Divergence(args) => args.run(device),
        Command::Joint(args) => args.run(device),
        Command::Bench(args) => args.run(device),
    }
}

impl SoftmaxArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let opts = SoftmaxOptions::default().with_temperature(self.temperature);
        opts.validate()?;
        let kind = if self.log {
            SoftmaxKind::LogSoftmax
        } else {
            SoftmaxKind::Softmax
        };
        let (x, cols) = read_rows(&self.io.input)?;
        let b = backend(device)?;
        let y = b.typed(x.dtype).softmax_kind(&x.data, cols, kind, &opts)?;
        npy::write_all(&[(&self.io.output, &x.shape, &y, x.dtype)])
    }
}

impl CrossEntropyArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let io = &self.io;
        let opts = CrossEntropyOptions {
            z_loss_output: self.z_loss_output.is_some(),
            entropy_output: self.entropy_output.is_some(),
            ..self.ce.options(io.reduction)
        };
        opts.validate()?;
        let (x, cols) = read_rows(&io.logits)?;
        let lead = &x.shape[..x.shape.len() - 1];
        let (t_shape, t) = npy::read_values(&io.target)?;
        // f16 logits stay f16 (and so does the gradient), unless the targets are wider.
        let dtype = match &t {
            Values::Float(_, t) => shared_type(x.dtype, *t),
            Values::Int(_) => x.dtype,
        };
        let target = match &t {
            Values::Int(t) if t_shape == lead => Target::I64(t),
            Values::Float(q, _) if t_shape == x.shape => Target::Probs(q),
            _ => {
                return Err(Error::Shape(format!(
                    "target of shape {t_shape:?} for logits of shape {:?}: class indices (integers) need shape {lead:?}, probabilities (floats) shape {:?}",
                    x.shape, x.shape
                )));
            }
        };
        let weight = read_shaped(self.weight.as_deref(), &[cols])?.map(|w| w.data);
        // In place: the GPU holds one copy of the logits, not two.
        let grad = if io.grad_output.is_some() {
            Grad::InPlace
        } else {
            Grad::None
        };
        let out = backend(device)?.typed(dtype).cross_entropy(
            &x.data,
            cols,
            target,
            weight.as_deref(),
            &opts,
            grad,
        )?;
        let extras = [
            (self.z_loss_output.as_deref(), &out.z_loss),
            (self.entropy_output.as_deref(), &out.entropy),
        ];
        let extras: Vec<_> = extras
            .into_iter()
            .filter_map(|(path, values)| Some((path?, lead, values.as_deref()?, DType::F32)))
            .collect();
        write_loss(io, lead, (&x.shape, dtype), &out, &extras)
    }
}

impl LinearArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let opts = LinearCrossEntropyOptions {
            loss: self.ce.options(self.reduction),
            grad_input: self.grad_input.is_some(),
            grad_weight: self.grad_weight.is_some(),
            grad_bias: self.grad_bias.is_some(),
            chunk_rows: self.chunk_rows,
            ..LinearCrossEntropyOptions::default()
        };
        opts.validate()?;
        let (h, hs) = read_rows(&self.input)?;
        let lead = &h.shape[..h.shape.len() - 1];
        let w = npy::read(&self.weight)?;
        let [v, w_hs] = w.shape[..] else {
            return Err(Error::Shape(format!(
                "{}: the weight must be 2-d [V, H], got shape {:?}",
                self.weight.display(),
                w.shape
            )));
        };
        if w_hs != hs {
            return Err(Error::Shape(format!(
                "the weight is [{v}, {w_hs}], the hidden states' last axis {hs}"
            )));
        }
        let bias = read_shaped(self.bias.as_deref(), &[v])?.map(|b| b.data);
        let (t_shape, t) = npy::read_values(&self.target)?;
        let Values::Int(t) = &t else {
            return Err(Error::InvalidArgument(format!(
                "{}: linear cross-entropy takes integer class indices",
                self.target.display()
            )));
        };
        if t_shape != lead {
            return Err(Error::Shape(format!(
                "target of shape {t_shape:?} for hidden states of shape {:?}: expected {lead:?}",
                h.shape
            )));
        }
        let head = Linear {
            weight: &w.data[..],
            bias: bias.as_deref(),
        };
        // f16 hidden states and weight stay f16 (and so do their gradients).
        let dtype = shared_type(h.dtype, w.dtype);
        let out = backend(device)?.typed(dtype).linear_cross_entropy(
            &h.data,
            hs,
            head,
            Target::I64(t),
            None,
            &opts,
        )?;
        let loss_shape = match self.reduction {
            ReductionArg::None => lead,
            ReductionArg::Mean | ReductionArg::Sum => &[],
        };
        let mut files = vec![(self.output.as_path(), loss_shape, &out.loss[..], DType::F32)];
        let grads = [
            (&self.grad_input, &out.grad_input, &h.shape[..], dtype),
            (&self.grad_weight, &out.grad_weight, &w.shape[..], dtype),
            (&self.grad_bias, &out.grad_bias, &[v][..], DType::F32),
        ];
        for (path, grad, shape, dtype) in grads {
            if let (Some(path), Some(grad)) = (path, grad) {
                files.push((path.as_path(), shape, &grad[..], dtype));
            }
        }
        npy::write_all(&files)
    }
}

impl BceArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let io = &self.io;
        let x = npy::read(&io.logits)?;
        let cols = x.shape.last().copied().unwrap_or(1);
        let target = read_of_shape(&io.target, &x.shape)?;
        // f16 logits and targets stay f16 (and so does the gradient).
        let dtype = shared_type(x.dtype, target.dtype);
        let pos_weight = read_shaped(self.pos_weight.as_deref(), &[cols])?.map(|w| w.data);
        let weight = read_shaped(self.weight.as_deref(), &x.shape)?.map(|w| w.data);
        let weights = BceWeights {
            pos_weight: pos_weight.as_deref(),
            weight: weight.as_deref(),
        };
        let opts = BceOptions {
            reduction: io.reduction.into(),
        };
        let grad = if io.grad_output.is_some() {
            Grad::New
        } else {
            Grad::None
        };
        let out = backend(device)?.typed(dtype).bce_with_logits(
            &x.data,
            cols,
            &target.data,
            weights,
            &opts,
            grad,
        )?;
        write_loss(io, &x.shape, (&x.shape, dtype), &out, &[])
    }
}

impl DivergenceArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let reduction = match self.reduction {
            DivReductionArg::None => DivReduction::None,
            DivReductionArg::Sum => DivReduction::Sum,
            DivReductionArg::Mean => DivReduction::Mean,
            DivReductionArg::Batchmean => DivReduction::BatchMean,
        };
        let opts = info_options(&self.info, reduction, (self.temperature, self.softcap))?;
        let (pa, cols) = read_rows(&self.p)?;
        let qa = read_of_shape(&self.q, &pa.shape)?;
        check_distributions(&self.p, &pa.data, cols, opts.form)?;
        check_distributions(&self.q, &qa.data, cols, opts.form)?;
        let dtype = shared_type(pa.dtype, qa.dtype);
        let kind = match self.kind {
            KindArg::Kl => Divergence::Kl,
            KindArg::CrossEntropy => Divergence::CrossEntropy,
            KindArg::Js => Divergence::Js,
        };
        let d = backend(device)?.typed(dtype).divergence(
            &pa.data,
            &qa.data,
            cols,
            kind,
            &opts,
            Grad::None,
        )?;
        let shape = match reduction {
            DivReduction::None => &pa.shape[..pa.shape.len() - 1],
            _ => &[],
        };
        npy::write(&self.output, shape, &d.loss)
    }
}

impl JointArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let io = &self.io;
        let opts = InfoOptions::default().with_base(self.base);
        opts.validate()?;
        let j = npy::read(&io.input)?;
        let [lead @ .., x, y] = j.shape.as_slice() else {
            return Err(Error::Shape(format!(
                "{}: joint tables need shape [B, X, Y] or [X, Y], got {:?}",
                io.input.display(),
                j.shape
            )));
        };
        if let Some((i, v)) = j
            .data
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(Error::InvalidArgument(format!(
                "{}: cell {i} holds {v}, not a count or probability",
                io.input.display()
            )));
        }
        let s = backend(device)?.joint_entropies(&j.data, x * y, *x, &opts)?;
        let mut shape = lead.to_vec();
        shape.push(5);
        npy::write(&io.output, &shape, &s)
    }
}

impl BenchArgs {
    fn run(self, device: DeviceArg) -> Result<(), Error> {
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        plan.ops = self.ops.unwrap_or(plan.ops);
        plan.shapes = self.shapes.unwrap_or(plan.shapes);
        plan.linear = self.linear_shapes.unwrap_or(plan.linear);
        if let Some(path) = &self.peer {
            let file_err = |message: String| Error::File {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            plan.peer = Some(Peer::from_json(&text).map_err(|e| file_err(e.to_string()))?);
        }
        let gpu = match device {
            DeviceArg::Cpu => {
                plan.gpu = false;
                None
            }
            DeviceArg::Gpu => {
                plan.cpu = false;
                Some(Gpu::new()?)
            }
            DeviceArg::Auto => Gpu::new().ok(),
        };
        bench(
            gpu.as_ref(),
            &plan,
            self.json.as_deref(),
            self.plot.as_deref(),
        )
    }
}

/// Runs the bench: the header and each row on stdout as they are measured, progress on
/// stderr (a bar on a terminal, a line per row otherwise), the JSON and plot at the end —
/// also after Ctrl-C, with the rows measured so far (and exit status 130).
fn bench(
    gpu: Option<&Gpu>,
    plan: &Plan,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // Without a handler (one is already set) Ctrl-C simply ends the process.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(plan.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} rows, {elapsed} (last: {msg})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // The clock keeps moving through a long row.
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        bar
    });
    let started = std::time::Instant::now();
    let report = xent::bench::run(gpu, plan, &stop, |report, done, total| {
        let (text, label) = report.entry(done);
        match &bar {
            Some(bar) => {
                bar.suspend(|| print!("{text}"));
                bar.set_message(label);
                bar.set_position(done as u64);
            }
            None => {
                print!("{text}");
                eprintln!(
                    "bench: {done}/{total} rows ({label}), {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let _ = std::io::stdout().flush();
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if report.rows.is_empty() && report.linear.is_empty() {
        print!("{}", report.header());
    }
    if let Some(path) = json {
        npy::write_bytes(path, report.to_json().to_string().as_bytes())?;
    }
    if let Some(path) = plot {
        report.plot(path)?;
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!(
            "xent: interrupted after {} of {} rows; the JSON and plot hold those",
            report.rows.len() + report.linear.len(),
            plan.len()
        );
        std::process::exit(130);
    }
    Ok(())
}

fn elementwise(device: DeviceArg, io: &Io, act: Activation) -> Result<(), Error> {
    let x = npy::read(&io.input)?;
    let y = backend(device)?.typed(x.dtype).activation(&x.data, act)?;
    npy::write_all(&[(&io.output, &x.shape, &y, x.dtype)])
}

/// The validated options of an information-theory command, with the temperature and
/// softcap of a divergence from logits (1 and none for the others).
fn info_options(
    info: &InfoArgs,
    reduction: DivReduction,
    (temperature, softcap): (f32, Option<f32>),
) -> Result<InfoOptions, Error> {
    let opts = InfoOptions {
        softcap,
        ..InfoOptions::default()
            .with_form(info.form.into())
            .with_base(info.base)
            .with_reduction(reduction)
            .with_temperature(temperature)
    };
    opts.validate()?;
    Ok(opts)
}

/// The CLI always validates distributions given as probabilities or log-probabilities
/// (SPEC.md §3): finite, ≥ 0, rows summing to 1 within 1e-3.
fn check_distributions(path: &Path, data: &[f32], cols: usize, form: Form) -> Result<(), Error> {
    let checked = match form {
        Form::Probs => xent::validate_probs(data, cols),
        Form::LogProbs => {
            let p: Vec<f32> = data.iter().map(|v| v.exp()).collect();
            xent::validate_probs(&p, cols)
        }
        Form::Logits => Ok(()),
    };
    checked.map_err(|e| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The type two float inputs are held in on the device: theirs when they agree (two f16
/// files stay f16), else f32.
fn shared_type(a: DType, b: DType) -> DType {
    if a == b { a } else { DType::F32 }
}

/// Reads an optional float array that must have `shape`.
fn read_shaped(path: Option<&Path>, shape: &[usize]) -> Result<Option<npy::Array>, Error> {
    path.map(|p| read_of_shape(p, shape)).transpose()
}

/// Reads a float array that must have `shape`.
fn read_of_shape(path: &Path, shape: &[usize]) -> Result<npy::Array, Error> {
    let a = npy::read(path)?;
    if a.shape != shape {
        return Err(Error::Shape(format!(
            "{}: shape {:?}, expected {shape:?}",
            path.display(),
            a.shape
        )));
    }
    Ok(a)
}

/// Writes a loss (`per_sample` shape for `--reduction none`, else 0-d; f32), its gradient
/// (shaped and typed like the logits) and the `extra` files, all or none.
fn write_loss(
    io: &LossIo,
    per_sample: &[usize],
    (logits, dtype): (&[usize], DType),
    out: &Loss<Vec<f32>>,
    extra: &[(&Path, &[usize], &[f32], DType)],
) -> Result<(), Error> {
    let shape = match io.reduction {
        ReductionArg::None => per_sample,
        ReductionArg::Mean | ReductionArg::Sum => &[],
    };
    let mut files = vec![(io.output.as_path(), shape, out.loss.as_slice(), DType::F32)];
    if let (Some(path), Some(grad)) = (&io.grad_output, &out.grad) {
        files.push((path.as_path(), logits, grad.as_slice(), dtype));
    }
    files.extend_from_slice(extra);
    npy::write_all(&files)
}

/// Reads an array for a row-wise op: rows run along the last axis, whose length it returns.
fn read_rows(path: &Path) -> Result<(npy::Array, usize), Error> {
    let x = npy::read(path)?;
    match x.shape.last() {
        Some(&cols) => Ok((x, cols)),
        None => Err(Error::Shape(format!(
            "{}: a 0-d array has no axis to reduce over",
            path.display()
        ))),
    }
}

/// The backend `--device` asks for, announced on stderr.
fn backend(device: DeviceArg) -> Result<Box<dyn Backend>, Error> {
    match device {
        DeviceArg::Cpu => {
            eprintln!("xent: using the CPU");
            Ok(Box::new(Cpu))
        }
        DeviceArg::Gpu => {
            let gpu = Gpu::new()?;
            eprintln!("xent: using the GPU: {}", gpu.describe());
            Ok(Box::new(gpu))
        }
        DeviceArg::Auto => match Gpu::new() {
            Ok(gpu) => {
                eprintln!("xent: using the GPU: {}", gpu.describe());
                Ok(Box::new(gpu))
            }
            Err(e) => {
                eprintln!("xent: no usable GPU ({e}); using the CPU");
                Ok(Box::new(Cpu))
            }
        },
    }
}

fn info() -> Result<(), Error> {
    let adapters = xent::gpu::list_adapters();
    println!("adapters ({}):", adapters.len());
    for a in &adapters {
        println!(
            "  {} | {:?} | {:?} | driver {} {} | subgroup size {}..{}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            a.subgroup_min_size,
            a.subgroup_max_size
        );
    }
    match Gpu::new() {
        Ok(gpu) => {
            let f = gpu.device().features();
            let l = gpu.limits();
            println!("selected: {}", gpu.describe());
            println!(
                "  features: subgroups {} | shader f16 {} | timestamp queries {}",
                f.contains(wgpu::Features::SUBGROUP),
                f.contains(wgpu::Features::SHADER_F16),
                f.contains(wgpu::Features::TIMESTAMP_QUERY)
            );
            println!(
                "  limits: max buffer {} B | max storage binding {} B | workgroup memory {} B | invocations/workgroup {} | workgroups/dimension {}",
                l.max_buffer_size,
                l.max_storage_buffer_binding_size,
                l.max_compute_workgroup_storage_size,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroups_per_dimension
            );
        }
        Err(e) => println!("selected: none ({e}); commands run on the CPU"),
    }
    println!("cpu: {} threads (rayon)", rayon::current_num_threads());
    Ok(())
}
