//! Fused softmax cross-entropy and binary cross-entropy (SPEC.md §2) on both paths, against
//! float64 references written here, finite differences and PyTorch's edge cases.

mod common;

use common::{
    HALVES, assert_close, assert_half, backends, finite_differences, gpu, gpus, gpus_with, normal,
    reference, rng, rounded,
};
use rand::RngExt;
use rand::rngs::StdRng;
use xent::{
    Backend, BceOptions, BceWeights, Cpu, CrossEntropyOptions, DType, Error, GpuOptions, Grad,
    InfoOptions, LossReduction, Target, Targets, Tensor,
};

const REDUCTIONS: [LossReduction; 3] =
    [LossReduction::None, LossReduction::Sum, LossReduction::Mean];

/// Random class indices in [0, cols), every 4th row set to `ignore`.
fn class_targets(rng: &mut StdRng, rows: usize, cols: usize, ignore: i64) -> Vec<i64> {
    (0..rows)
        .map(|r| {
            if r % 4 == 1 {
                ignore
            } else {
                rng.random_range(0..cols as i64)
            }
        })
        .collect()
}

/// Class or element weights in [0.25, 2).
fn weights(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(0.25..2.0)).collect()
}

/// Logits of scale 3 with every 5th row offset by ±1e4.
fn logits(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = normal(rng, rows * cols, 3.0);
    for (r, row) in x.chunks_mut(cols).enumerate() {
        if r % 5 == 3 {
            let off = if r % 2 == 0 { 1e4 } else { -1e4 };
            row.iter_mut().for_each(|v| *v += off);
        }
    }
    x
}

/// Probability rows with exact zeros in them (every 3rd class of every other row).
fn probs(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut q: Vec<f32> = normal(rng, rows * cols, 2.0)
        .iter()
        .map(|v| v.exp())
        .collect();
    for (r, row) in q.chunks_mut(cols).enumerate() {
        if r % 2 == 0 && cols > 1 {
            for c in (0..cols).step_by(3) {
                row[c] = 0.0;
            }
        }
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    q
}

/// Row-wise log-softmax, logsumexp and slopes of the logits as the losses read them
/// ([`reference::read_logits`]).
fn read_logits(x: &[f32], cols: usize, softcap: Option<f32>) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    reference::read_logits(&reference::widen(x), cols, softcap)
}

struct Reference {
    losses: Vec<f64>,
    den: f64,
    grad: Vec<f64>,
}

impl Reference {
    fn indices(
        x: &[f32],
        cols: usize,
        t: &[i64],
        w: Option<&[f32]>,
        o: &CrossEntropyOptions,
    ) -> Self {
        let (losses, den, grad) = reference::cross_entropy(&reference::widen(x), cols, t, w, o);
        Self { losses, den, grad }
    }

    fn probs(
        x: &[f32],
        cols: usize,
        q: &[f32],
        w: Option<&[f32]>,
        o: &CrossEntropyOptions,
    ) -> Self {
        let (lp, _, slope) = read_logits(x, cols, o.softcap);
        let wc = |c: usize| w.map_or(1.0, |w| f64::from(w[c]));
        let (eps, k) = (f64::from(o.label_smoothing), cols as f64);
        let mut losses = Vec::new();
        let mut grad = Vec::new();
        for r in 0..x.len() / cols {
            let lp = &lp[r * cols..(r + 1) * cols];
            let wq: Vec<f64> = (0..cols)
                .map(|c| wc(c) * ((1.0 - eps) * f64::from(q[r * cols + c]) + eps / k))
                .collect();
            losses.push(-(0..cols).map(|c| wq[c] * lp[c]).sum::<f64>());
            let s: f64 = wq.iter().sum();
            grad.extend((0..cols).map(|c| (s * lp[c].exp() - wq[c]) * slope[r * cols + c]));
        }
        Self {
            den: losses.len() as f64,
            losses,
            grad,
        }
    }

    fn bce(x: &[f32], cols: usize, t: &[f32], pw: Option<&[f32]>, w: Option<&[f32]>) -> Self {
        let log_sigmoid = |v: f64| v.min(0.0) - (-v.abs()).exp().ln_1p();
        let mut losses = Vec::new();
        let mut grad = Vec::new();
        for i in 0..x.len() {
            let (v, t) = (f64::from(x[i]), f64::from(t[i]));
            let pw = pw.map_or(1.0, |p| f64::from(p[i % cols]));
            let w = w.map_or(1.0, |w| f64::from(w[i]));
            losses.push(-w * (pw * t * log_sigmoid(v) + (1.0 - t) * log_sigmoid(-v)));
            let s = 1.0 / (1.0 + (-v).exp());
            grad.push(w * ((pw * t + 1.0 - t) * s - pw * t));
        }
        Self {
            den: losses.len() as f64,
            losses,
            grad,
        }
    }

    /// The reduced loss, the gradient scaled by the reduction's factor, and that factor.
    fn reduced(&self, reduction: LossReduction) -> (Vec<f64>, Vec<f64>, f64) {
        let total: f64 = self.losses.iter().sum();
        let (loss, scale) = match reduction {
            LossReduction::None => (self.losses.clone(), 1.0),
            LossReduction::Sum => (vec![total], 1.0),
            LossReduction::Mean => (vec![total / self.den], 1.0 / self.den),
        };
        let grad = self
            .grad
            .iter()
            .map(|g| if *g == 0.0 { 0.0 } else { g * scale })
            .collect();
        (loss, grad, scale)
    }
}

/// Compares a loss and gradient with the reference: losses to 1e-5 relative, gradient
/// elements to 1e-5 relative plus 1e-6 of the size of the terms they are made of (the
/// reduction's factor times the largest unscaled element, or 1): `p·A - w_y` cancels in f32
/// as it does in PyTorch.
#[track_caller]
fn check(what: &str, got: &xent::Loss<Vec<f32>>, want: &Reference, reduction: LossReduction) {
    let (loss, grad, factor) = want.reduced(reduction);
    assert_close(&format!("{what} loss"), &got.loss, &loss, 1e-5, 1e-6);
    let scale = factor * want.grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
    let g = got.grad.as_ref().expect("gradient asked for");
    assert_close(&format!("{what} grad"), g, &grad, 1e-5, 1e-6 * scale);
}

#[test]
fn every_option_alone_and_combined_on_every_path() {
    let mut r = rng(3);
    for (rows, cols) in [(1, 1), (3, 5), (7, 1000), (513, 257), (2, 33_333)] {
        let x = logits(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let base = CrossEntropyOptions::default();
        let t_default = class_targets(&mut r, rows, cols, -100);
        let t_custom = class_targets(&mut r, rows, cols, 2);
        type Case<'a> = (&'a str, &'a [i64], Option<&'a [f32]>, CrossEntropyOptions);
        let cases: Vec<Case<'_>> = vec![
            ("plain", &t_default, None, base),
            ("weight", &t_default, Some(&w), base),
            ("ignore_index=2", &t_custom, None, base.with_ignore_index(2)),
            (
                "smoothing",
                &t_default,
                None,
                base.with_label_smoothing(0.1),
            ),
            ("z-loss", &t_default, None, base.with_z_loss(1e-4)),
            ("softcap", &t_default, None, base.with_softcap(4.0)),
            (
                "all",
                &t_custom,
                Some(&w),
                base.with_ignore_index(2)
                    .with_label_smoothing(0.25)
                    .with_z_loss(1e-3)
                    .with_softcap(30.0),
            ),
        ];
        for (name, t, w, opts) in cases {
            let want = Reference::indices(&x, cols, t, w, &opts);
            for reduction in REDUCTIONS {
                let opts = opts.with_reduction(reduction);
                for (path, b) in backends() {
                    let got = b
                        .cross_entropy(&x, cols, Target::I64(t), w, &opts, Grad::New)
                        .unwrap();
                    check(
                        &format!("{path} {rows}x{cols} {name} {reduction:?}"),
                        &got,
                        &want,
                        reduction,
                    );
                }
            }
        }
    }
}

#[test]
fn soft_targets_on_every_path() {
    let mut r = rng(5);
    for (rows, cols) in [(1, 1), (3, 5), (64, 1000), (2, 33_333)] {
        let x = logits(&mut r, rows, cols);
        let q = probs(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let cases = [
            (None, 0.0, None),
            (Some(&w[..]), 0.0, None),
            (Some(&w[..]), 0.2, None),
            (Some(&w[..]), 0.2, Some(4.0)),
        ];
        for (w, eps, softcap) in cases {
            let opts = CrossEntropyOptions {
                softcap,
                ..CrossEntropyOptions::default().with_label_smoothing(eps)
            };
            let want = Reference::probs(&x, cols, &q, w, &opts);
            for reduction in REDUCTIONS {
                let opts = opts.with_reduction(reduction);
                for (path, b) in backends() {
                    let got = b
                        .cross_entropy(&x, cols, Target::Probs(&q), w, &opts, Grad::New)
                        .unwrap();
                    let what = format!(
                        "{path} soft {rows}x{cols} w={} eps={eps} softcap={softcap:?} {reduction:?}",
                        w.is_some()
                    );
                    check(&what, &got, &want, reduction);
                }
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut r = rng(9);
    let (rows, cols) = (4, 6);
    let x = normal(&mut r, rows * cols, 1.0);
    let w = weights(&mut r, cols);
    let t = vec![3, -100, 0, 5];
    let q = probs(&mut r, rows, cols);
    // Softcap 2 on logits of scale 1: slopes from 0.5 to 1.
    let opts = CrossEntropyOptions::default()
        .with_label_smoothing(0.1)
        .with_z_loss(0.01)
        .with_softcap(2.0);
    // The reduced loss as a function of the logits, in f64 (`none`: the sum).
    let reduce = |want: Reference, reduction| want.reduced(reduction).0.iter().sum::<f64>();
    for reduction in REDUCTIONS {
        let opts = opts.with_reduction(reduction);
        let soft = opts.with_z_loss(0.0);
        let pt = [1.0, 0.0, 0.3, 0.7, 1.0, 0.25];
        let bt: Vec<f32> = (0..rows * cols).map(|i| pt[i % 6]).collect();
        let fd_hard = finite_differences(&x, |x| {
            reduce(Reference::indices(x, cols, &t, Some(&w), &opts), reduction)
        });
        let fd_soft = finite_differences(&x, |x| {
            reduce(Reference::probs(x, cols, &q, Some(&w), &soft), reduction)
        });
        let fd_bce = finite_differences(&x, |x| {
            reduce(Reference::bce(x, cols, &bt, Some(&w), None), reduction)
        });
        for (path, b) in backends() {
            let what = format!("{path} {reduction:?}");
            let hard = b
                .cross_entropy(&x, cols, Target::I64(&t), Some(&w), &opts, Grad::New)
                .unwrap();
            assert_close(
                &format!("{what} hard"),
                &hard.grad.unwrap(),
                &fd_hard,
                1e-3,
                1e-4,
            );
            let s = b
                .cross_entropy(&x, cols, Target::Probs(&q), Some(&w), &soft, Grad::New)
                .unwrap();
            assert_close(
                &format!("{what} soft"),
                &s.grad.unwrap(),
                &fd_soft,
                1e-3,
                1e-4,
            );
            let weights = BceWeights {
                pos_weight: Some(&w),
                weight: None,
            };
            let bce = b
                .bce_with_logits(&x, cols, &bt, weights, &BceOptions { reduction }, Grad::New)
                .unwrap();
            assert_close(
                &format!("{what} bce"),
                &bce.grad.unwrap(),
                &fd_bce,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn vocabulary_sized_rows_and_many_short_rows() {
    let mut r = rng(11);
    for (rows, cols) in [(4, 50_257), (2, 128_256), (1, 262_144), (70_000, 4)] {
        let x = logits(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let t = class_targets(&mut r, rows, cols, -100);
        let opts = CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss(1e-4);
        let want = Reference::indices(&x, cols, &t, Some(&w), &opts);
        for reduction in [LossReduction::None, LossReduction::Mean] {
            let opts = opts.with_reduction(reduction);
            for (path, b) in backends() {
                let got = b
                    .cross_entropy(&x, cols, Target::I64(&t), Some(&w), &opts, Grad::New)
                    .unwrap();
                check(
                    &format!("{path} {rows}x{cols} {reduction:?}"),
                    &got,
                    &want,
                    reduction,
                );
            }
        }
    }
}

#[test]
fn logits_of_magnitude_300_and_infinities() {
    let mut r = rng(13);
    let (rows, cols) = (64, 100);
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|_| r.random_range(-300.0..300.0))
        .collect();
    // -inf entries (never the target): the loss stays finite without smoothing.
    let t = class_targets(&mut r, rows, cols, -100);
    for row in (0..rows).step_by(3) {
        for c in (0..cols).step_by(7) {
            if t[row] != c as i64 {
                x[row * cols + c] = f32::NEG_INFINITY;
            }
        }
    }
    let opts = CrossEntropyOptions::default().with_reduction(LossReduction::None);
    let want = Reference::indices(&x, cols, &t, None, &opts);
    for (path, b) in backends() {
        let got = b
            .cross_entropy(&x, cols, Target::I64(&t), None, &opts, Grad::New)
            .unwrap();
        check(
            &format!("{path} |x|<=300"),
            &got,
            &want,
            LossReduction::None,
        );
        assert!(
            got.loss.iter().all(|l| l.is_finite()),
            "{path}: {:?}",
            got.loss
        );
    }
}

#[test]
fn every_row_ignored() {
    let x = normal(&mut rng(17), 5 * 7, 2.0);
    let t = vec![-100i64; 5];
    for (path, b) in backends() {
        for (reduction, want) in [(LossReduction::Mean, f32::NAN), (LossReduction::Sum, 0.0)] {
            let opts = CrossEntropyOptions::default().with_reduction(reduction);
            let got = b
                .cross_entropy(&x, 7, Target::I64(&t), None, &opts, Grad::New)
                .unwrap();
            assert_eq!(got.loss.len(), 1);
            assert!(
                got.loss[0].to_bits() == want.to_bits() || (want.is_nan() && got.loss[0].is_nan()),
                "{path} {reduction:?}: {}",
                got.loss[0]
            );
            assert!(
                got.grad.unwrap().iter().all(|&g| g == 0.0),
                "{path}: zero gradient"
            );
        }
    }
}

#[test]
fn bad_targets_are_errors_and_nothing_is_written() {
    let (rows, cols) = (40, 9);
    let x = normal(&mut rng(19), rows * cols, 2.0);
    let mut t = class_targets(&mut rng(20), rows, cols, -100);
    t[31] = -1;
    t[12] = cols as i64;
    t[35] = 1 << 20;
    for (path, b) in backends() {
        let err = b
            .cross_entropy(
                &x,
                cols,
                Target::I64(&t),
                None,
                &CrossEntropyOptions::default(),
                Grad::New,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Target {
                    batch: None,
                    row: 12,
                    value: 9,
                    classes: 9
                }
            ),
            "{path}: {err}"
        );
    }
    let mut neg = t.clone();
    neg[3] = -7;
    for (name, g) in gpus() {
        let logits = Tensor::from_slice(&g, &x, rows, cols).unwrap();
        let targets = Targets::from_i64(&g, &neg).unwrap();
        let opts = CrossEntropyOptions::default();
        let err = logits
            .cross_entropy(&targets, None, &opts, Grad::InPlace)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Target {
                    row: 3,
                    value: -7,
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert_eq!(
            logits.to_vec().unwrap(),
            x,
            "{name}: the logits were written"
        );
    }
    if let Some(g) = gpu() {
        let err = Targets::from_i64(&g, &[0, 1 << 40]).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}

#[test]
fn in_place_gradient_equals_out_of_place_and_runs_are_bit_identical() {
    let mut r = rng(23);
    let (rows, cols) = (300, 1003);
    let x = logits(&mut r, rows, cols);
    let w = weights(&mut r, cols);
    let t = class_targets(&mut r, rows, cols, -100);
    let q = probs(&mut r, rows, cols);
    let opts = CrossEntropyOptions::default()
        .with_label_smoothing(0.05)
        .with_softcap(5.0);
    for (name, g) in gpus() {
        let weight = Tensor::from_slice(&g, &w, 1, cols).unwrap();
        let targets = Targets::from_i64(&g, &t).unwrap();
        let soft = Tensor::from_slice(&g, &q, rows, cols).unwrap();
        let run = |grad: Grad, soft_targets: bool| {
            let logits = Tensor::from_slice(&g, &x, rows, cols).unwrap();
            let out = if soft_targets {
                logits.cross_entropy_soft(&soft, Some(&weight), &opts, grad)
            } else {
                logits.cross_entropy(&targets, Some(&weight), &opts, grad)
            }
            .unwrap();
            let grad = out
                .grad
                .map_or_else(|| logits.to_vec().unwrap(), |g| g.to_vec().unwrap());
            (out.loss.to_vec().unwrap(), grad)
        };
        for soft_targets in [false, true] {
            let first = run(Grad::New, soft_targets);
            assert_eq!(
                first,
                run(Grad::New, soft_targets),
                "{name}: two runs differ"
            );
            let in_place = run(Grad::InPlace, soft_targets);
            assert_eq!(
                first, in_place,
                "{name} soft={soft_targets}: in place differs"
            );
            let loss_only = run(Grad::None, soft_targets);
            assert_eq!(
                first.0, loss_only.0,
                "{name}: loss without gradient differs"
            );
        }
    }
}

/// On host slices `Grad::InPlace` returns the gradient as `Grad::New` does (on the GPU it
/// is computed over the uploaded copy of the logits), bit for bit.
#[test]
fn slices_take_the_in_place_gradient_on_every_path() {
    let mut r = rng(29);
    let (rows, cols) = (37, 1001);
    let x = logits(&mut r, rows, cols);
    let t = class_targets(&mut r, rows, cols, -100);
    let q = probs(&mut r, rows, cols);
    let opts = CrossEntropyOptions::default().with_label_smoothing(0.1);
    for (path, b) in backends() {
        for target in [Target::I64(&t), Target::Probs(&q)] {
            let ce = |grad| {
                b.cross_entropy(&x, cols, target, None, &opts, grad)
                    .unwrap()
            };
            let new = ce(Grad::New);
            assert_eq!(new.grad.as_ref().map(Vec::len), Some(x.len()), "{path}");
            assert_eq!(new, ce(Grad::InPlace), "{path}: in place differs");
        }
    }
}

#[test]
fn bce_matches_float64() {
    let mut r = rng(29);
    for (rows, cols) in [(1, 1), (3, 5), (70_000, 3), (2, 33_333)] {
        let mut x = normal(&mut r, rows * cols, 5.0);
        x.iter_mut().step_by(97).for_each(|v| *v *= 20.0);
        let t: Vec<f32> = (0..rows * cols)
            .map(|i| match i % 3 {
                0 => 0.0,
                1 => 1.0,
                _ => r.random(),
            })
            .collect();
        let pw = weights(&mut r, cols);
        let w = weights(&mut r, rows * cols);
        for (pw, w) in [(None, None), (Some(&pw[..]), Some(&w[..]))] {
            let want = Reference::bce(&x, cols, &t, pw, w);
            for reduction in REDUCTIONS {
                for (path, b) in backends() {
                    let weights = BceWeights {
                        pos_weight: pw,
                        weight: w,
                    };
                    let got = b
                        .bce_with_logits(
                            &x,
                            cols,
                            &t,
                            weights,
                            &BceOptions { reduction },
                            Grad::New,
                        )
                        .unwrap();
                    check(
                        &format!(
                            "{path} bce {rows}x{cols} weighted={} {reduction:?}",
                            w.is_some()
                        ),
                        &got,
                        &want,
                        reduction,
                    );
                }
            }
        }
    }
}

#[test]
fn chunked_dispatches_and_wide_grids() {
    // A 4 KiB binding cap splits every launch (targets, rows, sums) into many dispatches; a
    // 13-workgroup grid dimension makes the grids 2-D.
    let cases = [
        (
            GpuOptions {
                max_binding_bytes: Some(4096),
                ..Default::default()
            },
            3000,
            37,
        ),
        (
            GpuOptions {
                max_workgroups_per_dimension: Some(13),
                ..Default::default()
            },
            5000,
            3,
        ),
    ];
    for (options, rows, cols) in cases {
        let mut r = rng(31);
        let x = logits(&mut r, rows, cols);
        let t = class_targets(&mut r, rows, cols, -100);
        let q = probs(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let bt: Vec<f32> = (0..rows * cols).map(|_| r.random()).collect();
        let opts = CrossEntropyOptions::default().with_label_smoothing(0.1);
        let hard = Reference::indices(&x, cols, &t, Some(&w), &opts);
        let soft = Reference::probs(&x, cols, &q, Some(&w), &opts);
        let bce = Reference::bce(&x, cols, &bt, Some(&w), None);
        let ((xh, _), (bth, _)) = (rounded(&x, DType::Bf16), rounded(&bt, DType::Bf16));
        let bce_half = Reference::bce(&xh, cols, &bth, Some(&w), Some(&bt));
        let hard_half = Reference::indices(&xh, cols, &t, Some(&w), &opts);
        for (path, g) in gpus_with(options.clone()) {
            for reduction in REDUCTIONS {
                let what = format!("{path:?} {options:?} {reduction:?}");
                let o = opts.with_reduction(reduction);
                let got = g
                    .cross_entropy(&x, cols, Target::I64(&t), Some(&w), &o, Grad::New)
                    .unwrap();
                check(&format!("{what} hard"), &got, &hard, reduction);
                let got = g
                    .cross_entropy(&x, cols, Target::Probs(&q), Some(&w), &o, Grad::New)
                    .unwrap();
                check(&format!("{what} soft"), &got, &soft, reduction);
                let weights = BceWeights {
                    pos_weight: Some(&w),
                    weight: None,
                };
                let got = g
                    .bce_with_logits(&x, cols, &bt, weights, &BceOptions { reduction }, Grad::New)
                    .unwrap();
                check(&format!("{what} bce"), &got, &bce, reduction);
                // bf16 rows: windows of padded rows, element weights dense f32.
                let b = g.typed(DType::Bf16);
                let weights = BceWeights {
                    pos_weight: Some(&w),
                    weight: Some(&bt),
                };
                let got = b
                    .bce_with_logits(
                        &xh,
                        cols,
                        &bth,
                        weights,
                        &BceOptions { reduction },
                        Grad::New,
                    )
                    .unwrap();
                let got = (&got.loss[..], &got.grad.unwrap()[..]);
                check_half(
                    &format!("{what} bf16 bce"),
                    got,
                    &bce_half,
                    reduction,
                    DType::Bf16,
                );
                let got = b
                    .cross_entropy(&xh, cols, Target::I64(&t), Some(&w), &o, Grad::New)
                    .unwrap();
                let got = (&got.loss[..], &got.grad.unwrap()[..]);
                check_half(
                    &format!("{what} bf16 hard"),
                    got,
                    &hard_half,
                    reduction,
                    DType::Bf16,
                );
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let x = [0.5f32; 12];
    let t = [0i64, 1, 2];
    let ok = CrossEntropyOptions::default();
    for (path, b) in backends() {
        let ce = |t: Target<'_>, w: Option<&[f32]>, o: &CrossEntropyOptions| {
            b.cross_entropy(&x, 4, t, w, o, Grad::New)
        };
        let cases: Vec<(&str, xent::Result<xent::Loss<Vec<f32>>>)> = vec![
            ("short targets", ce(Target::I64(&t[..2]), None, &ok)),
            ("weight length", ce(Target::I64(&t), Some(&[1.0; 3]), &ok)),
            (
                "smoothing 1",
                ce(Target::I64(&t), None, &ok.with_label_smoothing(1.0)),
            ),
            (
                "smoothing NaN",
                ce(Target::I64(&t), None, &ok.with_label_smoothing(f32::NAN)),
            ),
            (
                "negative z",
                ce(Target::I64(&t), None, &ok.with_z_loss(-1.0)),
            ),
            (
                "huge ignore_index",
                ce(Target::I64(&t), None, &ok.with_ignore_index(1 << 40)),
            ),
            (
                "soft z-loss",
                ce(Target::Probs(&x), None, &ok.with_z_loss(0.1)),
            ),
            ("soft shape", ce(Target::Probs(&x[..8]), None, &ok)),
            (
                "empty",
                b.cross_entropy(&[], 4, Target::I64(&[]), None, &ok, Grad::None),
            ),
            (
                "ragged",
                b.cross_entropy(&x[..10], 4, Target::I64(&t), None, &ok, Grad::None),
            ),
            (
                "bce target",
                b.bce_with_logits(
                    &x,
                    4,
                    &x[..8],
                    BceWeights::default(),
                    &BceOptions::default(),
                    Grad::New,
                ),
            ),
            (
                "bce pos_weight",
                b.bce_with_logits(
                    &x,
                    4,
                    &x,
                    BceWeights {
                        pos_weight: Some(&x[..3]),
                        weight: None,
                    },
                    &BceOptions::default(),
                    Grad::New,
                ),
            ),
            (
                "bce in place",
                b.bce_with_logits(
                    &x,
                    4,
                    &x,
                    BceWeights::default(),
                    &BceOptions::default(),
                    Grad::InPlace,
                ),
            ),
        ];
        for (name, result) in cases {
            assert!(result.is_err(), "{path}: {name} was accepted");
        }
    }
    if let Some(g) = gpu() {
        let x = Tensor::from_slice(&g, &x, 3, 4).unwrap();
        let err = x.bce_with_logits(&x, None, None, &BceOptions::default(), Grad::InPlace);
        assert!(err.is_err());
    }
}

#[test]
fn the_unfused_baseline_computes_the_same_thing() {
    let mut r = rng(37);
    let (rows, cols) = (33, 1001);
    let x = logits(&mut r, rows, cols);
    let t = class_targets(&mut r, rows, cols, -100);
    let opts = CrossEntropyOptions::default().with_reduction(LossReduction::None);
    let want = Reference::indices(&x, cols, &t, None, &opts);
    for (name, g) in gpus() {
        let logits = Tensor::from_slice(&g, &x, rows, cols).unwrap();
        let targets = Targets::from_i64(&g, &t).unwrap();
        let nan = |r, c| Tensor::from_slice(&g, &vec![f32::NAN; r * c], r, c).unwrap();
        let (lp, loss, grad) = (nan(rows, cols), nan(rows, 1), nan(rows, cols));
        xent::bench::unfused(&logits, &targets, &lp, &loss, &grad).unwrap();
        let got = xent::Loss {
            loss: loss.to_vec().unwrap(),
            grad: Some(grad.to_vec().unwrap()),
            z_loss: None,
            entropy: None,
        };
        check(&format!("{name} unfused"), &got, &want, LossReduction::None);
    }
}

#[test]
fn equal_logits_of_1e16_lose_log_k_on_every_path() {
    // lse = m + log d rounds log d away next to 1e16 (in f64 too): the loss is taken as
    // log d - (x_y - m), which stays log K.
    for (path, b) in backends() {
        for (v, k) in [(1e16f32, 2), (1e15, 2), (-3e15, 5), (f32::MAX, 3)] {
            let x = vec![v; k];
            let opts = CrossEntropyOptions::default();
            let out = b
                .cross_entropy(&x, k, Target::I32(&[0]), None, &opts, Grad::New)
                .unwrap();
            let want = (k as f64).ln();
            assert_close(
                &format!("{path} loss of {k} × {v:e}"),
                &out.loss,
                &[want],
                1e-6,
                0.0,
            );
            let mut g = vec![1.0 / k as f64; k];
            g[0] -= 1.0;
            assert_close(
                &format!("{path} grad of {k} × {v:e}"),
                &out.grad.unwrap(),
                &g,
                1e-6,
                1e-7,
            );
            let smooth = opts.with_label_smoothing(0.2);
            let out = b
                .cross_entropy(&x, k, Target::I32(&[0]), None, &smooth, Grad::None)
                .unwrap();
            assert_close(
                &format!("{path} smoothed loss of {k} × {v:e}"),
                &out.loss,
                &[want],
                1e-6,
                0.0,
            );
        }
    }
}

#[test]
fn targets_beyond_i32_are_target_errors_on_every_path() {
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let opts = CrossEntropyOptions::default();
    for (path, b) in backends() {
        for bad in [i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, 3] {
            match b.cross_entropy(&x, 3, Target::I64(&[1, bad]), None, &opts, Grad::New) {
                Err(xent::Error::Target {
                    batch: None,
                    row: 1,
                    value,
                    classes: 3,
                }) => assert_eq!(value, bad, "{path}"),
                other => panic!("{path}: target {bad}: {:?}", other.map(|l| l.loss)),
            }
        }
    }
}

/// [`check`] for half-precision logits: the loss (f32) as there, the gradient (of the
/// logits' type) within one unit in its last place of the reference, plus the f32 budget.
#[track_caller]
fn check_half(
    what: &str,
    (loss, grad): (&[f32], &[f32]),
    want: &Reference,
    reduction: LossReduction,
    dtype: DType,
) {
    let (want_loss, want_grad, factor) = want.reduced(reduction);
    assert_close(&format!("{what} loss"), loss, &want_loss, 1e-5, 1e-6);
    let scale = factor * want.grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
    assert_half(
        &format!("{what} grad"),
        grad,
        &want_grad,
        dtype,
        1e-6 * scale,
    );
}

#[test]
fn half_precision_logits_match_float64_of_the_rounded_inputs() {
    let mut r = rng(43);
    for (rows, cols) in [(1, 1), (3, 5), (7, 1000), (2, 33_333), (513, 50_257)] {
        let big = rows * cols > 1_000_000;
        let x = logits(&mut r, rows, cols);
        let q = probs(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let t = class_targets(&mut r, rows, cols, -100);
        let all = CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss(1e-4)
            .with_softcap(30.0);
        let cases: Vec<(&str, Option<&[f32]>, CrossEntropyOptions)> = if big {
            vec![("plain", None, CrossEntropyOptions::default())]
        } else {
            vec![
                ("plain", None, CrossEntropyOptions::default()),
                ("all", Some(&w), all),
            ]
        };
        for dtype in HALVES {
            let (x, x_bits) = rounded(&x, dtype);
            let (q, q_bits) = rounded(&q, dtype);
            // The slice paths of every backend at this type.
            for (path, b) in backends().into_iter().filter(|_| !big) {
                let b = b.typed(dtype);
                for &(case, w, opts) in &cases {
                    let what = format!("{path} typed {dtype} {rows}×{cols} {case}");
                    let want = Reference::indices(&x, cols, &t, w, &opts);
                    for grad in [Grad::New, Grad::InPlace] {
                        let got = b
                            .cross_entropy(&x, cols, Target::I64(&t), w, &opts, grad)
                            .unwrap();
                        let got = (&got.loss[..], &got.grad.unwrap()[..]);
                        check_half(
                            &format!("{what} {grad:?}"),
                            got,
                            &want,
                            opts.reduction,
                            dtype,
                        );
                    }
                }
            }
            for (name, gpu) in gpus() {
                let targets = Targets::from_i64(&gpu, &t).unwrap();
                let wt = Tensor::from_slice(&gpu, &w, 1, cols).unwrap();
                let upload =
                    |bits: &[u16]| Tensor::from_bits(&gpu, bits, dtype, rows, cols).unwrap();
                let qt = upload(&q_bits);
                for &(case, w, opts) in &cases {
                    let weight = w.map(|_| &wt);
                    let hard = Reference::indices(&x, cols, &t, w, &opts);
                    let soft_opts = CrossEntropyOptions {
                        z_loss: 0.0,
                        ..opts
                    };
                    let soft = Reference::probs(&x, cols, &q, w, &soft_opts);
                    let reductions: &[LossReduction] = if big {
                        &[LossReduction::Mean]
                    } else {
                        &REDUCTIONS
                    };
                    for &reduction in reductions {
                        let what = format!("{name} {dtype} {rows}×{cols} {case} {reduction:?}");
                        let opts = opts.with_reduction(reduction);
                        let xt = upload(&x_bits);
                        let out = xt
                            .cross_entropy(&targets, weight, &opts, Grad::New)
                            .unwrap();
                        let grad = out.grad.unwrap();
                        assert_eq!((out.loss.dtype(), grad.dtype()), (DType::F32, dtype));
                        let got = (&out.loss.to_vec().unwrap()[..], &grad.to_vec().unwrap()[..]);
                        check_half(&what, got, &hard, reduction, dtype);
                        let out = xt
                            .cross_entropy(&targets, weight, &opts, Grad::InPlace)
                            .unwrap();
                        let got = (&out.loss.to_vec().unwrap()[..], &xt.to_vec().unwrap()[..]);
                        check_half(&format!("{what} in place"), got, &hard, reduction, dtype);
                        let opts = soft_opts.with_reduction(reduction);
                        let out = upload(&x_bits)
                            .cross_entropy_soft(&qt, weight, &opts, Grad::New)
                            .unwrap();
                        let got = (
                            &out.loss.to_vec().unwrap()[..],
                            &out.grad.unwrap().to_vec().unwrap()[..],
                        );
                        check_half(&format!("{what} soft"), got, &soft, reduction, dtype);
                    }
                }
            }
        }
    }
}

#[test]
fn half_precision_inputs_of_mixed_types_are_errors() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_half(&gpu, &[half::bf16::from_f32(1.0); 6], 2, 3).unwrap();
    let f16 = Tensor::from_half(&gpu, &[half::f16::from_f32(0.5); 6], 2, 3).unwrap();
    let f32 = Tensor::from_slice(&gpu, &[0.5; 6], 2, 3).unwrap();
    let opts = CrossEntropyOptions::default();
    let bad = |r: xent::Result<_>, what: &str| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}");
    };
    bad(
        x.cross_entropy_soft(&f16, None, &opts, Grad::New)
            .map(|_| ()),
        "f16 targets for bf16 logits",
    );
    bad(
        x.cross_entropy_soft(&f32, None, &opts, Grad::New)
            .map(|_| ()),
        "f32 targets for bf16 logits",
    );
    let targets = Targets::from_i32(&gpu, &[0, 2]).unwrap();
    let half_weight = Tensor::from_half(&gpu, &[half::bf16::from_f32(1.0); 3], 1, 3).unwrap();
    bad(
        x.cross_entropy(&targets, Some(&half_weight), &opts, Grad::New)
            .map(|_| ()),
        "half class weights",
    );
    bad(
        x.bce_with_logits(&f16, None, None, &BceOptions::default(), Grad::None)
            .map(|_| ()),
        "an f16 target for bf16 logits",
    );
    bad(
        x.bce_with_logits(
            &x,
            Some(&half_weight),
            None,
            &BceOptions::default(),
            Grad::None,
        )
        .map(|_| ()),
        "half pos_weight",
    );
    bad(
        x.joint_entropies(1, &InfoOptions::default()).map(|_| ()),
        "half joint tables",
    );
    let kl = x.divergence(
        &f16,
        xent::Divergence::Kl,
        &InfoOptions::default(),
        Grad::None,
    );
    bad(kl.map(|_| ()), "P bf16 and Q f16");
    let f32_out = Tensor::zeros(&gpu, 2, 3).unwrap();
    bad(
        x.softmax_into(&f32_out, xent::SoftmaxKind::Softmax, &Default::default()),
        "an f32 output of bf16 rows",
    );
    assert!(matches!(x.to_bits(), Ok(b) if b.len() == 6));
    bad(f32.to_bits().map(|_| ()), "the bits of an f32 tensor");
    bad(
        Tensor::from_bits(&gpu, &[0; 6], DType::F32, 2, 3).map(|_| ()),
        "f32 bits",
    );
    assert!(matches!(
        Tensor::from_bits(&gpu, &[0; 5], DType::F16, 2, 3),
        Err(Error::Shape(_))
    ));
}

/// The per-row extras of float64: each row's z-loss term `z·lse²` and softmax entropy (of the
/// capped logits), 0 for an ignored row.
fn extras64(
    x: &[f32],
    cols: usize,
    ignored: &[bool],
    o: &CrossEntropyOptions,
) -> (Vec<f64>, Vec<f64>) {
    let (lp, lse, _) = read_logits(x, cols, o.softcap);
    let z = f64::from(o.z_loss);
    let h = lp.chunks(cols).map(|row| {
        -row.iter()
            .map(|&l| {
                if l == f64::NEG_INFINITY {
                    0.0
                } else {
                    l.exp() * l
                }
            })
            .sum::<f64>()
    });
    let zero = |i: usize, v: f64| if ignored[i] { 0.0 } else { v };
    let zs = lse
        .iter()
        .enumerate()
        .map(|(i, l)| zero(i, z * l * l))
        .collect();
    (zs, h.enumerate().map(|(i, v)| zero(i, v)).collect())
}

#[test]
fn z_loss_and_entropy_per_row_from_the_same_pass() {
    let mut r = rng(47);
    let split = gpus_with(GpuOptions {
        row_split: xent::RowSplit::Always,
        ..Default::default()
    });
    for (rows, cols) in [(1, 1), (3, 5), (7, 1000), (2, 33_333), (300, 37)] {
        let mut x = logits(&mut r, rows, cols);
        if cols > 3 {
            // -inf logits add nothing to the entropy.
            x[1] = f32::NEG_INFINITY;
        }
        let w = weights(&mut r, cols);
        let t = class_targets(&mut r, rows, cols, -100);
        let q = probs(&mut r, rows, cols);
        let ignored: Vec<bool> = t.iter().map(|&v| v == -100).collect();
        let base = CrossEntropyOptions::default()
            .with_z_loss_output()
            .with_entropy_output();
        let all = base
            .with_z_loss(1e-3)
            .with_label_smoothing(0.1)
            .with_softcap(20.0)
            .with_reduction(LossReduction::Sum);
        for (case, w, opts) in [
            ("plain", None, base.with_z_loss(1e-4)),
            ("all", Some(&w[..]), all),
            (
                "all unreduced",
                Some(&w[..]),
                all.with_reduction(LossReduction::None),
            ),
        ] {
            let (z, h) = extras64(&x, cols, &ignored, &opts);
            let want = Reference::indices(&x, cols, &t, w, &opts);
            let soft_opts = CrossEntropyOptions {
                z_loss: 0.0,
                z_loss_output: false,
                ..opts
            };
            let (_, h_soft) = extras64(&x, cols, &vec![false; rows], &soft_opts);
            let mut paths = backends();
            for (cross_lane, g) in &split {
                paths.push((format!("gpu/{cross_lane:?}/split"), Box::new(g.clone())));
            }
            for (path, b) in paths {
                for grad in [Grad::None, Grad::New, Grad::InPlace] {
                    let what = format!("{path} {rows}×{cols} {case} {grad:?}");
                    let got = b
                        .cross_entropy(&x, cols, Target::I64(&t), w, &opts, grad)
                        .unwrap();
                    assert_close(
                        &format!("{what} z-loss"),
                        got.z_loss.as_ref().unwrap(),
                        &z,
                        1e-5,
                        1e-7,
                    );
                    assert_close(
                        &format!("{what} entropy"),
                        got.entropy.as_ref().unwrap(),
                        &h,
                        1e-5,
                        1e-6,
                    );
                    if grad != Grad::None {
                        check(&what, &got, &want, opts.reduction);
                    }
                    let got = b
                        .cross_entropy(&x, cols, Target::Probs(&q), w, &soft_opts, grad)
                        .unwrap();
                    assert!(got.z_loss.is_none());
                    assert_close(
                        &format!("{what} soft entropy"),
                        &got.entropy.unwrap(),
                        &h_soft,
                        1e-5,
                        1e-6,
                    );
                }
            }
        }
    }
    // Asking without the tensors, or for the z-loss of soft targets, is an error.
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_slice(&gpu, &[0.5; 6], 2, 3).unwrap();
    let t = Targets::from_i32(&gpu, &[0, 1]).unwrap();
    let loss = Tensor::zeros(&gpu, 1, 1).unwrap();
    let out = xent::LossOut {
        loss: &loss,
        grad: xent::GradOut::None,
    };
    let mut ws = xent::Workspace::new(&gpu);
    let mut enc = gpu.encoder();
    let opts = CrossEntropyOptions::default().with_entropy_output();
    let r = x.record_cross_entropy(&mut ws, &mut enc, &t, None, &opts, out);
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let z = Tensor::zeros(&gpu, 2, 1).unwrap();
    let extras = xent::CeExtras {
        z_loss: Some(&z),
        entropy: None,
    };
    let soft = xent::CeTarget::Probs(&x);
    let r = x.record_cross_entropy_extras(
        &mut ws,
        &mut enc,
        soft,
        None,
        &CrossEntropyOptions::default(),
        (out, extras),
    );
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let wrong = xent::CeExtras {
        z_loss: None,
        entropy: Some(&loss),
    };
    let r = x.record_cross_entropy_extras(
        &mut ws,
        &mut enc,
        xent::CeTarget::Indices(&t),
        None,
        &opts,
        (out, wrong),
    );
    assert!(matches!(r, Err(Error::Shape(_))), "{r:?}");
    assert!(
        Cpu.cross_entropy(
            &[0.5; 6],
            3,
            Target::Probs(&[0.5; 6]),
            None,
            &CrossEntropyOptions::default().with_z_loss_output(),
            Grad::None
        )
        .is_err()
    );
}

#[test]
fn half_precision_bce_matches_float64_of_the_rounded_inputs() {
    let mut r = rng(61);
    for (rows, cols) in [(1, 1), (3, 5), (7, 1000), (2, 33_333), (513, 50_257)] {
        let x = normal(&mut r, rows * cols, 3.0);
        let t: Vec<f32> = (0..rows * cols).map(|_| r.random_range(0.0..1.0)).collect();
        let pw = weights(&mut r, cols);
        let w = weights(&mut r, rows * cols);
        for dtype in HALVES {
            let (x, x_bits) = rounded(&x, dtype);
            let (t, t_bits) = rounded(&t, dtype);
            for weighted in [false, true] {
                let (pw, w) = (weighted.then_some(&pw[..]), weighted.then_some(&w[..]));
                let want = Reference::bce(&x, cols, &t, pw, w);
                let reductions: &[LossReduction] = if rows * cols > 1_000_000 {
                    &[LossReduction::Mean]
                } else {
                    &REDUCTIONS
                };
                for &reduction in reductions {
                    let what =
                        format!("cpu {dtype} bce {rows}×{cols} weights={weighted} {reduction:?}");
                    let weights = BceWeights {
                        pos_weight: pw,
                        weight: w,
                    };
                    let (loss, grad) = typed_cpu_bce(dtype, (&x, &t), cols, weights, reduction);
                    check_half(&what, (&loss, &grad), &want, reduction, dtype);
                }
                for (name, gpu) in gpus() {
                    let upload =
                        |bits: &[u16]| Tensor::from_bits(&gpu, bits, dtype, rows, cols).unwrap();
                    let (xt, tt) = (upload(&x_bits), upload(&t_bits));
                    let pwt = pw.map(|v| Tensor::from_slice(&gpu, v, 1, cols).unwrap());
                    let wt = w.map(|v| Tensor::from_slice(&gpu, v, rows, cols).unwrap());
                    for reduction in REDUCTIONS {
                        let what = format!(
                            "{name} {dtype} bce {rows}×{cols} weights={} {reduction:?}",
                            w.is_some()
                        );
                        let opts = BceOptions { reduction };
                        let out = xt
                            .bce_with_logits(&tt, pwt.as_ref(), wt.as_ref(), &opts, Grad::New)
                            .unwrap();
                        let grad = out.grad.unwrap();
                        assert_eq!(grad.dtype(), dtype);
                        let got = (&out.loss.to_vec().unwrap()[..], &grad.to_vec().unwrap()[..]);
                        check_half(&what, got, &want, reduction, dtype);
                    }
                }
            }
        }
    }
}

/// `xent::cpu::cross_entropy` of logits of a half type: the loss (f32) and the per-row extras
/// against float64 on the rounded logits, the gradient (of the logits' type) within one unit
/// in its last place, for class indices (ignored rows, class weights, smoothing, z-loss,
/// softcap) and probability targets, every reduction; shapes for rows on this thread,
/// parallel blocks of short rows, rows longer than a widened piece, one long row.
fn cpu_cross_entropy_of<E: common::HalfElement>() {
    let dtype = E::DTYPE;
    let mut r = rng(67);
    for (rows, cols) in [
        (1, 1),
        (3, 5),
        (7, 1000),
        (2, 33_333),
        (70_000, 3),
        (1, 131_075),
    ] {
        let (x, _) = rounded(&logits(&mut r, rows, cols), dtype);
        let xe: Vec<E> = common::as_half(&x);
        let q = probs(&mut r, rows, cols);
        let w = weights(&mut r, cols);
        let t = class_targets(&mut r, rows, cols, -100);
        let ignored: Vec<bool> = t.iter().map(|&v| v == -100).collect();
        let all = CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss(1e-4)
            .with_softcap(30.0)
            .with_z_loss_output()
            .with_entropy_output();
        for (case, w, opts) in [
            ("plain", None, CrossEntropyOptions::default()),
            ("all", Some(&w[..]), all),
        ] {
            let soft_opts = CrossEntropyOptions {
                z_loss: 0.0,
                z_loss_output: false,
                ..opts
            };
            let hard = Reference::indices(&x, cols, &t, w, &opts);
            let soft = Reference::probs(&x, cols, &q, w, &soft_opts);
            for reduction in REDUCTIONS {
                let what = format!("cpu {dtype} {rows}×{cols} {case} {reduction:?}");
                let opts = opts.with_reduction(reduction);
                let out = xent::cpu::cross_entropy(&xe, cols, Target::I64(&t), w, &opts, Grad::New)
                    .unwrap();
                let grad = common::widened(&out.grad.unwrap());
                check_half(&what, (&out.loss, &grad), &hard, reduction, dtype);
                if opts.z_loss_output {
                    let (z, h) = extras64(&x, cols, &ignored, &opts);
                    assert_close(&format!("{what} z"), &out.z_loss.unwrap(), &z, 1e-5, 1e-7);
                    assert_close(&format!("{what} h"), &out.entropy.unwrap(), &h, 1e-5, 1e-6);
                }
                let opts = soft_opts.with_reduction(reduction);
                let out =
                    xent::cpu::cross_entropy(&xe, cols, Target::Probs(&q), w, &opts, Grad::New)
                        .unwrap();
                let grad = common::widened(&out.grad.unwrap());
                check_half(
                    &format!("{what} soft"),
                    (&out.loss, &grad),
                    &soft,
                    reduction,
                    dtype,
                );
                let out =
                    xent::cpu::cross_entropy(&xe, cols, Target::Probs(&q), w, &opts, Grad::None)
                        .unwrap();
                assert!(out.grad.is_none(), "{what}");
            }
        }
    }
}

#[test]
fn cpu_cross_entropy_of_half_logits_matches_float64_of_the_rounded_inputs() {
    cpu_cross_entropy_of::<half::f16>();
    cpu_cross_entropy_of::<half::bf16>();
}

/// `xent::cpu::bce_with_logits` of logits and targets of `dtype` (the values already of it)
/// with its gradient: the loss and the gradient widened to f32.
fn typed_cpu_bce(
    dtype: DType,
    (x, t): (&[f32], &[f32]),
    cols: usize,
    weights: BceWeights<'_>,
    reduction: LossReduction,
) -> (Vec<f32>, Vec<f32>) {
    fn run<E: common::HalfElement>(
        (x, t): (&[f32], &[f32]),
        cols: usize,
        weights: BceWeights<'_>,
        reduction: LossReduction,
    ) -> (Vec<f32>, Vec<f32>) {
        let (x, t) = (common::as_half::<E>(x), common::as_half::<E>(t));
        let opts = BceOptions { reduction };
        let out = xent::cpu::bce_with_logits(&x, cols, &t, weights, &opts, Grad::New).unwrap();
        (out.loss, common::widened(&out.grad.unwrap()))
    }
    match dtype {
        DType::F16 => run::<half::f16>((x, t), cols, weights, reduction),
        _ => run::<half::bf16>((x, t), cols, weights, reduction),
    }
}
