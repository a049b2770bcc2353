//! criterion: the fused cross-entropy kernel (loss and gradient in one launch) against the
//! unfused sequence (log-softmax kernel, gather, gradient kernel) on the same adapter, beside
//! the adapter's buffer-copy bandwidth, at a language-model shape. Throughput is counted as
//! the bytes each variant moves when no cache helps: fused 3·N·4 (logits read twice, gradient
//! written once), unfused 5·N·4 (logits read twice, log-probabilities written, read, gradient
//! written), copy 2·N·4.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xent::{CrossEntropyOptions, Gpu, Grad, LossReduction, Targets, Tensor, bench};

fn logits(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

fn fused_vs_unfused(c: &mut Criterion) {
    let Ok(g) = Gpu::new() else {
        eprintln!("no GPU adapter: nothing to compare");
        return;
    };
    let (rows, cols) = (4096usize, 32_000usize);
    let n = rows * cols;
    let x = Tensor::from_slice(&g, &logits(n), rows, cols).unwrap();
    let classes: Vec<i32> = (0..rows).map(|i| ((i * 7919) % cols) as i32).collect();
    let targets = Targets::from_i32(&g, &classes).unwrap();
    let lp = Tensor::zeros(&g, rows, cols).unwrap();
    let grad = Tensor::zeros(&g, rows, cols).unwrap();
    let loss = Tensor::zeros(&g, rows, 1).unwrap();
    let mut group = c.benchmark_group(format!("cross_entropy {rows}x{cols}"));
    group.sample_size(10);
    let bytes = |arrays: u64| Throughput::Bytes(arrays * 4 * n as u64);

    group.throughput(bytes(3));
    for (name, reduction) in [
        ("fused, in place, sum", LossReduction::Sum),
        ("fused, in place, mean", LossReduction::Mean),
    ] {
        let opts = CrossEntropyOptions::default().with_reduction(reduction);
        group.bench_function(name, |b| {
            b.iter(|| {
                x.cross_entropy(&targets, None, &opts, Grad::InPlace)
                    .unwrap();
            })
        });
    }
    let opts = CrossEntropyOptions::default().with_reduction(LossReduction::Sum);
    group.bench_function("fused, new gradient buffer (allocation included)", |b| {
        b.iter(|| {
            x.cross_entropy(&targets, None, &opts, Grad::New).unwrap();
            g.wait().unwrap();
        })
    });
    group.throughput(bytes(1));
    group.bench_function("fused, loss only", |b| {
        b.iter(|| {
            x.cross_entropy(&targets, None, &opts, Grad::None).unwrap();
        })
    });
    group.throughput(bytes(5));
    group.bench_function("unfused: log-softmax, gather, gradient", |b| {
        b.iter(|| {
            bench::unfused(&x, &targets, &lp, &loss, &grad).unwrap();
            g.wait().unwrap();
        })
    });
    group.throughput(bytes(2));
    group.bench_function("buffer copy (roofline)", |b| {
        b.iter(|| {
            let mut enc = g.encoder();
            enc.copy_buffer_to_buffer(x.buffer(), 0, grad.buffer(), 0, 4 * n as u64);
            g.queue().submit([enc.finish()]);
            g.wait().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, fused_vs_unfused);
criterion_main!(benches);
