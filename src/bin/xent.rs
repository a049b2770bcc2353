//! The `xent` command line (SPEC.md §6): arguments and `.npy` I/O only; the work is the
//! library's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use xent::{Activation, Backend, Cpu, Error, Gpu, SoftmaxKind, SoftmaxOptions, npy};

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
    /// Input .npy (f32, f64 or f16, C order).
    #[arg(long)]
    input: PathBuf,
    /// Output .npy (f32), written only on success.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Adapters, backend, features and limits.
    Info,
    /// Row-wise softmax (or log-softmax) over the last axis.
    Softmax {
        #[command(flatten)]
        io: Io,
        /// Write log-softmax instead.
        #[arg(long)]
        log: bool,
        /// Divide the logits by T first.
        #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
        temperature: f32,
    },
    /// Row-wise logsumexp over the last axis (the output drops that axis).
    Logsumexp {
        #[command(flatten)]
        io: Io,
    },
    /// Elementwise sigmoid (or log-sigmoid).
    Sigmoid {
        #[command(flatten)]
        io: Io,
        /// Write log-sigmoid instead.
        #[arg(long)]
        log: bool,
    },
    /// Elementwise logit ln(p / (1 - p)).
    Logit {
        #[command(flatten)]
        io: Io,
    },
    /// The GPU-vs-CPU table for every op, with GB/s and the ratio to buffer-copy bandwidth.
    Bench {
        /// Fewer repetitions and no vocabulary-size shape.
        #[arg(long)]
        quick: bool,
    },
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

/// Fails before any work when the output's directory does not exist.
fn check_output(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::File {
            path: path.display().to_string(),
            message: "the output's directory does not exist".into(),
        })
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Softmax { io, .. }
        | Command::Logsumexp { io }
        | Command::Sigmoid { io, .. }
        | Command::Logit { io } => check_output(&io.output)?,
        Command::Info | Command::Bench { .. } => {}
    }
    match cli.command {
        Command::Info => info(),
        Command::Softmax {
            io,
            log,
            temperature,
        } => {
            let opts = SoftmaxOptions::default().with_temperature(temperature);
            opts.validate()?;
            let kind = if log {
                SoftmaxKind::LogSoftmax
            } else {
                SoftmaxKind::Softmax
            };
            let (x, cols) = read_rows(&io.input)?;
            let y = backend(cli.device)?.softmax_kind(&x.data, cols, kind, &opts)?;
            npy::write(&io.output, &x.shape, &y)
        }
        Command::Logsumexp { io } => {
            let (x, cols) = read_rows(&io.input)?;
            let y = backend(cli.device)?.logsumexp(&x.data, cols, &SoftmaxOptions::default())?;
            npy::write(&io.output, &x.shape[..x.shape.len() - 1], &y)
        }
        Command::Sigmoid { io, log } => {
            let act = if log {
                Activation::LogSigmoid
            } else {
                Activation::Sigmoid
            };
            elementwise(cli.device, &io, act)
        }
        Command::Logit { io } => elementwise(cli.device, &io, Activation::Logit),
        Command::Bench { quick } => {
            let gpu = match cli.device {
                DeviceArg::Cpu => None,
                DeviceArg::Gpu => Some(Gpu::new()?),
                DeviceArg::Auto => Gpu::new().ok(),
            };
            print!("{}", xent::bench::run(gpu.as_ref(), quick)?.table());
            Ok(())
        }
    }
}

fn elementwise(device: DeviceArg, io: &Io, act: Activation) -> Result<(), Error> {
    let x = npy::read(&io.input)?;
    let y = backend(device)?.activation(&x.data, act)?;
    npy::write(&io.output, &x.shape, &y)
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
