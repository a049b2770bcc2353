//! Rows longer than one invocation may loop over. llvmpipe (lavapipe and GL, CI's devices)
//! ends an invocation's loops after 65 535 iterations in total and carries on, which once
//! returned truncated softmax rows, wrong gradients and negative mutual information as `Ok`.
//! Every row op family at 8 388 609, 16 777 217 and 33 554 428 columns and joint tables with
//! one very long side, against float64, on the CPU and every GPU path; rows split across
//! workgroups and chunked under a binding cap, in place and not.

mod common;

use common::{assert_close, assert_scaled, backends, gpus_with, normal, reference, rng};
use rand::RngExt;
use xent::{
    Backend, CrossEntropyOptions, Divergence, Form, GpuOptions, Grad, InfoOptions, RowSplit,
    SoftmaxOptions, Target, Targets, Tensor,
};

/// Row lengths at and past the boundary: odd (read one f32 at a time) and a multiple of 4
/// just under the 128 MiB binding (read as vec4).
const LONG: [usize; 3] = [8_388_609, 16_777_217, 33_554_428];

/// Float64 cross-entropy of one row with label smoothing `eps` and z-loss `z` (SPEC.md §2,
/// no weights): the loss and the gradient.
fn cross_entropy_f64(x: &[f32], y: usize, eps: f64, z: f64) -> (f64, Vec<f64>) {
    let k = x.len() as f64;
    let lse = reference::logsumexp(x, x.len(), 1.0)[0];
    let smooth: f64 = x.iter().map(|&v| lse - f64::from(v)).sum();
    let loss = (1.0 - eps) * (lse - f64::from(x[y])) + eps / k * smooth + z * lse * lse;
    let grad = x
        .iter()
        .enumerate()
        .map(|(c, &v)| {
            let p = (f64::from(v) - lse).exp();
            let hot = if c == y { 1.0 - eps } else { 0.0 };
            p * (1.0 + 2.0 * z * lse) - eps / k - hot
        })
        .collect();
    (loss, grad)
}

#[test]
fn rows_past_the_loop_limit_match_float64() {
    for cols in LONG {
        let mut r = rng(cols as u64);
        let x = normal(&mut r, cols, 3.0);
        let xq = normal(&mut r, cols, 3.0);
        let y = cols - 3;
        let lp = reference::log_softmax(&x, cols, 1.0);
        let lq = reference::log_softmax(&xq, cols, 1.0);
        let p: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
        let lse = reference::logsumexp(&x, cols, 1.0);
        let entropy: f64 = -p.iter().zip(&lp).map(|(p, l)| p * l).sum::<f64>();
        let kl: f64 = p
            .iter()
            .zip(lp.iter().zip(&lq))
            .map(|(p, (a, b))| p * (a - b))
            .sum();
        let kl_grad: Vec<f64> = lq.iter().zip(&p).map(|(l, p)| l.exp() - p).collect();
        let (eps, z) = (0.1, 1e-4);
        let (ce, ce_grad) = cross_entropy_f64(&x, y, eps, z);
        let ce_opts = CrossEntropyOptions::default()
            .with_label_smoothing(eps as f32)
            .with_z_loss(z as f32);
        let logits = InfoOptions::default().with_form(Form::Logits);
        let sm = SoftmaxOptions::default();
        // Gradient elements are differences of probabilities, each off by a relative ~1e-6
        // (the f32 rounding of a log-probability near -20): their error scales with the
        // probabilities, not with the difference.
        let pq: Vec<f64> = p.iter().zip(&lq).map(|(p, l)| p + l.exp()).collect();
        let mut ce_scale: Vec<f64> = p.iter().map(|p| p + eps / cols as f64).collect();
        ce_scale[y] += 1.0;
        for (path, b) in backends() {
            let at = |what: &str| format!("{path} {cols} {what}");
            // Softmax values are near 1/K: the error is relative, from the row's sum.
            assert_close(
                &at("softmax"),
                &b.softmax(&x, cols, &sm).unwrap(),
                &p,
                1e-4,
                0.0,
            );
            let got = b.log_softmax(&x, cols, &sm).unwrap();
            assert_close(&at("log_softmax"), &got, &lp, 1e-5, 0.0);
            assert_close(
                &at("logsumexp"),
                &b.logsumexp(&x, cols, &sm).unwrap(),
                &lse,
                1e-5,
                0.0,
            );
            let out = b
                .cross_entropy(
                    &x,
                    cols,
                    Target::I64(&[y as i64]),
                    None,
                    &ce_opts,
                    Grad::New,
                )
                .unwrap();
            assert_close(&at("cross-entropy"), &out.loss, &[ce], 1e-5, 0.0);
            let grad = out.grad.unwrap();
            assert_scaled(&at("cross-entropy grad"), &grad, &ce_grad, &ce_scale, 1e-5);
            assert_close(
                &at("entropy"),
                &b.entropy(&x, cols, &logits).unwrap(),
                &[entropy],
                1e-5,
                0.0,
            );
            let out = b
                .divergence(&x, &xq, cols, Divergence::Kl, &logits, Grad::New)
                .unwrap();
            assert_close(&at("KL"), &out.loss, &[kl], 1e-4, 1e-6);
            assert_scaled(&at("KL grad"), &out.grad.unwrap(), &kl_grad, &pq, 1e-5);
        }
    }
}

/// Float64 H(X), H(Y), H(X,Y), H(Y|X), I(X;Y) of each `x × y` table.
fn joint_f64(tables: &[f32], x: usize, y: usize) -> Vec<f64> {
    let h = |v: f64| if v == 0.0 { 0.0 } else { -v * v.ln() };
    let mut want = Vec::new();
    for t in tables.chunks(x * y) {
        let total: f64 = t.iter().map(|&v| f64::from(v)).sum();
        let cell = |i: usize, j: usize| f64::from(t[i * y + j]) / total;
        let hxy: f64 = t.iter().map(|&v| h(f64::from(v) / total)).sum();
        let hx: f64 = (0..x).map(|i| h((0..y).map(|j| cell(i, j)).sum())).sum();
        let hy: f64 = (0..y).map(|j| h((0..x).map(|i| cell(i, j)).sum())).sum();
        want.extend([hx, hy, hxy, hxy - hx, hx + hy - hxy]);
    }
    want
}

#[test]
fn lopsided_joint_tables_match_float64() {
    for (count, x, y) in [
        (1, 1, 70_001),
        (2, 2, 70_000),
        (1, 70_000, 2),
        (3, 3, 100_000),
    ] {
        let mut r = rng((x * y) as u64);
        let tables: Vec<f32> = (0..count * x * y)
            .map(|i| {
                if i % 7 == 0 {
                    0.0
                } else {
                    r.random_range(0.0..50.0f32).floor()
                }
            })
            .collect();
        let want = joint_f64(&tables, x, y);
        for (path, b) in backends() {
            let got = b
                .joint_entropies(&tables, x * y, x, &InfoOptions::default())
                .unwrap();
            assert_close(&format!("{path} {count}×{x}×{y}"), &got, &want, 1e-5, 1e-5);
            assert!(
                got.chunks(5).all(|s| s[4] >= -1e-5),
                "{path}: I(X;Y) < 0: {got:?}"
            );
        }
    }
}

#[test]
fn split_rows_in_binding_chunks_match_float64() {
    // Five rows of 100 003 (and 100 004) columns, two rows per binding, each row cut into
    // segments (forced: the tuning splits few rows only where a device has more cores than
    // rows), so every chunk runs the phase chain.
    for cols in [100_003, 100_004] {
        let rows = 5;
        let mut r = rng(cols as u64 + 1);
        let x = normal(&mut r, rows * cols, 5.0);
        let q: Vec<f32> = reference::softmax(&normal(&mut r, rows * cols, 1.0), cols, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let targets: Vec<i32> = (0..rows).map(|_| r.random_range(0..cols as i32)).collect();
        let lp = reference::log_softmax(&x, cols, 1.0);
        let options = GpuOptions {
            max_binding_bytes: Some(2 * cols as u64 * 4 + 256),
            row_split: RowSplit::Always,
            ..Default::default()
        };
        for (cross_lane, gpu) in gpus_with(options) {
            let at = |what: &str| format!("{cross_lane:?} {cols} {what}");
            let sm = SoftmaxOptions::default();
            assert_close(
                &at("log_softmax"),
                &gpu.log_softmax(&x, cols, &sm).unwrap(),
                &lp,
                1e-5,
                1e-6,
            );
            let lse = reference::logsumexp(&x, cols, 1.0);
            assert_close(
                &at("logsumexp"),
                &gpu.logsumexp(&x, cols, &sm).unwrap(),
                &lse,
                1e-6,
                0.0,
            );

            // Soft targets: loss -Σ q lp per row, gradient p - q.
            let soft = CrossEntropyOptions::default().with_reduction(xent::LossReduction::None);
            let out = gpu
                .cross_entropy(&x, cols, Target::Probs(&q), None, &soft, Grad::New)
                .unwrap();
            let want: Vec<f64> = q
                .chunks(cols)
                .zip(lp.chunks(cols))
                .map(|(q, lp)| {
                    -q.iter()
                        .zip(lp)
                        .map(|(&q, l)| f64::from(q) * l)
                        .sum::<f64>()
                })
                .collect();
            assert_close(&at("soft loss"), &out.loss, &want, 1e-5, 0.0);
            let want: Vec<f64> = lp
                .iter()
                .zip(&q)
                .map(|(l, &q)| l.exp() - f64::from(q))
                .collect();
            assert_close(&at("soft grad"), &out.grad.unwrap(), &want, 1e-4, 1e-9);

            // Class indices, the gradient in place and in a buffer of its own: same bits.
            let t = Targets::from_i32(&gpu, &targets).unwrap();
            let opts = CrossEntropyOptions::default().with_label_smoothing(0.05);
            let logits = Tensor::from_slice(&gpu, &x, rows, cols).unwrap();
            let new = logits.cross_entropy(&t, None, &opts, Grad::New).unwrap();
            let in_place = logits
                .cross_entropy(&t, None, &opts, Grad::InPlace)
                .unwrap();
            let (g_new, g_in_place) = (
                new.grad.unwrap().to_vec().unwrap(),
                logits.to_vec().unwrap(),
            );
            assert!(
                g_new
                    .iter()
                    .zip(&g_in_place)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert_eq!(new.loss.to_vec().unwrap(), in_place.loss.to_vec().unwrap());
            let mut want_loss = 0.0;
            let mut want_grad = Vec::new();
            for (row, &y) in x.chunks(cols).zip(&targets) {
                let (l, g) = cross_entropy_f64(row, y as usize, 0.05, 0.0);
                want_loss += l / rows as f64;
                want_grad.extend(g.into_iter().map(|v| v / rows as f64));
            }
            assert_close(
                &at("loss"),
                &new.loss.to_vec().unwrap(),
                &[want_loss],
                1e-5,
                0.0,
            );
            assert_close(&at("grad"), &g_new, &want_grad, 1e-4, 1e-10);
        }
    }
}
