//! criterion: every op family beyond softmax (fused cross-entropy, BCE, entropy, KL, JS,
//! joint tables) on the GPU (data resident; submit + wait or read back the loss) and the CPU,
//! at a classification shape and a long-row shape. Throughput counts the fewest bytes each op
//! must move, as `xent bench` does.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xent::{
    BceOptions, BceWeights, CrossEntropyOptions, Divergence, Form, Gpu, Grad, InfoOptions, Target,
    Targets, Tensor, cpu,
};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

fn ops(c: &mut Criterion) {
    let gpu = Gpu::new().ok();
    let logits = InfoOptions::default().with_form(Form::Logits);
    for (rows, cols) in [(65_536usize, 10usize), (1024, 4096)] {
        let n = rows * cols;
        let x = values(n, 0);
        let q = values(n, 1);
        let probs: Vec<f32> = x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let classes: Vec<i32> = (0..rows).map(|i| ((i * 7919) % cols) as i32).collect();
        let table_x = (1..=cols.isqrt())
            .rev()
            .find(|d| cols % d == 0)
            .unwrap_or(1);
        let gpu_inputs = gpu.as_ref().map(|g| {
            (
                g.clone(),
                Tensor::from_slice(g, &x, rows, cols).unwrap(),
                Tensor::from_slice(g, &q, rows, cols).unwrap(),
                Tensor::from_slice(g, &probs, rows, cols).unwrap(),
                Targets::from_i32(g, &classes).unwrap(),
            )
        });
        let mut group = c.benchmark_group(format!("ops {rows}x{cols}"));
        group.sample_size(10);

        group.throughput(Throughput::Bytes(4 * (2 * n + rows) as u64));
        let ce = CrossEntropyOptions::default();
        group.bench_function("cross_entropy loss+grad cpu", |b| {
            b.iter(|| {
                cpu::cross_entropy(&x, cols, Target::I32(&classes), None, &ce, Grad::New).unwrap()
            })
        });
        if let Some((_, xt, _, _, t)) = &gpu_inputs {
            group.bench_function("cross_entropy loss+grad gpu (in place)", |b| {
                b.iter(|| xt.cross_entropy(t, None, &ce, Grad::InPlace).unwrap())
            });
        }

        group.throughput(Throughput::Bytes(12 * n as u64));
        let bce = BceOptions::default();
        group.bench_function("bce loss+grad cpu", |b| {
            b.iter(|| {
                cpu::bce_with_logits(&x, cols, &probs, BceWeights::default(), &bce, Grad::New)
                    .unwrap()
            })
        });
        if let Some((g, xt, _, pt, _)) = &gpu_inputs {
            group.bench_function("bce loss+grad gpu", |b| {
                b.iter(|| {
                    xt.bce_with_logits(pt, None, None, &bce, Grad::New).unwrap();
                    g.wait().unwrap();
                })
            });
        }

        group.throughput(Throughput::Bytes(4 * (n + rows) as u64));
        group.bench_function("entropy cpu", |b| {
            b.iter(|| cpu::entropy(&x, cols, &logits).unwrap())
        });
        if let Some((g, xt, ..)) = &gpu_inputs {
            group.bench_function("entropy gpu", |b| {
                b.iter(|| {
                    xt.entropy(&logits).unwrap();
                    g.wait().unwrap();
                })
            });
        }

        group.throughput(Throughput::Bytes(4 * (2 * n + rows) as u64));
        for (name, kind) in [("kl", Divergence::Kl), ("js", Divergence::Js)] {
            group.bench_function(format!("{name} cpu"), |b| {
                b.iter(|| cpu::divergence(&x, &q, cols, kind, &logits, Grad::None).unwrap())
            });
            if let Some((g, xt, qt, ..)) = &gpu_inputs {
                group.bench_function(format!("{name} gpu"), |b| {
                    b.iter(|| {
                        xt.divergence(qt, kind, &logits, Grad::None).unwrap();
                        g.wait().unwrap();
                    })
                });
            }
        }

        group.throughput(Throughput::Bytes(4 * (n + 5 * rows) as u64));
        let info = InfoOptions::default();
        group.bench_function("joint cpu", |b| {
            b.iter(|| cpu::joint_entropies(&probs, cols, table_x, &info).unwrap())
        });
        if let Some((g, _, _, pt, _)) = &gpu_inputs {
            group.bench_function("joint gpu", |b| {
                b.iter(|| {
                    pt.joint_entropies(table_x, &info).unwrap();
                    g.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
