//! xent's losses on burn's wgpu tensors (feature `burn`): loss and gradient through burn's
//! autodiff against the float64 reference, finite differences and burn's own cross-entropy,
//! on a device burn and xent share; no host round trip of the logits; errors.

mod common;

use std::sync::OnceLock;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{assert_close, awkward_logits, normal, reference, rng};
use rand::RngExt;
use xent::{
    CrossEntropyOptions, DivReduction, Divergence, Error, Form, Gpu, GpuOptions, InfoOptions,
    LossReduction,
};

/// One context and one burn device on it for the whole binary (each `xent::burn::device` call
/// registers a device of its own with burn). Outputs are poisoned with NaN.
fn shared() -> Option<(Gpu, Device)> {
    static SHARED: OnceLock<Option<(Gpu, Device)>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let options = GpuOptions {
                poison_outputs: true,
                ..Default::default()
            };
            match xent::burn::open(options) {
                Ok(shared) => Some(shared),
                Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                    panic!("CI=true but no GPU adapter: {e}")
                }
                Err(e) => {
                    eprintln!("skipping the burn tests: {e}");
                    None
                }
            }
        })
        .clone()
}

fn floats(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn floats1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn matrix(x: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(x.to_vec(), [rows, cols]), device)
}

/// Targets in `[0, k)`, every fifth row `ignore` (when given).
fn targets(rng: &mut rand::rngs::StdRng, n: usize, k: usize, ignore: Option<i64>) -> Vec<i64> {
    (0..n)
        .map(|r| match ignore {
            Some(i) if r % 5 == 2 => i,
            _ => rng.random_range(0..k as i64),
        })
        .collect()
}

#[test]
fn cross_entropy_loss_and_gradient_match_the_reference_and_burns_own() {
    let Some((_, device)) = shared() else { return };
    let device = device.autodiff();
    let mut rng = rng(41);
    for (n, k) in [(1, 3), (37, 1000), (6, 33_333)] {
        let cases = [
            CrossEntropyOptions::default(),
            CrossEntropyOptions::default()
                .with_ignore_index(1)
                .with_label_smoothing(0.1),
            CrossEntropyOptions::default()
                .with_reduction(LossReduction::Sum)
                .with_softcap(5.0)
                .with_z_loss(1e-3),
            CrossEntropyOptions::default()
                .with_reduction(LossReduction::None)
                .with_ignore_index(0),
        ];
        for (case, opts) in cases.iter().enumerate() {
            let what = format!("{n}×{k} case {case}");
            let x = awkward_logits(&mut rng, n, k);
            let ignore = (opts.ignore_index >= 0).then_some(opts.ignore_index);
            let t = targets(&mut rng, n, k, ignore);
            let w: Vec<f32> = (0..k).map(|_| rng.random_range(0.5..2.0)).collect();
            let weighted = case % 2 == 1;
            let upstream = normal(&mut rng, n, 1.0);

            let logits = matrix(&x, n, k, &device).require_grad();
            let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), &device);
            let weight = weighted.then(|| Tensor::<1>::from_floats(w.as_slice(), &device));
            let loss = xent::burn::cross_entropy(logits.clone(), target.clone(), weight, opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // The reduced loss is differentiated as it is; a per-row loss through a random
            // upstream gradient (Σ r_n·loss_n).
            let seed = if opts.reduction == LossReduction::None {
                let r = Tensor::<1>::from_floats(upstream.as_slice(), &device);
                (loss.clone() * r).sum()
            } else {
                loss.clone()
            };
            let grads = seed.backward();
            let got_grad = floats(logits.grad(&grads).expect("a gradient"));
            let got_loss = floats1(loss);

            let x64 = reference::widen(&x);
            let (losses, den, g) =
                reference::cross_entropy(&x64, k, &t, weighted.then_some(&w[..]), opts);
            let (want_loss, want_grad): (Vec<f64>, Vec<f64>) = match opts.reduction {
                LossReduction::Mean => (
                    vec![losses.iter().sum::<f64>() / den],
                    g.iter().map(|g| g / den).collect(),
                ),
                LossReduction::Sum => (vec![losses.iter().sum()], g),
                LossReduction::None => (
                    losses,
                    g.iter()
                        .enumerate()
                        .map(|(i, g)| g * f64::from(upstream[i / k]))
                        .collect(),
                ),
            };
            assert_close(&format!("{what} loss"), &got_loss, &want_loss, 1e-5, 1e-6);
            assert_close(
                &format!("{what} gradient"),
                &got_grad,
                &want_grad,
                1e-4,
                1e-7,
            );

            // burn's own cross-entropy: the mean, pad tokens for ignore_index.
            if opts.reduction == LossReduction::Mean && opts.z_loss == 0.0 {
                let logits = matrix(&x, n, k, &device).require_grad();
                let mut config = burn::nn::loss::CrossEntropyLossConfig::new();
                if let Some(i) = ignore {
                    config = config.with_pad_tokens(Some(vec![i as usize]));
                }
                if weighted {
                    config = config.with_weights(Some(w.clone()));
                }
                if opts.label_smoothing > 0.0 {
                    config = config.with_smoothing(Some(opts.label_smoothing));
                }
                let theirs = config.init(&device).forward(logits.clone(), target);
                let their_grad = floats(logits.grad(&theirs.backward()).expect("a gradient"));
                let their_loss = floats1(theirs);
                let as64 = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
                assert_close(
                    &format!("{what} loss against burn's"),
                    &got_loss,
                    &as64(&their_loss),
                    1e-5,
                    1e-6,
                );
                assert_close(
                    &format!("{what} gradient against burn's"),
                    &got_grad,
                    &as64(&their_grad),
                    1e-4,
                    1e-7,
                );
            }
        }
    }
}

#[test]
fn no_host_round_trip_of_the_logits() {
    if shared().is_none() {
        return;
    }
    // A context of its own: what it counts is this test's alone.
    let (gpu, device) = xent::burn::open(GpuOptions::default()).unwrap();
    let device = device.autodiff();
    let (n, k) = (64, 4099);
    let x = awkward_logits(&mut rng(7), n, k);
    let logits = matrix(&x, n, k, &device).require_grad();
    let t: Vec<i64> = (0..n as i64).map(|r| (r * 31) % k as i64).collect();
    let target = Tensor::<1, Int>::from_data(TensorData::new(t, [n]), &device);
    device.sync().unwrap();
    let before = gpu.stats();
    let loss = xent::burn::cross_entropy(
        logits.clone(),
        target,
        None,
        &CrossEntropyOptions::default(),
    )
    .unwrap();
    let grads = loss.backward();
    let _ = logits.grad(&grads).unwrap();
    let after = gpu.stats();
    // Only the target check (32 bytes) comes back; the logits are 1 MiB.
    let read = after.bytes_read_back - before.bytes_read_back;
    assert!(read <= 64, "{read} bytes read back");
    assert_eq!(after.bytes_uploaded, before.bytes_uploaded);
}

#[test]
fn distillation_divergences_match_finite_differences() {
    let Some((_, device)) = shared() else { return };
    let device = device.autodiff();
    let mut rng = rng(5);
    for (n, k) in [(1, 3), (5, 1000)] {
        for kind in [Divergence::Kl, Divergence::Js] {
            for reduction in [DivReduction::BatchMean, DivReduction::None] {
                let what = format!("{kind:?} {reduction:?} {n}×{k}");
                let opts = InfoOptions::default()
                    .with_form(Form::Logits)
                    .with_temperature(2.0)
                    .with_reduction(reduction);
                let (p, q) = (normal(&mut rng, n * k, 2.0), normal(&mut rng, n * k, 2.0));
                let upstream = normal(&mut rng, n, 1.0);
                let teacher = matrix(&p, n, k, &device);
                let student = matrix(&q, n, k, &device).require_grad();
                let value = xent::burn::divergence(teacher, student.clone(), kind, &opts)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let r = Tensor::<1>::from_floats(upstream.as_slice(), &device);
                let seed = match reduction {
                    DivReduction::None => (value.clone() * r).sum(),
                    _ => value.clone(),
                };
                let got_grad = floats(student.grad(&seed.backward()).expect("a gradient"));
                let got = floats1(value);

                let p64 = reference::widen(&p);
                let per_row = |q: &[f64]| divergence64(&p64, q, k, kind, 2.0);
                let weigh = |rows: Vec<f64>| -> f64 {
                    match reduction {
                        DivReduction::None => rows
                            .iter()
                            .zip(&upstream)
                            .map(|(v, r)| v * f64::from(*r))
                            .sum(),
                        _ => rows.iter().sum::<f64>() / n as f64,
                    }
                };
                let want: Vec<f64> = match reduction {
                    DivReduction::None => per_row(&reference::widen(&q)),
                    _ => vec![weigh(per_row(&reference::widen(&q)))],
                };
                assert_close(&format!("{what} value"), &got, &want, 1e-4, 1e-6);
                let want_grad = fd64(&reference::widen(&q), |q| weigh(per_row(q)));
                assert_close(
                    &format!("{what} gradient"),
                    &got_grad,
                    &want_grad,
                    1e-3,
                    1e-6,
                );
            }
        }
    }
}

/// KL(P‖Q) or JS per row of logits at temperature `t`, in f64.
fn divergence64(p: &[f64], q: &[f64], k: usize, kind: Divergence, t: f64) -> Vec<f64> {
    let lp = reference::log_softmax64(p, k, t);
    let lq = reference::log_softmax64(q, k, t);
    lp.chunks(k)
        .zip(lq.chunks(k))
        .map(|(lp, lq)| {
            let kl = |a: &[f64], b: &[f64]| -> f64 {
                a.iter().zip(b).map(|(a, b)| a.exp() * (a - b)).sum()
            };
            match kind {
                Divergence::Js => {
                    let m: Vec<f64> = lp
                        .iter()
                        .zip(lq)
                        .map(|(a, b)| (0.5 * (a.exp() + b.exp())).ln())
                        .collect();
                    0.5 * kl(lp, &m) + 0.5 * kl(lq, &m)
                }
                _ => kl(lp, lq),
            }
        })
        .collect()
}

/// Central differences of `f` at `x`, in f64.
fn fd64(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-6 * x[i].abs().max(1.0);
            let v = x[i];
            x[i] = v + h;
            let up = f(&x);
            x[i] = v - h;
            let down = f(&x);
            x[i] = v;
            (up - down) / (2.0 * h)
        })
        .collect()
}

#[test]
fn without_autodiff_the_loss_is_the_same() {
    let Some((_, device)) = shared() else { return };
    let (n, k) = (9, 517);
    let x = awkward_logits(&mut rng(3), n, k);
    let t: Vec<i64> = (0..n as i64).map(|r| (r * 7) % k as i64).collect();
    let opts = CrossEntropyOptions::default().with_reduction(LossReduction::None);
    let run = |device: &Device| {
        let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), device);
        floats1(xent::burn::cross_entropy(matrix(&x, n, k, device), target, None, &opts).unwrap())
    };
    let (plain, tracked) = (run(&device), run(&device.clone().autodiff()));
    assert_eq!(plain, tracked);
    let (losses, _, _) = reference::cross_entropy(&reference::widen(&x), k, &t, None, &opts);
    assert_close("plain", &plain, &losses, 1e-5, 1e-6);
}

#[test]
fn bad_input_is_an_error() {
    let Some((gpu, device)) = shared() else {
        return;
    };
    let (n, k) = (4, 10);
    let x = normal(&mut rng(1), n * k, 1.0);
    let logits = matrix(&x, n, k, &device);
    let target = |t: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(t, [n]), &device);
    let opts = CrossEntropyOptions::default();
    let ce = |t, w| xent::burn::cross_entropy(logits.clone(), t, w, &opts);

    let e = ce(target(vec![0, 1, 10, 2]), None).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Target {
                row: 2,
                value: 10,
                ..
            }
        ),
        "{e}"
    );
    let short = Tensor::<1, Int>::from_ints([0, 1, 2], &device);
    assert!(matches!(ce(short, None), Err(Error::Shape(_))));
    let w = Tensor::<1>::from_floats([1.0; 3], &device);
    assert!(matches!(
        ce(target(vec![0; 4]), Some(w)),
        Err(Error::Shape(_))
    ));
    let extras = opts.with_entropy_output();
    let e = xent::burn::cross_entropy(logits.clone(), target(vec![0; 4]), None, &extras);
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    let probs = InfoOptions::default();
    let e = xent::burn::divergence(logits.clone(), logits.clone(), Divergence::Kl, &probs);
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    // After the errors the device still computes.
    assert!(ce(target(vec![0, 1, 2, 3]), None).is_ok());

    // A context that does not bind buffers read-write, or lacks features of its adapter, or
    // has no adapter to hand burn, cannot be shared.
    for options in [
        GpuOptions {
            all_features: true,
            ..Default::default()
        },
        GpuOptions {
            shared_buffers: true,
            ..Default::default()
        },
    ] {
        let e = xent::burn::device(&Gpu::with_options(options).unwrap()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    let options = GpuOptions {
        shared_buffers: true,
        all_features: true,
        ..Default::default()
    };
    let wrapped = Gpu::from_device(gpu.device().clone(), gpu.queue().clone(), options);
    let e = xent::burn::device(&wrapped.unwrap()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(xent::burn::gpu(&device).is_some());
}

#[test]
fn a_slice_of_rows_is_read_where_it_starts() {
    let Some((_, device)) = shared() else { return };
    let device = device.autodiff();
    // Rows 3.. of 13 × 37 f32: the loss reads those rows, and their gradient goes back to
    // them in the whole tensor's.
    let (n, k, skip) = (13, 37, 3);
    let x = awkward_logits(&mut rng(11), n, k);
    let t: Vec<i64> = (0..(n - skip) as i64).map(|r| (r * 5) % k as i64).collect();
    let logits = matrix(&x, n, k, &device).require_grad();
    let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n - skip]), &device);
    let opts = CrossEntropyOptions::default().with_reduction(LossReduction::Sum);
    let loss =
        xent::burn::cross_entropy(logits.clone().slice([skip..n, 0..k]), target, None, &opts)
            .unwrap();
    let got_grad = floats(logits.grad(&loss.backward()).unwrap());
    let (losses, _, g) =
        reference::cross_entropy(&reference::widen(&x[skip * k..]), k, &t, None, &opts);
    assert_close(
        "slice loss",
        &floats1(loss),
        &[losses.iter().sum()],
        1e-5,
        1e-6,
    );
    let mut want = vec![0.0; skip * k];
    want.extend(g);
    assert_close("slice gradient", &got_grad, &want, 1e-4, 1e-7);
}

/// `h·Wᵀ + b` in f64 (`h` `n × hs`, `w` `v × hs`).
fn linear64(h: &[f32], w: &[f32], b: Option<&[f32]>, hs: usize) -> Vec<f64> {
    let v = w.len() / hs;
    h.chunks(hs)
        .flat_map(|row| {
            (0..v).map(move |c| {
                let dot: f64 = row
                    .iter()
                    .zip(&w[c * hs..(c + 1) * hs])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                dot + b.map_or(0.0, |b| f64::from(b[c]))
            })
        })
        .collect()
}

#[test]
fn linear_cross_entropy_gradients_match_the_reference_and_burns_own() {
    let Some((_, device)) = shared() else { return };
    let device = device.autodiff();
    let mut rng = rng(17);
    for (n, hs, v, chunk) in [
        (1, 3, 5, None),
        (37, 64, 1000, Some(7)),
        (5, 17, 33_333, None),
    ] {
        for (case, with_bias) in [(0, true), (1, false)] {
            let what = format!("{n}×{hs}→{v} case {case}");
            let mut opts = xent::LinearCrossEntropyOptions::default().with_loss(match case {
                0 => CrossEntropyOptions::default()
                    .with_ignore_index(2)
                    .with_label_smoothing(0.05),
                _ => CrossEntropyOptions::default()
                    .with_reduction(LossReduction::Sum)
                    .with_z_loss(1e-3),
            });
            opts.chunk_rows = chunk;
            let h = normal(&mut rng, n * hs, 1.0);
            let w = normal(&mut rng, v * hs, 0.3);
            let b = normal(&mut rng, v, 0.5);
            let cw: Vec<f32> = (0..v).map(|_| rng.random_range(0.5..2.0)).collect();
            let ignore = (case == 0).then_some(2);
            let t = targets(&mut rng, n, v, ignore);

            let h_t = matrix(&h, n, hs, &device).require_grad();
            let w_t = matrix(&w, v, hs, &device).require_grad();
            let b_t = Tensor::<1>::from_floats(b.as_slice(), &device).require_grad();
            let bias = with_bias.then(|| b_t.clone());
            let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), &device);
            let class_weight = Some(Tensor::<1>::from_floats(cw.as_slice(), &device));
            let loss = xent::burn::linear_cross_entropy(
                h_t.clone(),
                (w_t.clone(), bias),
                target.clone(),
                class_weight,
                &opts,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            // Through an incoming gradient of 1.7, not 1.
            let grads = (loss.clone() * 1.7).backward();
            let got = floats1(loss);
            let got_dh = floats(h_t.grad(&grads).expect("∂L/∂h"));
            let got_dw = floats(w_t.grad(&grads).expect("∂L/∂W"));
            let got_db = b_t.grad(&grads).map(floats1);
            assert_eq!(got_db.is_some(), with_bias, "{what}: a bias gradient");

            let logits = linear64(&h, &w, with_bias.then_some(&b[..]), hs);
            let (losses, den, g) = reference::cross_entropy(&logits, v, &t, Some(&cw), &opts.loss);
            let scale = if case == 0 { 1.0 / den } else { 1.0 };
            let want = vec![losses.iter().sum::<f64>() * scale];
            let g: Vec<f64> = g.iter().map(|g| g * scale * 1.7).collect();
            let want_dh: Vec<f64> = (0..n * hs)
                .map(|i| {
                    let (r, j) = (i / hs, i % hs);
                    (0..v)
                        .map(|c| g[r * v + c] * f64::from(w[c * hs + j]))
                        .sum()
                })
                .collect();
            let want_dw: Vec<f64> = (0..v * hs)
                .map(|i| {
                    let (c, j) = (i / hs, i % hs);
                    (0..n)
                        .map(|r| g[r * v + c] * f64::from(h[r * hs + j]))
                        .sum()
                })
                .collect();
            let want_db: Vec<f64> = (0..v).map(|c| (0..n).map(|r| g[r * v + c]).sum()).collect();
            assert_close(&format!("{what} loss"), &got, &want, 1e-5, 1e-6);
            assert_close(&format!("{what} ∂L/∂h"), &got_dh, &want_dh, 1e-4, 1e-6);
            assert_close(&format!("{what} ∂L/∂W"), &got_dw, &want_dw, 1e-4, 1e-6);
            if let Some(db) = got_db {
                assert_close(&format!("{what} ∂L/∂b"), &db, &want_db, 1e-4, 1e-6);
            }

            // burn's own: the logits made whole, its cross-entropy (no z-loss there).
            if case == 0 {
                let h_t = matrix(&h, n, hs, &device).require_grad();
                let w_t = matrix(&w, v, hs, &device).require_grad();
                let b_t = Tensor::<1>::from_floats(b.as_slice(), &device).require_grad();
                let logits = h_t.clone().matmul(w_t.clone().transpose()) + b_t.clone().unsqueeze();
                let theirs = burn::nn::loss::CrossEntropyLossConfig::new()
                    .with_pad_tokens(Some(vec![2]))
                    .with_weights(Some(cw.clone()))
                    .with_smoothing(Some(0.05))
                    .init(&device)
                    .forward(logits, target);
                let grads = (theirs.clone() * 1.7).backward();
                let as64 = |v: Vec<f32>| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
                let vs = |what: &str, got: &[f32], theirs: Vec<f32>| {
                    assert_close(what, got, &as64(theirs), 1e-4, 1e-6)
                };
                vs(
                    &format!("{what} loss against burn's"),
                    &got,
                    floats1(theirs),
                );
                let dh = floats(h_t.grad(&grads).unwrap());
                vs(&format!("{what} ∂L/∂h against burn's"), &got_dh, dh);
                let dw = floats(w_t.grad(&grads).unwrap());
                vs(&format!("{what} ∂L/∂W against burn's"), &got_dw, dw);
            }
        }
    }
}

#[test]
fn linear_cross_entropy_computes_only_the_gradients_wanted() {
    if shared().is_none() {
        return;
    }
    // A context of its own: what it counts is this test's alone.
    let (gpu, device) = xent::burn::open(GpuOptions::default()).unwrap();
    let (n, hs, v) = (8, 16, 300);
    let mut rng = rng(23);
    let (h, w) = (normal(&mut rng, n * hs, 1.0), normal(&mut rng, v * hs, 0.3));
    let t: Vec<i64> = (0..n as i64).map(|r| (r * 37) % v as i64).collect();
    let ad = device.clone().autodiff();
    let target = |d: &Device| Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), d);
    let opts = xent::LinearCrossEntropyOptions::default();
    // A frozen head: only ∂L/∂h is computed (fewer launches than with ∂L/∂W), and it is
    // the reference's.
    let launches = |train_head: bool| {
        let h_t = matrix(&h, n, hs, &ad).require_grad();
        let w_t = matrix(&w, v, hs, &ad).set_require_grad(train_head);
        let before = gpu.stats().bind_groups_created;
        let loss =
            xent::burn::linear_cross_entropy(h_t.clone(), (w_t, None), target(&ad), None, &opts)
                .unwrap();
        let used = gpu.stats().bind_groups_created - before;
        (used, floats(h_t.grad(&loss.backward()).unwrap()))
    };
    launches(true);
    let (frozen, dh) = launches(false);
    let (trained, _) = launches(true);
    assert!(
        frozen < trained,
        "{frozen} launches frozen, {trained} trained"
    );
    let (_, _, g) = reference::cross_entropy(&linear64(&h, &w, None, hs), v, &t, None, &opts.loss);
    let want_dh: Vec<f64> = (0..n * hs)
        .map(|i| {
            let (r, j) = (i / hs, i % hs);
            (0..v)
                .map(|c| g[r * v + c] / n as f64 * f64::from(w[c * hs + j]))
                .sum()
        })
        .collect();
    assert_close("∂L/∂h of a frozen head", &dh, &want_dh, 1e-4, 1e-6);

    // A per-row loss: without autodiff it is the reference's; through autodiff an error.
    let none = xent::LinearCrossEntropyOptions::default()
        .with_loss(CrossEntropyOptions::default().with_reduction(LossReduction::None));
    let plain = xent::burn::linear_cross_entropy(
        matrix(&h, n, hs, &device),
        (matrix(&w, v, hs, &device), None),
        target(&device),
        None,
        &none,
    )
    .unwrap();
    let (losses, _, _) =
        reference::cross_entropy(&linear64(&h, &w, None, hs), v, &t, None, &none.loss);
    assert_close("per-row linear loss", &floats1(plain), &losses, 1e-5, 1e-6);
    let e = xent::burn::linear_cross_entropy(
        matrix(&h, n, hs, &ad).require_grad(),
        (matrix(&w, v, hs, &ad), None),
        target(&ad),
        None,
        &none,
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    let e = xent::burn::linear_cross_entropy(
        matrix(&h, n, hs, &device),
        (
            matrix(&normal(&mut rng, v * (hs + 1), 0.3), v, hs + 1, &device),
            None,
        ),
        target(&device),
        None,
        &opts,
    );
    assert!(matches!(e, Err(Error::Shape(_))));
}

#[test]
fn a_gpu_on_burns_own_device() {
    if shared().is_none() {
        return;
    }
    // burn's default wgpu device, brought up by xent (nothing else in this binary uses it).
    let wgpu_device = burn::backend::wgpu::WgpuDevice::default();
    let gpu = xent::burn::init(&wgpu_device, GpuOptions::default()).unwrap();
    let device = Device::new(wgpu_device.clone()).autodiff();
    assert!(xent::burn::gpu(&device).is_some());
    let (n, k) = (5, 300);
    let x = awkward_logits(&mut rng(29), n, k);
    let t: Vec<i64> = (0..n as i64).map(|r| (r * 13) % k as i64).collect();
    let logits = matrix(&x, n, k, &device).require_grad();
    let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), &device);
    let opts = CrossEntropyOptions::default();
    let loss = xent::burn::cross_entropy(logits.clone(), target, None, &opts).unwrap();
    let got_grad = floats(logits.grad(&loss.backward()).unwrap());
    let (losses, den, g) = reference::cross_entropy(&reference::widen(&x), k, &t, None, &opts);
    let want = [losses.iter().sum::<f64>() / den];
    assert_close("loss on burn's device", &floats1(loss), &want, 1e-5, 1e-6);
    let want_grad: Vec<f64> = g.iter().map(|g| g / den).collect();
    assert_close(
        "gradient on burn's device",
        &got_grad,
        &want_grad,
        1e-4,
        1e-7,
    );
    // The Gpu is xent's own too: its tensors and burn's are on one device.
    assert!(xent::Tensor::from_slice(&gpu, &x, n, k).is_ok());
    // Once up, the device cannot be brought up again.
    let again = xent::burn::init(&wgpu_device, GpuOptions::default());
    assert!(matches!(again, Err(Error::Burn(_))), "{again:?}");
}
