//! Information theory (SPEC.md §3) on both paths: float64 references on random
//! distributions with exact zeros, the identities between the quantities, the seed article's
//! spam example, joint tables and the distillation gradient against finite differences.

mod common;

use common::{
    HALVES, assert_close, assert_half, backends, finite_differences, gpu, gpus, normal, rng,
    rounded,
};
use rand::RngExt;
use rand::rngs::StdRng;
use xent::{
    Backend, DType, DivReduction, Divergence, Form, Grad, InfoOptions, Tensor, validate_probs,
};

/// Logits of scale 2; the probability rows are their softmax with every 3rd entry of every
/// other row set to exactly 0 (and renormalised).
fn distributions(rng: &mut StdRng, rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let x = normal(rng, rows * cols, 2.0);
    let mut p: Vec<f32> = x.iter().map(|v| v.exp()).collect();
    for (r, row) in p.chunks_mut(cols).enumerate() {
        if r % 2 == 1 && cols > 2 {
            row.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        }
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    (x, p)
}

/// Float64 references, from probabilities.
mod reference {
    pub fn plogq(p: f64, lq: f64) -> f64 {
        if p == 0.0 { 0.0 } else { p * lq }
    }

    pub fn entropy(p: &[f32], cols: usize) -> Vec<f64> {
        p.chunks(cols)
            .map(|r| {
                -r.iter()
                    .map(|&v| plogq(v.into(), f64::from(v).ln()))
                    .sum::<f64>()
            })
            .collect()
    }

    pub fn divergence(p: &[f32], q: &[f32], cols: usize, kind: xent::Divergence) -> Vec<f64> {
        p.chunks(cols)
            .zip(q.chunks(cols))
            .map(|(pr, qr)| {
                pr.iter()
                    .zip(qr)
                    .map(|(&p, &q)| {
                        let (p, q) = (f64::from(p), f64::from(q));
                        match kind {
                            xent::Divergence::CrossEntropy => -plogq(p, q.ln()),
                            xent::Divergence::Kl => plogq(p, p.ln() - q.ln()),
                            xent::Divergence::Js => {
                                let m = 0.5 * (p + q);
                                0.5 * (plogq(p, (p / m).ln()) + plogq(q, (q / m).ln()))
                            }
                        }
                    })
                    .sum()
            })
            .collect()
    }
}

const KINDS: [Divergence; 3] = [Divergence::CrossEntropy, Divergence::Kl, Divergence::Js];

/// Absolute tolerance for a value in base `base` built from logs, one a conformant device
/// meets: Vulkan allows its `log` 2^-21 absolute error on [0.5, 2] (3 ulp elsewhere), so a
/// sum of p·log p with weights summing to 1 may be 2^-21 nats off from the logs alone; twice
/// that (for f32 rounding) over ln b, never below 1e-6. lavapipe's log is exact there.
fn log_atol(base: f32) -> f64 {
    (2.0 * 2f64.powi(-21) / f64::from(base).ln()).max(1e-6)
}

#[test]
fn the_seed_articles_spam_example() {
    let (p, q) = ([0.8f32, 0.2], [0.7f32, 0.3]);
    let ln = |v: f64| v.ln();
    let h_p = -(0.8 * ln(0.8) + 0.2 * ln(0.2));
    let h_pq = -(0.8 * ln(0.7) + 0.2 * ln(0.3));
    let d = 0.8 * ln(0.8 / 0.7) + 0.2 * ln(0.2 / 0.3);
    for (path, b) in backends() {
        for base in [std::f32::consts::E, 2.0] {
            let o = InfoOptions::default().with_base(base);
            let k = f64::from(base).ln();
            let h = b.entropy(&p, 2, &o).unwrap();
            let x = b
                .divergence(&p, &q, 2, Divergence::CrossEntropy, &o, Grad::None)
                .unwrap();
            let kl = b
                .divergence(&p, &q, 2, Divergence::Kl, &o, Grad::None)
                .unwrap();
            let atol = log_atol(base);
            assert_close(
                &format!("{path} H(P) base {base}"),
                &h,
                &[h_p / k],
                0.0,
                atol,
            );
            assert_close(&format!("{path} H(P,Q)"), &x.loss, &[h_pq / k], 0.0, atol);
            assert_close(&format!("{path} D(P||Q)"), &kl.loss, &[d / k], 0.0, atol);
        }
    }
}

#[test]
fn every_op_and_form_matches_float64() {
    let mut r = rng(41);
    for (rows, cols) in [(1, 1), (3, 5), (100, 1000), (2, 200_000)] {
        let (xp, p) = distributions(&mut r, rows, cols);
        let (xq, q) = distributions(&mut r, rows, cols);
        let logs = |v: &[f32]| -> Vec<f32> { v.iter().map(|v| v.ln()).collect() };
        let sp: Vec<f32> = common::reference::softmax(&xp, cols, 2.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let sq: Vec<f32> = common::reference::softmax(&xq, cols, 2.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        // Softcapped at 3, then at temperature 2.
        let capped = |x: &[f32]| -> Vec<f32> {
            let y = common::reference::softcap(x, 3.0).0;
            common::reference::log_softmax64(&y, cols, 2.0)
                .iter()
                .map(|&v| v.exp() as f32)
                .collect()
        };
        let (cp, cq) = (capped(&xp), capped(&xq));
        // (form, P as given, Q as given, P and Q as probabilities for the reference)
        let forms = [
            (
                InfoOptions::default(),
                p.clone(),
                q.clone(),
                p.clone(),
                q.clone(),
            ),
            (
                InfoOptions::default().with_form(Form::LogProbs),
                logs(&p),
                logs(&q),
                p.clone(),
                q.clone(),
            ),
            (
                InfoOptions::default()
                    .with_form(Form::Logits)
                    .with_temperature(2.0),
                xp.clone(),
                xq.clone(),
                sp,
                sq,
            ),
            (
                InfoOptions::default()
                    .with_form(Form::Logits)
                    .with_temperature(2.0)
                    .with_softcap(3.0),
                xp.clone(),
                xq.clone(),
                cp,
                cq,
            ),
        ];
        for (opts, pin, qin, pp, qp) in &forms {
            for base in [std::f32::consts::E, 2.0, 10.0] {
                let o = opts.with_base(base);
                let k = f64::from(base).ln();
                let scaled = |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|v| v / k).collect() };
                let want_h = scaled(reference::entropy(pp, cols));
                let want_self: Vec<f64> = pp.iter().map(|&v| -f64::from(v).ln() / k).collect();
                for (path, b) in backends() {
                    let what = format!(
                        "{path} {rows}x{cols} {:?} softcap {:?} base {base}",
                        o.form, o.softcap
                    );
                    let h = b.entropy(pin, cols, &o).unwrap();
                    assert_close(
                        &format!("{what} entropy"),
                        &h,
                        &want_h,
                        1e-5,
                        log_atol(base),
                    );
                    let s = b.self_information(pin, cols, &o).unwrap();
                    assert_close(
                        &format!("{what} self-information"),
                        &s,
                        &want_self,
                        1e-5,
                        1e-5,
                    );
                    for kind in KINDS {
                        let want = scaled(reference::divergence(pp, qp, cols, kind));
                        let got = b.divergence(pin, qin, cols, kind, &o, Grad::None).unwrap();
                        let atol = log_atol(base);
                        assert_close(&format!("{what} {kind:?}"), &got.loss, &want, 1e-5, atol);
                    }
                }
            }
        }
    }
}

#[test]
fn identities_hold_on_the_gpu() {
    let Some(g) = gpu() else { return };
    let mut r = rng(43);
    let (rows, cols) = (64, 777);
    let (_, p) = distributions(&mut r, rows, cols);
    let (_, q) = distributions(&mut r, rows, cols);
    let o = InfoOptions::default();
    let h = g.entropy(&p, cols, &o).unwrap();
    let div =
        |a: &[f32], b: &[f32], kind| g.divergence(a, b, cols, kind, &o, Grad::None).unwrap().loss;
    let x = div(&p, &q, Divergence::CrossEntropy);
    let kl = div(&p, &q, Divergence::Kl);
    let kl_back = div(&q, &p, Divergence::Kl);
    let kl_self = div(&p, &p, Divergence::Kl);
    let js = div(&p, &q, Divergence::Js);
    let js_back = div(&q, &p, Divergence::Js);
    for i in 0..rows {
        // H(P,Q) = H(P) + D(P‖Q); rows with zeros in P only (Q's zeros sit where P's do).
        assert!(
            (x[i] - (h[i] + kl[i])).abs() <= 1e-5 * x[i].abs().max(1.0),
            "row {i}"
        );
        assert!(kl[i] >= -1e-6, "D >= 0, row {i}: {}", kl[i]);
        assert!(
            kl_self[i].abs() <= 1e-6,
            "D(P||P) = 0, row {i}: {}",
            kl_self[i]
        );
        assert!(
            (kl[i] - kl_back[i]).abs() > 1e-4,
            "D is asymmetric, row {i}"
        );
        assert!((js[i] - js_back[i]).abs() <= 1e-6, "JS symmetric, row {i}");
        assert!(
            js[i] >= -1e-6 && js[i] <= std::f32::consts::LN_2 + 1e-6,
            "JS <= ln 2"
        );
    }
    // Uniform entropy = log K, in nats and bits; bits = nats / ln 2.
    for k in [1usize, 3, 1000, 33_333] {
        let u = vec![1.0 / k as f32; k];
        let nats = g.entropy(&u, k, &o).unwrap()[0];
        let bits = g.entropy(&u, k, &o.with_base(2.0)).unwrap()[0];
        assert_close(
            &format!("uniform {k}"),
            &[nats, bits],
            &[(k as f64).ln(), (k as f64).log2()],
            1e-5,
            1e-6,
        );
    }
    // Disjoint supports: JS reaches ln 2.
    let js = g
        .divergence(&[1.0, 0.0], &[0.0, 1.0], 2, Divergence::Js, &o, Grad::None)
        .unwrap()
        .loss;
    assert_close("disjoint JS", &js, &[std::f64::consts::LN_2], 1e-6, 0.0);
}

#[test]
fn zeros_infinities_and_nan_follow_the_spec() {
    // P > 0 where Q = 0: cross-entropy and KL are +inf; P = 0 terms are 0 even against Q = 0.
    let p = [0.5f32, 0.5, 0.0, 1.0, 0.0, 0.0, f32::NAN, 0.5, 0.5];
    let q = [0.0f32, 1.0, 0.0, 0.5, 0.5, 0.0, 0.3, 0.3, 0.4];
    for (path, b) in backends() {
        let o = InfoOptions::default();
        for kind in [Divergence::CrossEntropy, Divergence::Kl] {
            let d = b.divergence(&p, &q, 3, kind, &o, Grad::None).unwrap().loss;
            assert_eq!(d[0], f32::INFINITY, "{path} {kind:?}");
            assert!(d[1].is_finite(), "{path} {kind:?}: {}", d[1]);
            assert!(d[2].is_nan(), "{path} {kind:?}: NaN stays in its row");
        }
        let h = b.entropy(&p, 3, &o).unwrap();
        assert!(
            h[0].is_finite() && h[1] == 0.0 && h[2].is_nan(),
            "{path}: {h:?}"
        );
        let s = b.self_information(&p[..3], 3, &o).unwrap();
        assert_eq!(s[2], f32::INFINITY, "{path}: -log 0");
        // The same from logits (the one-pass kernel): -inf is probability 0.
        let inf = f32::NEG_INFINITY;
        let xp = [0.0f32, 0.0, inf, 1.0, inf, 2.0, f32::NAN, 0.5, 0.5];
        let xq = [0.0f32, inf, 0.0, 3.0, inf, 2.0, 0.3, 0.3, 0.4];
        let o = o.with_form(Form::Logits);
        for kind in [Divergence::CrossEntropy, Divergence::Kl] {
            let d = b.divergence(&xp, &xq, 3, kind, &o, Grad::New).unwrap();
            assert_eq!(d.loss[0], f32::INFINITY, "{path} {kind:?} from logits");
            assert!(d.loss[1].is_finite(), "{path} {kind:?}: {}", d.loss[1]);
            assert!(d.loss[2].is_nan(), "{path} {kind:?}: NaN stays in its row");
        }
        let h = b.entropy(&xp, 3, &o).unwrap();
        let want = [
            std::f64::consts::LN_2,
            reference::entropy(
                &[
                    1.0 / (1.0 + 1.0f32.exp()),
                    0.0,
                    1.0f32.exp() / (1.0 + 1.0f32.exp()),
                ],
                3,
            )[0],
        ];
        assert_close(
            &format!("{path} entropy from logits"),
            &h[..2],
            &want,
            1e-5,
            1e-6,
        );
        assert!(h[2].is_nan(), "{path}: {h:?}");
    }
}

#[test]
fn joint_tables() {
    let mut r = rng(47);
    // Small tables (the CPU's f64 path) and large ones (its vectorised f32 path); Y lengths
    // prime to 3, so that table 1's Y = 3X mod Y is one to one.
    for (x, y, random) in [(7, 13, 30), (37, 53, 6), (256, 301, 2)] {
        let px: Vec<f64> = (0..x).map(|_| r.random_range(0.1..1.0)).collect();
        let py: Vec<f64> = (0..y).map(|_| r.random_range(0.1..1.0)).collect();
        // Table 0: independent counts (outer product); table 1: deterministic Y = f(X);
        // tables 2..: random counts with zeros.
        let mut tables: Vec<f32> = Vec::new();
        tables.extend((0..x * y).map(|i| (px[i / y] * py[i % y] * 1000.0) as f32));
        tables.extend((0..x * y).map(|i| {
            if i % y == (i / y) * 3 % y {
                px[i / y] as f32
            } else {
                0.0
            }
        }));
        for _ in 0..random {
            tables.extend((0..x * y).map(|i| {
                if i % 5 == 0 {
                    0.0
                } else {
                    r.random_range(0.0..50.0f32).floor()
                }
            }));
        }
        let b_count = tables.len() / (x * y);
        let h = |v: f64| if v == 0.0 { 0.0 } else { -v * v.ln() };
        let mut want = Vec::new();
        for t in tables.chunks(x * y) {
            let total: f64 = t.iter().map(|&v| f64::from(v)).sum();
            let p = |i: usize, j: usize| f64::from(t[i * y + j]) / total;
            let hxy: f64 = (0..x * y).map(|c| h(p(c / y, c % y))).sum();
            let hx: f64 = (0..x).map(|i| h((0..y).map(|j| p(i, j)).sum())).sum();
            let hy: f64 = (0..y).map(|j| h((0..x).map(|i| p(i, j)).sum())).sum();
            want.extend([hx, hy, hxy, hxy - hx, hx + hy - hxy]);
        }
        for (path, b) in backends() {
            let what = format!("{path} {x} × {y}");
            let got = b
                .joint_entropies(&tables, x * y, x, &InfoOptions::default())
                .unwrap();
            assert_eq!(got.len(), b_count * 5);
            assert_close(&format!("{what} joint"), &got, &want, 1e-5, 1e-5);
            assert!(
                got[4].abs() < 1e-5,
                "{what}: I = 0 for an independent table: {}",
                got[4]
            );
            assert!(
                (got[9] - got[5]).abs() < 1e-5,
                "{what}: I = H(X) when Y = f(X): {} against {}",
                got[9],
                got[5]
            );
            let bits = b
                .joint_entropies(&tables, x * y, x, &InfoOptions::default().with_base(2.0))
                .unwrap();
            let nats_over_ln2: Vec<f64> = got
                .iter()
                .map(|&v| f64::from(v) / std::f64::consts::LN_2)
                .collect();
            assert_close(&format!("{what} bits"), &bits, &nats_over_ln2, 1e-5, 1e-6);
        }
    }
}

#[test]
fn distillation_gradient_matches_finite_differences() {
    let mut r = rng(53);
    let (rows, cols) = (3, 5);
    let teacher = normal(&mut r, rows * cols, 1.5);
    let student = normal(&mut r, rows * cols, 1.5);
    let t = 2.0;
    for softcap in [None, Some(1.5)] {
        distillation_gradient(&teacher, &student, (rows, cols), t, softcap);
    }
}

/// The distillation gradient at temperature `t` (and softcap), against finite differences of
/// a float64 value.
fn distillation_gradient(
    teacher: &[f32],
    student: &[f32],
    (rows, cols): (usize, usize),
    t: f32,
    softcap: Option<f32>,
) {
    // Student logits as the op reads them, in f64.
    let read = |z: &[f32]| -> Vec<f64> {
        match softcap {
            Some(c) => common::reference::softcap(z, c.into()).0,
            None => z.iter().map(|&v| f64::from(v)).collect(),
        }
    };
    let p: Vec<f64> = common::reference::log_softmax64(&read(teacher), cols, t.into())
        .iter()
        .map(|v| v.exp())
        .collect();
    for kind in KINDS {
        for reduction in [
            DivReduction::None,
            DivReduction::Sum,
            DivReduction::Mean,
            DivReduction::BatchMean,
        ] {
            let o = InfoOptions {
                softcap,
                ..InfoOptions::default()
                    .with_form(Form::Logits)
                    .with_temperature(t)
                    .with_base(2.0)
                    .with_reduction(reduction)
            };
            // The reduced value in f64 as a function of the student's logits.
            let value = |z: &[f32]| -> f64 {
                let q64: Vec<f64> = common::reference::log_softmax64(&read(z), cols, t.into())
                    .iter()
                    .map(|v| v.exp())
                    .collect();
                let rowsum: f64 = p
                    .chunks(cols)
                    .zip(q64.chunks(cols))
                    .map(|(pr, qr)| {
                        pr.iter()
                            .zip(qr)
                            .map(|(&p, &q)| match kind {
                                Divergence::CrossEntropy => -p * q.ln(),
                                Divergence::Kl => p * (p.ln() - q.ln()),
                                Divergence::Js => {
                                    let m = 0.5 * (p + q);
                                    0.5 * (p * (p / m).ln() + q * (q / m).ln())
                                }
                            })
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / std::f64::consts::LN_2;
                match reduction {
                    DivReduction::None | DivReduction::Sum => rowsum,
                    DivReduction::Mean => rowsum / (rows * cols) as f64,
                    DivReduction::BatchMean => rowsum / rows as f64,
                }
            };
            let fd = finite_differences(student, value);
            for (path, b) in backends() {
                let got = b
                    .divergence(teacher, student, cols, kind, &o, Grad::New)
                    .unwrap();
                assert_close(
                    &format!("{path} {kind:?} {reduction:?} softcap {softcap:?}"),
                    &got.grad.unwrap(),
                    &fd,
                    1e-3,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    assert!(
        validate_probs(&[0.5, 0.5, 0.9, 0.2], 2)
            .unwrap_err()
            .to_string()
            .contains("row 1")
    );
    assert!(validate_probs(&[0.5, 0.5, -0.1, 1.1], 2).is_err());
    assert!(validate_probs(&[f32::NAN, 1.0], 2).is_err());
    assert!(validate_probs(&[0.5, 0.5004], 2).is_ok());
    let p = [0.5f32, 0.5];
    for (path, b) in backends() {
        let o = InfoOptions::default();
        let logits = o.with_form(Form::Logits);
        let bad: Vec<(&str, bool)> = vec![
            ("base 1", b.entropy(&p, 2, &o.with_base(1.0)).is_err()),
            (
                "base NaN",
                b.entropy(&p, 2, &o.with_base(f32::NAN)).is_err(),
            ),
            (
                "temperature on probs",
                b.entropy(&p, 2, &o.with_temperature(2.0)).is_err(),
            ),
            (
                "Q length",
                b.divergence(&p, &[1.0], 2, Divergence::Kl, &o, Grad::None)
                    .is_err(),
            ),
            (
                "gradient from probs",
                b.divergence(&p, &p, 2, Divergence::Kl, &o, Grad::New)
                    .is_err(),
            ),
            (
                "gradient in place",
                b.divergence(&p, &p, 2, Divergence::Kl, &logits, Grad::InPlace)
                    .is_err(),
            ),
            ("ragged", b.entropy(&[0.1, 0.2, 0.7], 2, &o).is_err()),
            ("empty", b.entropy(&[], 2, &o).is_err()),
            ("joint X", b.joint_entropies(&[1.0; 6], 6, 4, &o).is_err()),
        ];
        for (what, is_err) in bad {
            assert!(is_err, "{path}: {what} was accepted");
        }
    }
    if let Some(g) = gpu() {
        let t = Tensor::from_slice(&g, &p, 1, 2).unwrap();
        let o = InfoOptions::default().with_form(Form::Logits);
        assert!(t.divergence(&t, Divergence::Kl, &o, Grad::InPlace).is_err());
    }
}

#[test]
fn half_precision_rows_match_float64_of_the_rounded_inputs() {
    let mut r = rng(59);
    for (rows, cols) in [
        (1, 1),
        (3, 5),
        (7, 1000),
        (2, 33_333),
        (70_000, 3),
        (513, 50_257),
    ] {
        let big = rows * cols > 1_000_000;
        let (teacher, p) = distributions(&mut r, rows, cols);
        let student = normal(&mut r, rows * cols, 2.0);
        for dtype in HALVES {
            let (teacher, t_bits) = rounded(&teacher, dtype);
            let (student, s_bits) = rounded(&student, dtype);
            let (p, p_bits) = rounded(&p, dtype);
            for softcap in [None, Some(20.0)] {
                let t = 1.5;
                // Both sides' probabilities as the ops read the logits, in f64.
                let read = |z: &[f32]| -> (Vec<f64>, Vec<f64>) {
                    let (y, slope) = match softcap {
                        Some(c) => common::reference::softcap(z, c),
                        None => (
                            z.iter().map(|&v| f64::from(v)).collect(),
                            vec![1.0; z.len()],
                        ),
                    };
                    let lp = common::reference::log_softmax64(&y, cols, t);
                    (lp.iter().map(|v| v.exp()).collect(), slope)
                };
                let (pt, _) = read(&teacher);
                let (qs, slope) = read(&student);
                let row_sums = |f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
                    pt.chunks(cols)
                        .zip(qs.chunks(cols))
                        .map(|(a, b)| a.iter().zip(b).map(|(&a, &b)| f(a, b)).sum())
                        .collect()
                };
                let plogq = |p: f64, q: f64| if p == 0.0 { 0.0 } else { p * q.ln() };
                let entropy = row_sums(&|a, _| -plogq(a, a));
                let kl = row_sums(&|a, b| plogq(a, a) - plogq(a, b));
                // ∂ Σ_rows D(P‖Q) / ∂z = (q − p) / T, times the softcap's slope.
                let grad: Vec<f64> = (0..pt.len())
                    .map(|i| (qs[i] - pt[i]) / t * slope[i])
                    .collect();
                let opts = InfoOptions {
                    softcap: softcap.map(|c| c as f32),
                    ..InfoOptions::default()
                        .with_form(Form::Logits)
                        .with_temperature(t as f32)
                        .with_reduction(DivReduction::Sum)
                };
                // Entropies, and KL's loss and gradient (not for the largest shape), of one
                // path.
                let check = |what: &str, h: &[f32], kl_out: KlOut| {
                    let atol = log_atol(std::f32::consts::E);
                    assert_close(&format!("{what} entropy"), h, &entropy, 1e-5, atol);
                    if let Some((loss, g)) = kl_out {
                        let total: f64 = kl.iter().sum();
                        assert_close(&format!("{what} KL"), &loss, &[total], 1e-5, 1e-5);
                        assert_half(&format!("{what} KL gradient"), &g, &grad, dtype, 1e-6);
                    }
                };
                // The CPU's typed calls on the same rows.
                let what = format!("cpu {dtype} {rows}×{cols} softcap {softcap:?}");
                let (h, kl_out) = typed_cpu(dtype, &teacher, &student, cols, &opts, !big);
                check(&what, &h, kl_out);
                for (name, gpu) in gpus() {
                    let what = format!("{name} {dtype} {rows}×{cols} softcap {softcap:?}");
                    let upload =
                        |bits: &[u16]| Tensor::from_bits(&gpu, bits, dtype, rows, cols).unwrap();
                    let (tt, st) = (upload(&t_bits), upload(&s_bits));
                    let h = tt.entropy(&opts).unwrap().to_vec().unwrap();
                    let kl_out = (!big).then(|| {
                        let d = tt
                            .divergence(&st, Divergence::Kl, &opts, Grad::New)
                            .unwrap();
                        let g = d.grad.unwrap();
                        assert_eq!(g.dtype(), dtype);
                        (d.loss.to_vec().unwrap(), g.to_vec().unwrap())
                    });
                    check(&what, &h, kl_out);
                }
            }
            let probs = InfoOptions::default();
            let entropy = reference::entropy(&p, cols);
            let surprise: Vec<f64> = p.iter().map(|&v| -f64::from(v).ln()).collect();
            let check = |what: &str, h: &[f32], s: &[f32]| {
                let atol = log_atol(std::f32::consts::E);
                assert_close(&format!("{what} entropy"), h, &entropy, 1e-5, atol);
                assert_half(
                    &format!("{what} self-information"),
                    s,
                    &surprise,
                    dtype,
                    0.0,
                );
            };
            let (h, s) = typed_cpu_probs(dtype, &p, cols, &probs);
            check(&format!("cpu {dtype} {rows}×{cols} probabilities"), &h, &s);
            for (name, gpu) in gpus() {
                let what = format!("{name} {dtype} {rows}×{cols} probabilities");
                let pt = Tensor::from_bits(&gpu, &p_bits, dtype, rows, cols).unwrap();
                let h = pt.entropy(&probs).unwrap().to_vec().unwrap();
                let s = pt.self_information(&probs).unwrap().to_vec().unwrap();
                check(&what, &h, &s);
            }
        }
    }
}

/// `xent::cpu::entropy` of `teacher` and, when `kl`, `xent::cpu::divergence` (KL, with its
/// gradient) of `teacher` and `student`, all given as rows of `dtype` (the values already
/// of it): the entropies, the loss and the gradient widened to f32.
/// A KL divergence's loss and gradient, widened to f32.
type KlOut = Option<(Vec<f32>, Vec<f32>)>;

fn typed_cpu(
    dtype: DType,
    teacher: &[f32],
    student: &[f32],
    cols: usize,
    opts: &InfoOptions,
    kl: bool,
) -> (Vec<f32>, KlOut) {
    fn run<E: common::HalfElement>(
        teacher: &[f32],
        student: &[f32],
        cols: usize,
        opts: &InfoOptions,
        kl: bool,
    ) -> (Vec<f32>, KlOut) {
        let (t, s) = (common::as_half::<E>(teacher), common::as_half::<E>(student));
        let h = xent::cpu::entropy(&t, cols, opts).unwrap();
        let d = kl.then(|| {
            let d = xent::cpu::divergence(&t, &s, cols, Divergence::Kl, opts, Grad::New).unwrap();
            (d.loss, common::widened(&d.grad.unwrap()))
        });
        (h, d)
    }
    match dtype {
        DType::F16 => run::<half::f16>(teacher, student, cols, opts, kl),
        _ => run::<half::bf16>(teacher, student, cols, opts, kl),
    }
}

/// `xent::cpu::entropy` and `xent::cpu::self_information` of probability rows of `dtype`,
/// widened to f32.
fn typed_cpu_probs(
    dtype: DType,
    p: &[f32],
    cols: usize,
    opts: &InfoOptions,
) -> (Vec<f32>, Vec<f32>) {
    fn run<E: common::HalfElement>(
        p: &[f32],
        cols: usize,
        opts: &InfoOptions,
    ) -> (Vec<f32>, Vec<f32>) {
        let p = common::as_half::<E>(p);
        let h = xent::cpu::entropy(&p, cols, opts).unwrap();
        let s = xent::cpu::self_information(&p, cols, opts).unwrap();
        (h, common::widened(&s))
    }
    match dtype {
        DType::F16 => run::<half::f16>(p, cols, opts),
        _ => run::<half::bf16>(p, cols, opts),
    }
}
