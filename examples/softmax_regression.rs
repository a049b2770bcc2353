//! Multinomial logistic regression — the seed article's "softmax regression" — trained on the
//! GPU, on the red Wine Quality data (1 599 wines × 11 features, quality 3..8 = 6 classes,
//! shipped by `linfa-datasets`).
//!
//! Per step, everything stays on the GPU, in one submission: a small WGSL kernel computes the
//! logits `X·W + b`, xent's fused cross-entropy (recorded into the same encoder with a
//! reusable `Workspace`) computes the mean loss and writes its gradient over the logits
//! (`GradOut::InPlace`: no second buffer), and a second small kernel takes the
//! gradient-descent step `W -= lr·Xᵀ·G` (both kernels in examples/softmax_regression.wgsl).
//! The targets are checked on the GPU every step and read once, at the end. The update runs on
//! the GPU so that nothing but the loss, every few steps, crosses the bus; it is 72 weights,
//! so one invocation per weight summing over the samples is plenty (a workgroup per weight
//! with a tree measured slower on lavapipe, whose barriers are costly). The same run on the CPU
//! path (`xent::cpu::cross_entropy`, host matrix products) follows, and the two loss curves
//! are compared.
//!
//! Run: `cargo run --release --example softmax_regression`

use std::error::Error;

#[path = "common/wine.rs"]
mod wine;

use wgpu::util::DeviceExt;
use wine::{Split, load};
use xent::{CrossEntropyOptions, Gpu, Grad, GradOut, LossOut, Target, Targets, Tensor, Workspace};

const STEPS: usize = 2000;
const LEARNING_RATE: f32 = 0.5;
const REPORT_EVERY: usize = 250;

/// `X·W + b` on the host: `w` is `(f + 1) × c` with the bias as its last row.
fn logits(x: &[f32], w: &[f32], f: usize, c: usize) -> Vec<f32> {
    x.chunks(f)
        .flat_map(|row| {
            (0..c).map(move |k| w[f * c + k] + (0..f).map(|j| row[j] * w[j * c + k]).sum::<f32>())
        })
        .collect()
}

/// The fraction of rows whose largest logit is the label's.
fn accuracy(z: &[f32], y: &[i32], c: usize) -> f64 {
    let hits = z
        .chunks(c)
        .zip(y)
        .filter(|&(row, &label)| {
            let best = (0..c).fold(0, |b, k| if row[k] > row[b] { k } else { b });
            best == label as usize
        })
        .count();
    hits as f64 / y.len() as f64
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    f: u32,
    c: u32,
    lr: f32,
}

/// Trains on the GPU; returns the loss every `REPORT_EVERY` steps and the final weights.
fn train_gpu(
    gpu: &Gpu,
    train: &Split,
    f: usize,
    c: usize,
) -> Result<(Vec<f32>, Vec<f32>), Box<dyn Error>> {
    let n = train.n();
    let device = gpu.device();
    let x = Tensor::from_slice(gpu, &train.x, n, f)?;
    let w = Tensor::zeros(gpu, f + 1, c)?;
    let z = Tensor::zeros(gpu, n, c)?;
    let targets = Targets::from_i32(gpu, &train.y)?;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("softmax regression"),
        source: wgpu::ShaderSource::Wgsl(include_str!("softmax_regression.wgsl").into()),
    });
    let pipeline = |entry: &str| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (forward, update) = (pipeline("forward"), pipeline("update"));
    let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(&Params {
            n: n as u32,
            f: f as u32,
            c: c as u32,
            lr: LEARNING_RATE,
        }),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let bind = |p: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]| {
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        })
    };
    let all = [
        (0, &params),
        (1, x.buffer()),
        (2, w.buffer()),
        (3, z.buffer()),
    ];
    let (forward_group, update_group) = (bind(&forward, &all), bind(&update, &all));
    let pass = |enc: &mut wgpu::CommandEncoder, p, g, workgroups: usize| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(p);
        pass.set_bind_group(0, g, &[]);
        pass.dispatch_workgroups(workgroups as u32, 1, 1);
    };
    let opts = CrossEntropyOptions::default();
    let loss = Tensor::zeros(gpu, 1, 1)?;
    let mut ws = Workspace::new(gpu);
    let mut curve = Vec::new();
    for step in 0..STEPS {
        // One submission per step: forward, fused loss with the gradient over the logits,
        // update. Nothing is read back but the loss when it is printed.
        let mut enc = gpu.encoder();
        pass(&mut enc, &forward, &forward_group, n.div_ceil(64));
        let out = LossOut {
            loss: &loss,
            grad: GradOut::InPlace,
        };
        z.record_cross_entropy(&mut ws, &mut enc, &targets, None, &opts, out)?;
        pass(&mut enc, &update, &update_group, ((f + 1) * c).div_ceil(8));
        gpu.queue().submit([enc.finish()]);
        if step % REPORT_EVERY == 0 || step == STEPS - 1 {
            curve.push(loss.to_vec()?[0]);
        }
    }
    // Every step's targets, checked once.
    ws.check_targets()?;
    Ok((curve, w.to_vec()?))
}

/// The same training on the CPU path.
fn train_cpu(train: &Split, f: usize, c: usize) -> Result<(Vec<f32>, Vec<f32>), Box<dyn Error>> {
    let n = train.n();
    let mut w = vec![0.0f32; (f + 1) * c];
    let opts = CrossEntropyOptions::default();
    let mut curve = Vec::new();
    for step in 0..STEPS {
        let z = logits(&train.x, &w, f, c);
        let out = xent::cpu::cross_entropy(&z, c, Target::I32(&train.y), None, &opts, Grad::New)?;
        let g = out.grad.unwrap_or_default();
        for j in 0..=f {
            for k in 0..c {
                let d: f32 = (0..n)
                    .map(|s| if j < f { train.x[s * f + j] } else { 1.0 } * g[s * c + k])
                    .sum();
                w[j * c + k] -= LEARNING_RATE * d;
            }
        }
        if step % REPORT_EVERY == 0 || step == STEPS - 1 {
            curve.push(out.loss[0]);
        }
    }
    Ok((curve, w))
}

fn main() -> Result<(), Box<dyn Error>> {
    let (train, test, f, c) = load();
    println!(
        "wine quality: {} training and {} test wines, {f} features, {c} classes",
        train.n(),
        test.n()
    );
    let mut counts = vec![0usize; c];
    train.y.iter().for_each(|&k| counts[k as usize] += 1);
    let majority = (0..c).fold(0, |b, k| if counts[k] > counts[b] { k } else { b }) as i32;
    let baseline = |s: &Split| s.y.iter().filter(|&&k| k == majority).count() as f64 / s.n() as f64;

    let gpu = Gpu::new()?;
    println!("GPU: {}", gpu.describe());
    let start = std::time::Instant::now();
    let (gpu_curve, gpu_w) = train_gpu(&gpu, &train, f, c)?;
    let gpu_time = start.elapsed();
    let start = std::time::Instant::now();
    let (cpu_curve, cpu_w) = train_cpu(&train, f, c)?;
    let cpu_time = start.elapsed();

    println!(
        "\n{:>6} {:>12} {:>12} {:>10}",
        "step", "GPU loss", "CPU loss", "|diff|"
    );
    let steps = (0..STEPS).filter(|s| s % REPORT_EVERY == 0 || *s == STEPS - 1);
    for (step, (g, cl)) in steps.zip(gpu_curve.iter().zip(&cpu_curve)) {
        println!("{step:>6} {g:>12.6} {cl:>12.6} {:>10.2e}", (g - cl).abs());
    }
    let report = |name: &str, w: &[f32], time: std::time::Duration| {
        let train_acc = accuracy(&logits(&train.x, w, f, c), &train.y, c);
        let test_acc = accuracy(&logits(&test.x, w, f, c), &test.y, c);
        println!(
            "{name}: train accuracy {:.1} %, test accuracy {:.1} % ({STEPS} steps in {:.2} s)",
            100.0 * train_acc,
            100.0 * test_acc,
            time.as_secs_f64()
        );
    };
    println!();
    report("GPU", &gpu_w, gpu_time);
    report("CPU", &cpu_w, cpu_time);
    let per_step = |t: std::time::Duration| t.as_secs_f64() * 1e3 / STEPS as f64;
    println!(
        "per step: GPU {:.3} ms, CPU {:.3} ms",
        per_step(gpu_time),
        per_step(cpu_time)
    );
    println!(
        "majority-class baseline (quality {}): train {:.1} %, test {:.1} %",
        majority + 3,
        100.0 * baseline(&train),
        100.0 * baseline(&test)
    );
    let worst = gpu_curve
        .iter()
        .zip(&cpu_curve)
        .map(|(g, c)| (g - c).abs())
        .fold(0.0f32, f32::max);
    println!("largest GPU-CPU loss difference along the curve: {worst:.2e}");
    Ok(())
}
