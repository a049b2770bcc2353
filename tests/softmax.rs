//! The activation family (shaders/softmax.wgsl, src/gpu/softmax.rs, src/cpu/softmax.rs):
//! GPU (both cross-lane paths) vs CPU vs an independent float64 reference.

mod common;

use common::{
    HALVES, assert_close, assert_half, awkward_logits, gpu, gpus, gpus_with, normal, poison,
    reference, rng, rounded,
};
use xent::{
    Activation, Backend, Cpu, DType, Error, Gpu, GpuOptions, SoftmaxKind, SoftmaxOptions, Tensor,
};

/// Relative tolerance against float64 (SPEC.md §4).
const RTOL: f64 = 1e-5;
/// Absolute floor for probabilities (f32 results near 0).
const ATOL_P: f64 = 1e-7;
/// Absolute floor for log-probabilities (a log of a sum near 1 is near 0).
const ATOL_LOG: f64 = 1e-6;

const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 5),
    (7, 1000),
    (513, 257),
    (64, 1024),
    (2, 33_333),
    (2, 131_072),
    (70_000, 3),
];

/// Runs softmax / log-softmax / logsumexp of `x` on one GPU into NaN-poisoned outputs.
fn gpu_all(gpu: &Gpu, x: &[f32], rows: usize, cols: usize, opts: &SoftmaxOptions) -> [Vec<f32>; 3] {
    let t = Tensor::from_slice(gpu, x, rows, cols).unwrap();
    let run = |kind| {
        let out = Tensor::from_slice(gpu, &poison(rows * cols), rows, cols).unwrap();
        t.softmax_into(&out, kind, opts).unwrap();
        out.to_vec().unwrap()
    };
    let lse = Tensor::from_slice(gpu, &poison(rows), rows, 1).unwrap();
    t.logsumexp_into(&lse, opts).unwrap();
    [
        run(SoftmaxKind::Softmax),
        run(SoftmaxKind::LogSoftmax),
        lse.to_vec().unwrap(),
    ]
}

fn check_all(label: &str, got: &[Vec<f32>; 3], x: &[f32], cols: usize, t: f64) {
    assert_close(
        &format!("{label} softmax"),
        &got[0],
        &reference::softmax(x, cols, t),
        RTOL,
        ATOL_P,
    );
    assert_close(
        &format!("{label} log_softmax"),
        &got[1],
        &reference::log_softmax(x, cols, t),
        RTOL,
        ATOL_LOG,
    );
    assert_close(
        &format!("{label} logsumexp"),
        &got[2],
        &reference::logsumexp(x, cols, t),
        RTOL,
        ATOL_LOG,
    );
}

#[test]
fn gpu_and_cpu_match_float64_on_awkward_shapes() {
    for (i, &(rows, cols)) in SHAPES.iter().enumerate() {
        let x = awkward_logits(&mut rng(i as u64), rows, cols);
        for t in [1.0f32, 0.7] {
            let opts = SoftmaxOptions::default().with_temperature(t);
            let cpu = [
                Cpu.softmax(&x, cols, &opts).unwrap(),
                Cpu.log_softmax(&x, cols, &opts).unwrap(),
                Cpu.logsumexp(&x, cols, &opts).unwrap(),
            ];
            check_all(
                &format!("cpu {rows}x{cols} T={t}"),
                &cpu,
                &x,
                cols,
                f64::from(t),
            );
            for (path, g) in gpus() {
                let got = gpu_all(&g, &x, rows, cols, &opts);
                check_all(
                    &format!("gpu/{path} {rows}x{cols} T={t}"),
                    &got,
                    &x,
                    cols,
                    f64::from(t),
                );
            }
        }
    }
}

#[test]
fn huge_logits_are_stable() {
    // candle's check: softmax([1234, 0]) is [1, 0]; and the same far from zero.
    for (x, want) in [
        (vec![1234.0f32, 0.0], vec![1.0, 0.0]),
        (
            vec![-1e4f32, -1e4 - 1.0],
            vec![0.731_058_578_630_004_9, 0.268_941_421_369_995_1],
        ),
        (vec![1e4f32, 1e4, 1e4, 1e4], vec![0.25; 4]),
    ] {
        let cols = x.len();
        assert_close(
            "cpu",
            &Cpu.softmax(&x, cols, &Default::default()).unwrap(),
            &want,
            RTOL,
            0.0,
        );
        for (path, g) in gpus() {
            let got = g.softmax(&x, cols, &Default::default()).unwrap();
            assert_close(&format!("gpu/{path}"), &got, &want, RTOL, 0.0);
        }
    }
}

#[test]
fn infinities_and_nan_stay_in_their_row() {
    let ninf = f32::NEG_INFINITY;
    // Row 0 all -inf: softmax NaN, logsumexp -inf (PyTorch). Row 1: NaN poisons only itself.
    // Row 2: a -inf entry gives probability 0 and log-probability -inf.
    let x = vec![ninf, ninf, ninf, 1.0, f32::NAN, 2.0, ninf, 0.0, 0.0];
    let want_p = [
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        0.0,
        0.5,
        0.5,
    ];
    let want_lp = [
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        f64::NEG_INFINITY,
        -std::f64::consts::LN_2,
        -std::f64::consts::LN_2,
    ];
    let want_lse = [f64::NEG_INFINITY, f64::NAN, std::f64::consts::LN_2];
    let opts = SoftmaxOptions::default();
    let check = |label: &str, b: &dyn Backend| {
        assert_close(
            &format!("{label} softmax"),
            &b.softmax(&x, 3, &opts).unwrap(),
            &want_p,
            RTOL,
            0.0,
        );
        assert_close(
            &format!("{label} log_softmax"),
            &b.log_softmax(&x, 3, &opts).unwrap(),
            &want_lp,
            RTOL,
            0.0,
        );
        assert_close(
            &format!("{label} logsumexp"),
            &b.logsumexp(&x, 3, &opts).unwrap(),
            &want_lse,
            RTOL,
            0.0,
        );
    };
    check("cpu", &Cpu);
    for (path, g) in gpus() {
        check(&format!("gpu/{path}"), &g);
    }
}

#[test]
fn two_class_softmax_is_the_sigmoid_of_the_difference() {
    let mut r = rng(7);
    let ab = normal(&mut r, 2 * 4099, 6.0);
    let diff: Vec<f32> = ab.chunks(2).map(|p| p[0] - p[1]).collect();
    for (path, g) in gpus() {
        let p = g.softmax(&ab, 2, &Default::default()).unwrap();
        let s = g.sigmoid(&diff).unwrap();
        let first: Vec<f64> = p.iter().step_by(2).map(|&v| f64::from(v)).collect();
        assert_close(
            &format!("gpu/{path} softmax([a,b])[0] vs sigmoid(a-b)"),
            &s,
            &first,
            1e-5,
            1e-7,
        );
    }
}

/// Float64 references of the elementwise activations.
fn activation_ref(act: Activation, x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            match act {
                Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                Activation::LogSigmoid if v >= 0.0 => -(-v).exp().ln_1p(),
                Activation::LogSigmoid => v - v.exp().ln_1p(),
                Activation::Logit => (v / (1.0 - v)).ln(),
            }
        })
        .collect()
}

#[test]
fn elementwise_activations_match_float64() {
    for (i, n) in [1usize, 3, 1000, 33_333, 65_536].into_iter().enumerate() {
        let mut r = rng(100 + i as u64);
        let mut x = normal(&mut r, n, 8.0);
        for (j, v) in [100.0f32, -100.0, 1e4, -1e4, 0.0, 1e-8, -1e-8, 20.0]
            .into_iter()
            .enumerate()
        {
            if j < n {
                x[j * (n / 8).max(1) % n] = v;
            }
        }
        // Probabilities for logit: exact 0 and 1, points near 1/2, and values outside [0, 1].
        let mut p: Vec<f32> = x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        for (j, v) in [0.0f32, 1.0, 0.5, 0.500_001, 0.499_99, 1e-30, 1.5, -0.25]
            .into_iter()
            .enumerate()
        {
            if j < n {
                p[(j * 13) % n] = v;
            }
        }
        for (act, input) in [
            (Activation::Sigmoid, &x),
            (Activation::LogSigmoid, &x),
            (Activation::Logit, &p),
        ] {
            let want = activation_ref(act, input);
            assert_close(
                &format!("cpu {act:?} n={n}"),
                &Cpu.activation(input, act).unwrap(),
                &want,
                RTOL,
                1e-30,
            );
            for (path, g) in gpus() {
                let t = Tensor::from_slice(&g, input, 1, n).unwrap();
                let out = Tensor::from_slice(&g, &poison(n), 1, n).unwrap();
                t.activation_into(&out, act).unwrap();
                assert_close(
                    &format!("gpu/{path} {act:?} n={n}"),
                    &out.to_vec().unwrap(),
                    &want,
                    RTOL,
                    1e-30,
                );
            }
        }
    }
}

#[test]
fn rows_are_chunked_under_the_binding_limit() {
    // A 4 KiB binding cap forces many chunks (and unaligned row starts) on small tensors.
    for (cross_lane, g) in gpus_with(GpuOptions {
        max_binding_bytes: Some(4096),
        ..Default::default()
    }) {
        for (rows, cols) in [(1000, 37), (300, 64), (5, 700), (9000, 1)] {
            let x = awkward_logits(&mut rng(rows as u64), rows, cols);
            let got = gpu_all(&g, &x, rows, cols, &SoftmaxOptions::default());
            check_all(
                &format!("capped/{cross_lane:?} {rows}x{cols}"),
                &got,
                &x,
                cols,
                1.0,
            );
            // Half rows: 8-byte windows of padded rows.
            let (xh, bits) = rounded(&x, DType::Bf16);
            let xt = Tensor::from_bits(&g, &bits, DType::Bf16, rows, cols).unwrap();
            let opts = SoftmaxOptions::default();
            let got = xt.softmax(&opts).unwrap().to_vec().unwrap();
            let label = format!("capped/{cross_lane:?} {rows}x{cols} bf16");
            assert_half(
                &label,
                &got,
                &reference::softmax(&xh, cols, 1.0),
                DType::Bf16,
                0.0,
            );
            let got = xt
                .activation(Activation::Sigmoid)
                .unwrap()
                .to_vec()
                .unwrap();
            let want = activation_ref(Activation::Sigmoid, &xh);
            assert_half(&format!("{label} sigmoid"), &got, &want, DType::Bf16, 0.0);
            for act in [Activation::Sigmoid, Activation::Logit] {
                let input: Vec<f32> = if act == Activation::Logit {
                    x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
                } else {
                    x.clone()
                };
                let got = g.activation(&input, act).unwrap();
                assert_close(
                    &format!("capped/{cross_lane:?} {act:?}"),
                    &got,
                    &activation_ref(act, &input),
                    RTOL,
                    1e-30,
                );
            }
        }
        // One row larger than a binding is a clear error, not a wrong answer; so is a cap
        // too small for even one vector of an elementwise op.
        let tiny = gpus_with(GpuOptions {
            max_binding_bytes: Some(8),
            ..Default::default()
        });
        for (_, t) in &tiny {
            assert!(t.sigmoid(&[0.5; 8]).is_err());
        }
        let err = g
            .softmax(&vec![0.5; 2000], 2000, &Default::default())
            .unwrap_err();
        assert!(
            matches!(err, Error::RowTooLarge { cols: 2000, .. }),
            "{err}"
        );
    }
}

#[test]
fn a_tensor_above_the_real_binding_limit() {
    let Some(g) = gpu() else { return };
    let limit = g.limits().max_storage_buffer_binding_size;
    let cols = 65_536usize;
    let rows = (limit / (cols as u64 * 4) + 3) as usize;
    if (rows * cols * 4) as u64 > g.limits().max_buffer_size || rows * cols > 300_000_000 {
        eprintln!("skipping: the binding limit ({limit} bytes) is too large to exceed here");
        return;
    }
    let x = normal(&mut rng(42), rows * cols, 3.0);
    let t = Tensor::from_slice(&g, &x, rows, cols).unwrap();
    let out = Tensor::from_slice(&g, &poison(rows * cols), rows, cols).unwrap();
    t.softmax_into(&out, SoftmaxKind::LogSoftmax, &Default::default())
        .unwrap();
    let got = out.to_vec().unwrap();
    assert_close(
        &format!("{rows}x{cols} log_softmax"),
        &got,
        &reference::log_softmax(&x, cols, 1.0),
        RTOL,
        ATOL_LOG,
    );
    let lse = t.logsumexp(&Default::default()).unwrap().to_vec().unwrap();
    assert_close(
        "logsumexp",
        &lse,
        &reference::logsumexp(&x, cols, 1.0),
        RTOL,
        ATOL_LOG,
    );
}

#[test]
fn results_are_bit_identical_run_to_run() {
    let x = awkward_logits(&mut rng(9), 300, 3001);
    for (path, g) in gpus() {
        let a = gpu_all(&g, &x, 300, 3001, &Default::default());
        let b = gpu_all(&g, &x, 300, 3001, &Default::default());
        for k in 0..3 {
            let same = a[k]
                .iter()
                .zip(&b[k])
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "gpu/{path}: output {k} differs between two runs");
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let opts = SoftmaxOptions::default();
    let mut backends: Vec<(String, Box<dyn Backend>)> = vec![("cpu".into(), Box::new(Cpu))];
    if let Some(g) = gpu() {
        backends.push(("gpu".into(), Box::new(g)));
    }
    for (name, b) in &backends {
        assert!(
            matches!(b.softmax(&[], 3, &opts), Err(Error::Shape(_))),
            "{name}: empty"
        );
        assert!(
            matches!(b.softmax(&[1.0; 4], 0, &opts), Err(Error::Shape(_))),
            "{name}: cols 0"
        );
        assert!(
            matches!(b.log_softmax(&[1.0; 7], 3, &opts), Err(Error::Shape(_))),
            "{name}: ragged"
        );
        assert!(
            matches!(b.sigmoid(&[]), Err(Error::Shape(_))),
            "{name}: empty sigmoid"
        );
        // 1e-40 is subnormal: 1/T overflows to +inf.
        for t in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
            let bad = SoftmaxOptions::default().with_temperature(t);
            assert!(
                matches!(
                    b.softmax(&[1.0; 4], 2, &bad),
                    Err(Error::InvalidArgument(_))
                ),
                "{name}: T={t}"
            );
            assert!(
                matches!(
                    b.logsumexp(&[1.0; 4], 2, &bad),
                    Err(Error::InvalidArgument(_))
                ),
                "{name}: T={t}"
            );
        }
    }
    let Some(g) = gpu() else { return };
    assert!(matches!(
        Tensor::from_slice(&g, &[1.0; 5], 2, 3),
        Err(Error::Shape(_))
    ));
    assert!(matches!(Tensor::zeros(&g, 0, 3), Err(Error::Shape(_))));
    let x = Tensor::from_slice(&g, &[1.0; 6], 2, 3).unwrap();
    let wrong = Tensor::from_slice(&g, &poison(6), 3, 2).unwrap();
    assert!(matches!(
        x.softmax_into(&wrong, SoftmaxKind::Softmax, &opts),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        x.logsumexp_into(&wrong, &opts),
        Err(Error::Shape(_))
    ));
    // Nothing was written into the rejected output.
    assert!(wrong.to_vec().unwrap().iter().all(|v| v.is_nan()));
    // Writing into the input itself is a wgpu usage conflict: caught, returned, no panic.
    let err = x.softmax_into(&x, SoftmaxKind::Softmax, &opts).unwrap_err();
    assert!(matches!(err, Error::Wgpu { .. }), "{err}");
    // Tensors from another context.
    let other = Gpu::new().unwrap();
    let foreign = Tensor::from_slice(&other, &poison(6), 2, 3).unwrap();
    assert!(matches!(
        x.softmax_into(&foreign, SoftmaxKind::Softmax, &opts),
        Err(Error::DeviceMismatch)
    ));
}

#[test]
fn gpu_is_shared_across_threads() {
    let Some(g) = gpu() else { return };
    let x = awkward_logits(&mut rng(5), 64, 300);
    let want = reference::softmax(&x, 300, 1.0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let got = g.softmax(&x, 300, &Default::default()).unwrap();
                assert_close("threaded softmax", &got, &want, RTOL, ATOL_P);
            });
        }
    });
}

#[test]
fn grids_wider_than_one_dimension() {
    // With at most 7 workgroups per dimension, every shape below needs a 2-D grid with a
    // partly empty last row of workgroups.
    for (cross_lane, g) in gpus_with(GpuOptions {
        max_workgroups_per_dimension: Some(7),
        ..Default::default()
    }) {
        for (rows, cols) in [(3000, 3), (50, 2048), (9, 40_000)] {
            let x = awkward_logits(&mut rng(rows as u64 + 1), rows, cols);
            let got = gpu_all(&g, &x, rows, cols, &SoftmaxOptions::default());
            check_all(
                &format!("grid/{cross_lane:?} {rows}x{cols}"),
                &got,
                &x,
                cols,
                1.0,
            );
        }
        let x = normal(&mut rng(3), 12_001, 10.0);
        let got = g.sigmoid(&x).unwrap();
        assert_close(
            "grid sigmoid",
            &got,
            &activation_ref(Activation::Sigmoid, &x),
            RTOL,
            1e-30,
        );
        // Beyond the capped 7×7 grid: a clear error, not a silent partial result.
        let err = g.sigmoid(&vec![0.0; 7 * 7 * 256 + 1]).unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{err}");
    }
}

#[test]
fn a_device_the_caller_already_has() {
    let Some(own) = gpu() else { return };
    let adapter = own.adapter_info().clone();
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let found = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .find(|a| a.get_info().name == adapter.name && a.get_info().backend == adapter.backend)
        .expect("the same adapter again");
    let (device, queue) =
        pollster::block_on(found.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let g = Gpu::from_device(device, queue, GpuOptions::default()).unwrap();
    let x = awkward_logits(&mut rng(11), 40, 77);
    let got = g.log_softmax(&x, 77, &Default::default()).unwrap();
    assert_close(
        "from_device",
        &got,
        &reference::log_softmax(&x, 77, 1.0),
        RTOL,
        ATOL_LOG,
    );
}

#[test]
fn gpu_and_tensor_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Gpu>();
    send_sync::<Tensor>();
}

/// Rows whose softmax denominator d is within 1e-6 of 1 (one logit 20.5 to 23 above the
/// rest): their log-softmax at the top and cross-entropy against the top class are -log d and
/// log d, about 5e-7, and their entropy about 1e-5. With d summed in f32 and the device's
/// `log` (Vulkan allows 2^-21 absolute error near 1) these came out up to 50 % off; the
/// kernels keep d - 1 apart from the 1 and take log1p of it, so they hold SPEC's 1e-5
/// relative with no absolute floor. Against float64 on every path.
#[test]
fn logs_of_denominators_near_one_match_float64() {
    use rand::RngExt;
    use xent::{CrossEntropyOptions, Form, Grad, InfoOptions, LossReduction, Target};
    let (rows, cols) = (8, 1000);
    let mut r = rng(41);
    let mut x = vec![0.0f32; rows * cols];
    let mut top = Vec::new();
    for row in x.chunks_mut(cols) {
        let t = r.random_range(0..cols);
        for (c, v) in row.iter_mut().enumerate() {
            *v = if c == t {
                3.0
            } else {
                3.0 - r.random_range(20.5..23.0f32)
            };
        }
        top.push(t as i64);
    }
    let lsm = reference::log_softmax(&x, cols, 1.0);
    let at_top: Vec<f64> = top
        .iter()
        .enumerate()
        .map(|(i, &t)| lsm[i * cols + t as usize])
        .collect();
    assert!(
        at_top.iter().all(|v| (-1e-6..-1e-7).contains(v)),
        "{at_top:?}"
    );
    let loss: Vec<f64> = at_top.iter().map(|v| -v).collect();
    let entropy: Vec<f64> = lsm
        .chunks(cols)
        .map(|row| -row.iter().map(|l| l.exp() * l).sum::<f64>())
        .collect();
    let ce = CrossEntropyOptions::default().with_reduction(LossReduction::None);
    let logits = InfoOptions::default().with_form(Form::Logits);
    for (path, b) in common::backends() {
        let got = b.log_softmax(&x, cols, &SoftmaxOptions::default()).unwrap();
        let got_top: Vec<f32> = top
            .iter()
            .enumerate()
            .map(|(i, &t)| got[i * cols + t as usize])
            .collect();
        assert_close(
            &format!("{path} log-softmax at the top"),
            &got_top,
            &at_top,
            RTOL,
            0.0,
        );
        let got = b
            .cross_entropy(&x, cols, Target::I64(&top), None, &ce, Grad::None)
            .unwrap();
        assert_close(
            &format!("{path} cross-entropy"),
            &got.loss,
            &loss,
            RTOL,
            0.0,
        );
        let got = b.entropy(&x, cols, &logits).unwrap();
        assert_close(&format!("{path} entropy"), &got, &entropy, RTOL, 0.0);
    }
}

/// Where the adapter has subgroups, its lane numbering passes the probe every context with
/// subgroup reductions runs first (a failing probe would skip that path in the other tests).
#[test]
fn subgroup_lanes_pass_the_probe_where_the_adapter_has_subgroups() {
    let Some(g) = gpu() else {
        return;
    };
    if !g.device().features().contains(wgpu::Features::SUBGROUP) {
        return;
    }
    let sg = Gpu::with_options(GpuOptions {
        cross_lane: xent::CrossLane::Subgroup,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(sg.cross_lane(), xent::CrossLane::Subgroup);
}

/// SPEC.md §4's shapes for half precision: odd lengths, one element, a vocabulary.
const HALF_SHAPES: &[(usize, usize)] = &[(1, 1), (3, 5), (7, 1000), (2, 33_333), (513, 50_257)];

#[test]
fn half_precision_rows_match_float64_of_the_rounded_inputs() {
    let mut rng = rng(41);
    for &(rows, cols) in HALF_SHAPES {
        let x = awkward_logits(&mut rng, rows, cols);
        for dtype in HALVES {
            let (x, bits) = rounded(&x, dtype);
            let t = 0.7;
            let want = [
                reference::softmax(&x, cols, t),
                reference::log_softmax(&x, cols, t),
            ];
            let lse = reference::logsumexp(&x, cols, t);
            let opts = SoftmaxOptions::default().with_temperature(t as f32);
            let probs: Vec<f32> = normal(&mut rng, rows * cols, 0.2)
                .iter()
                .map(|v| 0.5 + v.clamp(-0.49, 0.49))
                .collect();
            let (probs, p_bits) = rounded(&probs, dtype);
            // The slice paths of every backend at this type.
            if rows * cols <= 100_000 {
                for (path, b) in common::backends() {
                    let b = b.typed(dtype);
                    let label = format!("{path} typed {dtype} {rows}×{cols}");
                    let got = b.softmax(&x, cols, &opts).unwrap();
                    assert_half(&format!("{label} softmax"), &got, &want[0], dtype, 0.0);
                    let got = b.log_softmax(&x, cols, &opts).unwrap();
                    assert_half(&format!("{label} log-softmax"), &got, &want[1], dtype, 0.0);
                    let got = b.logsumexp(&x, cols, &opts).unwrap();
                    assert_close(&format!("{label} logsumexp"), &got, &lse, RTOL, ATOL_LOG);
                    let got = b.logit(&probs).unwrap();
                    let want = activation_ref(Activation::Logit, &probs);
                    assert_half(&format!("{label} logit"), &got, &want, dtype, 0.0);
                    assert!(
                        b.joint_entropies(&probs, cols, 1, &Default::default())
                            .is_err()
                    );
                }
            }
            for (name, gpu) in gpus() {
                let label = format!("{name} {dtype} {rows}×{cols}");
                let xt = Tensor::from_bits(&gpu, &bits, dtype, rows, cols).unwrap();
                assert_eq!(xt.to_vec().unwrap(), x, "{label}: the upload round trip");
                let sm = xt.softmax(&opts).unwrap();
                let lp = xt.log_softmax(&opts).unwrap();
                assert_eq!((sm.dtype(), lp.dtype()), (dtype, dtype), "{label}");
                assert_half(
                    &format!("{label} softmax"),
                    &sm.to_vec().unwrap(),
                    &want[0],
                    dtype,
                    0.0,
                );
                assert_half(
                    &format!("{label} log-softmax"),
                    &lp.to_vec().unwrap(),
                    &want[1],
                    dtype,
                    0.0,
                );
                let got = xt.logsumexp(&opts).unwrap();
                assert_eq!(got.dtype(), DType::F32);
                assert_close(
                    &format!("{label} logsumexp"),
                    &got.to_vec().unwrap(),
                    &lse,
                    RTOL,
                    ATOL_LOG,
                );
                if rows * cols > 100_000 {
                    continue;
                }
                for act in [Activation::Sigmoid, Activation::LogSigmoid] {
                    let got = xt.activation(act).unwrap().to_vec().unwrap();
                    assert_half(
                        &format!("{label} {act:?}"),
                        &got,
                        &activation_ref(act, &x),
                        dtype,
                        0.0,
                    );
                }
                let pt = Tensor::from_bits(&gpu, &p_bits, dtype, rows, cols).unwrap();
                let got = pt.activation(Activation::Logit).unwrap().to_vec().unwrap();
                assert_half(
                    &format!("{label} logit"),
                    &got,
                    &activation_ref(Activation::Logit, &probs),
                    dtype,
                    0.0,
                );
            }
        }
    }
}

/// The CPU's functions on rows of a half type (`xent::cpu::softmax` of `&[bf16]`): results
/// of that type within one unit in its last place of float64 on the rounded inputs, and the
/// values `Cpu.typed` gives for the same rows as f32. Shapes for each path: rows on this
/// thread, parallel blocks of short rows, rows longer than a widened piece, one long row
/// split across threads.
fn cpu_rows_of<E: common::HalfElement>() {
    let dtype = E::DTYPE;
    let mut rng = rng(61);
    for (rows, cols) in [
        (1, 1),
        (3, 5),
        (7, 1000),
        (2, 33_333),
        (3, 9_000),
        (70_000, 3),
        (1, 131_075),
    ] {
        let (x, _) = rounded(&awkward_logits(&mut rng, rows, cols), dtype);
        let xe: Vec<E> = common::as_half(&x);
        let t = 0.7;
        let opts = SoftmaxOptions::default().with_temperature(t as f32);
        let label = format!("cpu {dtype} {rows}×{cols}");
        let typed = Cpu.typed(dtype);
        for (kind, want) in [
            (SoftmaxKind::Softmax, reference::softmax(&x, cols, t)),
            (SoftmaxKind::LogSoftmax, reference::log_softmax(&x, cols, t)),
        ] {
            let got = common::widened(&xent::cpu::softmax(&xe, cols, kind, &opts).unwrap());
            assert_half(&format!("{label} {kind:?}"), &got, &want, dtype, 0.0);
            let slices = typed.softmax_kind(&x, cols, kind, &opts).unwrap();
            assert!(
                got.iter()
                    .zip(&slices)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
                "{label} {kind:?}: Cpu.typed differs"
            );
        }
        let got = xent::cpu::logsumexp(&xe, cols, &opts).unwrap();
        let want = reference::logsumexp(&x, cols, t);
        assert_close(&format!("{label} logsumexp"), &got, &want, RTOL, ATOL_LOG);
        for act in [Activation::Sigmoid, Activation::LogSigmoid] {
            let got = common::widened(&xent::cpu::activation(&xe, act).unwrap());
            let want = activation_ref(act, &x);
            assert_half(&format!("{label} {act:?}"), &got, &want, dtype, 0.0);
        }
        let probs: Vec<f32> = normal(&mut rng, rows * cols, 0.2)
            .iter()
            .map(|v| 0.5 + v.clamp(-0.49, 0.49))
            .collect();
        let (probs, _) = rounded(&probs, dtype);
        let got = xent::cpu::activation(&common::as_half::<E>(&probs), Activation::Logit);
        let want = activation_ref(Activation::Logit, &probs);
        assert_half(
            &format!("{label} logit"),
            &common::widened(&got.unwrap()),
            &want,
            dtype,
            0.0,
        );
    }
}

#[test]
fn cpu_rows_of_half_types_match_float64_of_the_rounded_inputs() {
    cpu_rows_of::<half::f16>();
    cpu_rows_of::<half::bf16>();
}
