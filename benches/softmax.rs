//! criterion: softmax family on the GPU (data resident; submit + wait) and the CPU, beside
//! the adapter's buffer-copy bandwidth, at classification and vocabulary shapes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xent::{Gpu, SoftmaxKind, SoftmaxOptions, Tensor, cpu};

fn logits(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().ok();
    let opts = SoftmaxOptions::default();
    for (rows, cols) in [(65_536usize, 10usize), (4096, 4096), (64, 128_256)] {
        let n = rows * cols;
        let x = logits(n);
        let mut group = c.benchmark_group(format!("softmax {rows}x{cols}"));
        group.sample_size(10);
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_function("cpu", |b| {
            b.iter(|| cpu::softmax(&x, cols, SoftmaxKind::Softmax, &opts).unwrap())
        });
        if let Some(g) = &gpu {
            let t = Tensor::from_slice(g, &x, rows, cols).unwrap();
            let out = Tensor::zeros(g, rows, cols).unwrap();
            group.bench_function("gpu", |b| {
                b.iter(|| {
                    t.softmax_into(&out, SoftmaxKind::Softmax, &opts).unwrap();
                    g.wait().unwrap();
                })
            });
            group.bench_function("gpu buffer copy (roofline)", |b| {
                b.iter(|| {
                    let mut enc = g.encoder();
                    enc.copy_buffer_to_buffer(t.buffer(), 0, out.buffer(), 0, 4 * n as u64);
                    g.queue().submit([enc.finish()]);
                    g.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
