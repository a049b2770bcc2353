//! Uploads and readbacks through the pooled staging buffers: byte-exact at awkward sizes, past
//! one staging chunk (64 MiB) and past the 128 MiB binding limit, across many calls of mixed
//! sizes, from several threads at once; a warm readback creates no buffer.

mod common;

use common::{gpus, normal, rng};
use rand::RngExt;
use xent::{Gpu, Tensor};

/// Writes `data` into a tensor, reads it back both ways, and checks every bit.
fn round_trip(gpu: &Gpu, data: &[f32], what: &str) {
    let t = Tensor::zeros(gpu, 1, data.len()).unwrap();
    t.write(data).unwrap();
    let back = t.to_vec().unwrap();
    assert!(
        back.iter()
            .zip(data)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: to_vec differs"
    );
    let mut into = vec![f32::NAN; data.len()];
    t.read_into(&mut into).unwrap();
    assert!(
        into.iter()
            .zip(data)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: read_into differs"
    );
}

#[test]
fn transfers_are_byte_exact_at_every_size() {
    for (path, gpu) in gpus() {
        // 1, 3, 4097; one 64 MiB staging chunk and a bit; past the 128 MiB binding.
        for n in [1, 3, 4097, (64 << 20) / 4 + 3, 40_000_001] {
            let mut data = normal(&mut rng(n as u64), n, 100.0);
            // NaN payloads and signed zeros travel as bits.
            data[0] = f32::from_bits(0x7fc0_1234);
            if n > 2 {
                data[n - 1] = -0.0;
            }
            round_trip(&gpu, &data, &format!("{path} {n}"));
        }
    }
}

#[test]
fn mixed_sizes_from_several_threads() {
    for (path, gpu) in gpus() {
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                let gpu = gpu.clone();
                s.spawn(move || {
                    let mut r = rng(thread);
                    for call in 0..40 {
                        let n = match call % 4 {
                            0 => r.random_range(1..16),
                            1 => r.random_range(1000..5000),
                            2 => r.random_range(100_000..300_000),
                            _ => r.random_range(1..2_000_000),
                        };
                        let data = normal(&mut r, n, 3.0);
                        round_trip(&gpu, &data, &format!("{path} thread {thread} call {call}"));
                    }
                });
            }
        });
    }
}

#[test]
fn a_warm_readback_creates_no_buffer() {
    let Some(gpu) = common::gpus_with(xent::GpuOptions::default())
        .into_iter()
        .next()
        .map(|(_, g)| g)
    else {
        return;
    };
    let data = normal(&mut rng(9), 100_000, 1.0);
    let t = Tensor::from_slice(&gpu, &data, 100, 1000).unwrap();
    let mut host = vec![0.0; data.len()];
    t.read_into(&mut host).unwrap();
    t.write(&data).unwrap();
    let before = gpu.stats();
    for _ in 0..10 {
        t.write(&data).unwrap();
        t.read_into(&mut host).unwrap();
    }
    let after = gpu.stats();
    assert_eq!(after.buffers_created, before.buffers_created, "{after:?}");
    assert_eq!(after.bytes_read_back - before.bytes_read_back, 10 * 400_000);
    assert_eq!(host, data);
}

/// The slice paths (`Backend`) run on pooled device buffers: a repeated call of the same shape
/// allocates no full-size buffer and gives the same bits (the test context poisons a reused
/// output with NaN first, so nothing stale can pass for a result); `release_pooled` hands the
/// memory back; calls from several threads at once each get their own buffers.
#[test]
fn slice_calls_reuse_their_device_buffers() {
    use xent::{
        Backend, BceOptions, BceWeights, CrossEntropyOptions, Divergence, Form, Grad, InfoOptions,
        SoftmaxOptions, Target,
    };
    // A context of its own: the counters are per context, and the other tests run beside.
    let Some((_, gpu)) = common::gpus_with(xent::GpuOptions::default())
        .into_iter()
        .next()
    else {
        return;
    };
    let (rows, cols) = (64, 8192);
    let full = (rows * cols * 4) as u64;
    let mut r = rng(17);
    let x = normal(&mut r, rows * cols, 3.0);
    let q = normal(&mut r, rows * cols, 2.0);
    let t01: Vec<f32> = (0..rows * cols).map(|_| r.random::<f32>()).collect();
    let targets: Vec<i64> = (0..rows).map(|_| r.random_range(0..cols as i64)).collect();
    let calls = |g: &Gpu| {
        let logits = InfoOptions::default().with_form(Form::Logits);
        let ce = CrossEntropyOptions::default();
        let weights = BceWeights {
            pos_weight: None,
            weight: Some(&t01),
        };
        let bce = BceOptions::default();
        let ce = g
            .cross_entropy(&x, cols, Target::I64(&targets), None, &ce, Grad::InPlace)
            .unwrap();
        let kl = g
            .divergence(&x, &q, cols, Divergence::Kl, &logits, Grad::New)
            .unwrap();
        let bce = g
            .bce_with_logits(&x, cols, &t01, weights, &bce, Grad::New)
            .unwrap();
        [
            g.softmax(&x, cols, &SoftmaxOptions::default()).unwrap(),
            g.self_information(&x, cols, &logits).unwrap(),
            ce.grad.unwrap(),
            kl.grad.unwrap(),
            bce.grad.unwrap(),
        ]
        .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
    };
    let first = calls(&gpu);
    let before = gpu.stats();
    for _ in 0..3 {
        assert!(calls(&gpu) == first, "a repeated call differs");
    }
    let grown = gpu.stats().bytes_allocated - before.bytes_allocated;
    assert!(grown < full, "3 repeated rounds allocated {grown} bytes");
    assert!(gpu.release_pooled() >= 4 * full);
    let before = gpu.stats();
    assert!(calls(&gpu) == first, "after release_pooled");
    assert!(gpu.stats().bytes_allocated - before.bytes_allocated >= 4 * full);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| calls(&gpu))).collect();
        for run in runs {
            assert!(run.join().unwrap() == first, "a concurrent call differs");
        }
    });
}
