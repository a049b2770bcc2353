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
    let Some((gpu, device)) = shared() else {
        return;
    };
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
