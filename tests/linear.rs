//! Linear cross-entropy (SPEC.md §2) on every path against a float64 reference of the whole
//! composition (logits, loss, the three gradients), finite differences of it, and the
//! chunking's promises: any chunk size gives the same result, the same bits on every run,
//! and the logits never exist whole.

mod common;

use common::{
    HALVES, assert_close, assert_half, assert_scaled, backends, finite_differences, gpu, gpus_with,
    normal, reference, rng, rounded,
};
use rand::RngExt;
use rand::rngs::StdRng;
use rayon::prelude::*;
use xent::{
    Backend, CeExtras, CrossEntropyOptions, Error, GpuOptions, Linear, LinearCrossEntropyOptions,
    LinearLoss, LinearOut, LossReduction, Target, Targets, Tensor, Workspace,
};

/// A problem: hidden states `n × hs`, weight `v × hs`, bias, targets, class weights.
struct Case {
    n: usize,
    hs: usize,
    v: usize,
    h: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    t: Vec<i64>,
    cw: Option<Vec<f32>>,
}

impl Case {
    /// Random inputs; every 4th target ignored (`ignore`), the others anywhere in [0, v),
    /// the first and last classes among them.
    fn new(
        rng: &mut StdRng,
        (n, hs, v): (usize, usize, usize),
        bias: bool,
        weighted: bool,
        ignore: i64,
    ) -> Self {
        let t = (0..n)
            .map(|r| match r % 4 {
                1 => ignore,
                2 => (v - 1) as i64,
                3 => 0,
                _ => rng.random_range(0..v as i64),
            })
            .collect();
        Self {
            n,
            hs,
            v,
            h: normal(rng, n * hs, 1.0),
            w: normal(rng, v * hs, 2.0 / (hs as f32).sqrt()),
            b: bias.then(|| normal(rng, v, 0.5)),
            t,
            cw: weighted.then(|| (0..v).map(|_| rng.random_range(0.25..2.0)).collect()),
        }
    }

    fn head(&self) -> Linear<'_, [f32]> {
        Linear {
            weight: &self.w,
            bias: self.b.as_deref(),
        }
    }

    /// The logits in f64, and each one's size `Σ|h·w| + |b|` (what its f32 rounding follows).
    fn logits(&self, h: &[f32], w: &[f32], b: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let (hs, v) = (self.hs, self.v);
        (0..self.n * v)
            .into_par_iter()
            .map(|i| {
                let (r, c) = (i / v, i % v);
                let bias = b.map_or(0.0, |b| f64::from(b[c]));
                let terms = (0..hs).map(|k| f64::from(h[r * hs + k]) * f64::from(w[c * hs + k]));
                let size = bias.abs() + terms.clone().map(f64::abs).sum::<f64>();
                (bias + terms.sum::<f64>(), size)
            })
            .unzip()
    }

    /// The reduced loss of these inputs in f64.
    fn loss64(&self, h: &[f32], w: &[f32], b: Option<&[f32]>, o: &CrossEntropyOptions) -> f64 {
        let (x, _) = self.logits(h, w, b);
        let (losses, den, _) = reference::cross_entropy(&x, self.v, &self.t, self.cw.as_deref(), o);
        let total: f64 = losses.iter().sum();
        match o.reduction {
            LossReduction::Mean => total / den,
            _ => total,
        }
    }
}

/// The size of the terms each element of the gradient of the sum w.r.t. the logits is made
/// of, before they cancel: `|(1-ε)·w_y|·(p + [c = y]) + ε/K·(W·p + w_c) + |2z·lse|·p`, times
/// the softcap's slope (SPEC.md §2). Its f32 error follows this, not its value.
fn grad_size(c: &Case, x: &[f64], o: &CrossEntropyOptions) -> Vec<f64> {
    let v = c.v;
    let (lp, lse, slope) = reference::read_logits(x, v, o.softcap);
    let wc = |k: usize| c.cw.as_ref().map_or(1.0, |w| f64::from(w[k]));
    let w_sum: f64 = (0..v).map(wc).sum();
    let (eps, z) = (f64::from(o.label_smoothing), f64::from(o.z_loss));
    let mut size = vec![0.0; x.len()];
    for (r, &y) in c.t.iter().enumerate() {
        if y == o.ignore_index {
            continue;
        }
        let y = y as usize;
        for k in 0..v {
            let p = lp[r * v + k].exp();
            let hot = if k == y { 1.0 } else { 0.0 };
            let terms = (1.0 - eps) * wc(y) * (p + hot)
                + eps / v as f64 * (w_sum * p + wc(k))
                + (2.0 * z * lse[r]).abs() * p;
            size[r * v + k] = terms * slope[r * v + k];
        }
    }
    size
}

/// The float64 reference: loss (reduced or per row), `∂L/∂h`, `∂L/∂W`, `∂L/∂b`, and the size
/// of the terms each gradient element sums (`Σ|G|·|W|`, `Σ|G|·|h|`, `Σ|G|`), and each loss's.
struct Want {
    loss: Vec<f64>,
    loss_size: Vec<f64>,
    dh: (Vec<f64>, Vec<f64>),
    dw: (Vec<f64>, Vec<f64>),
    db: (Vec<f64>, Vec<f64>),
    z_loss: Vec<f64>,
    entropy: Vec<f64>,
}

fn want(c: &Case, o: &CrossEntropyOptions) -> Want {
    let (n, hs, v) = (c.n, c.hs, c.v);
    let (x, size) = c.logits(&c.h, &c.w, c.b.as_deref());
    let (losses, den, g) = reference::cross_entropy(&x, v, &c.t, c.cw.as_deref(), o);
    let scale = if o.reduction == LossReduction::Mean {
        1.0 / den
    } else {
        1.0
    };
    let g: Vec<f64> = g.iter().map(|g| g * scale).collect();
    let g_size: Vec<f64> = grad_size(c, &x, o).iter().map(|s| s * scale).collect();
    // A row's loss moves with its largest logit error (the weight of its terms ≤ 2 + z·lse).
    let row_size: Vec<f64> = size
        .chunks(v)
        .map(|r| r.iter().fold(1.0f64, |m, &s| m.max(s)))
        .collect();
    let weight_max =
        c.cw.as_ref()
            .map_or(1.0, |w| w.iter().fold(0.0f32, |m, &x| m.max(x)).into());
    let (loss, loss_size) = match o.reduction {
        LossReduction::None => (
            losses.clone(),
            row_size.iter().map(|s| s * weight_max * 4.0).collect(),
        ),
        r => {
            let total: f64 = losses.iter().sum();
            let s: f64 = row_size.iter().sum::<f64>() * weight_max * 4.0;
            if r == LossReduction::Mean {
                (vec![total / den], vec![s / den])
            } else {
                (vec![total], vec![s])
            }
        }
    };
    // Each gradient element, with the size of its terms: Σ over the classes for ∂L/∂h, over
    // the rows for ∂L/∂W and ∂L/∂b.
    let at = |i: usize| (g[i], g_size[i]);
    let sum = |terms: &mut dyn Iterator<Item = ((f64, f64), f64)>| {
        terms.fold((0.0, 0.0), |(s, z), ((gv, gs), m)| {
            (s + gv * m, z + gs * m.abs())
        })
    };
    let dh: (Vec<f64>, Vec<f64>) = (0..n * hs)
        .into_par_iter()
        .map(|i| {
            let (r, k) = (i / hs, i % hs);
            sum(&mut (0..v).map(|cl| (at(r * v + cl), f64::from(c.w[cl * hs + k]))))
        })
        .unzip();
    let dw: (Vec<f64>, Vec<f64>) = (0..v * hs)
        .into_par_iter()
        .map(|i| {
            let (cl, k) = (i / hs, i % hs);
            sum(&mut (0..n).map(|r| (at(r * v + cl), f64::from(c.h[r * hs + k]))))
        })
        .unzip();
    let db: (Vec<f64>, Vec<f64>) = (0..v)
        .into_par_iter()
        .map(|cl| sum(&mut (0..n).map(|r| (at(r * v + cl), 1.0))))
        .unzip();
    let (lp, lse, _) = reference::read_logits(&x, v, o.softcap);
    let ignored = |r: usize| c.t[r] == o.ignore_index;
    let z_loss = (0..n)
        .map(|r| {
            if ignored(r) {
                0.0
            } else {
                f64::from(o.z_loss) * lse[r] * lse[r]
            }
        })
        .collect();
    let entropy = (0..n)
        .map(|r| {
            if ignored(r) {
                0.0
            } else {
                -lp[r * v..(r + 1) * v]
                    .iter()
                    .map(|l| l.exp() * l)
                    .sum::<f64>()
            }
        })
        .collect();
    Want {
        loss,
        loss_size,
        dh,
        dw,
        db,
        z_loss,
        entropy,
    }
}

/// [`check`] of the loss, ∂L/∂b and the extras only.
#[track_caller]
fn check_f32_parts(what: &str, got: &LinearLoss<Vec<f32>>, want: &Want) {
    check_with(what, got, want, false);
}

/// Compares every result with the reference. Losses to 1e-5 of their size (the logits' f32
/// rounding), gradients to 1e-5 of the terms each element sums plus f32 accumulation over
/// up to 50 257 terms (1e-4).
#[track_caller]
fn check(what: &str, got: &LinearLoss<Vec<f32>>, want: &Want) {
    check_with(what, got, want, true);
}

/// [`check`], of ∂L/∂h and ∂L/∂W too when `inputs_grads`.
#[track_caller]
fn check_with(what: &str, got: &LinearLoss<Vec<f32>>, want: &Want, inputs_grads: bool) {
    let scaled = |name: &str, got: &Option<Vec<f32>>, (want, size): &(Vec<f64>, Vec<f64>)| {
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {name} asked for"));
        let size: Vec<f64> = size.iter().map(|s| s.max(1e-30)).collect();
        assert_scaled(&format!("{what} {name}"), got, want, &size, 1e-4);
    };
    let loss_size = (want.loss.clone(), want.loss_size.clone());
    scaled("loss", &Some(got.loss.clone()), &loss_size);
    if inputs_grads {
        scaled("∂L/∂h", &got.grad_input, &want.dh);
        scaled("∂L/∂W", &got.grad_weight, &want.dw);
    }
    scaled("∂L/∂b", &got.grad_bias, &want.db);
    if let Some(z) = &got.z_loss {
        assert_close(&format!("{what} z-loss"), z, &want.z_loss, 1e-4, 1e-4);
    }
    if let Some(e) = &got.entropy {
        assert_close(&format!("{what} entropy"), e, &want.entropy, 1e-4, 1e-4);
    }
}

/// The cross-entropy options the shapes take in turn: every option alone and together.
fn options(i: usize) -> CrossEntropyOptions {
    let base = CrossEntropyOptions::default();
    let all = [
        base,
        base.with_reduction(LossReduction::Sum),
        base.with_reduction(LossReduction::None)
            .with_z_loss_output()
            .with_entropy_output(),
        base.with_label_smoothing(0.1),
        base.with_z_loss(1e-3).with_z_loss_output(),
        base.with_softcap(5.0),
        base.with_ignore_index(3),
        base.with_label_smoothing(0.2)
            .with_z_loss(1e-2)
            .with_softcap(3.0)
            .with_reduction(LossReduction::Sum),
    ];
    all[i % all.len()]
}

#[test]
fn matches_float64_at_awkward_shapes_on_every_path() {
    let mut rng = rng(11);
    let mut i = 0;
    for n in [1, 3, 17, 64, 257] {
        for hs in [1, 7, 64] {
            for v in [2, 1000, 50_257] {
                i += 1;
                let o = options(i);
                let c = Case::new(&mut rng, (n, hs, v), i % 2 == 0, i % 3 == 0, o.ignore_index);
                let want = want(&c, &o);
                // Chunks that divide the rows and that do not, targets on their boundaries.
                let chunk = [None, Some(1), Some(7), Some(16), Some(n)][i % 5];
                let opts = LinearCrossEntropyOptions {
                    loss: o,
                    chunk_rows: chunk,
                    ..LinearCrossEntropyOptions::default().with_grads()
                };
                for (name, b) in backends() {
                    let t = Target::I64(&c.t);
                    let got = b
                        .linear_cross_entropy(&c.h, hs, c.head(), t, c.cw.as_deref(), &opts)
                        .unwrap_or_else(|e| panic!("{name} {n}×{hs}×{v}: {e}"));
                    check(
                        &format!("{name} {n}×{hs}×{v} {o:?} chunk {chunk:?}"),
                        &got,
                        &want,
                    );
                }
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = rng(12);
    let o = CrossEntropyOptions::default()
        .with_label_smoothing(0.1)
        .with_z_loss(0.01)
        .with_softcap(4.0);
    let c = Case::new(&mut rng, (5, 3, 7), true, true, -100);
    let opts = LinearCrossEntropyOptions::default()
        .with_loss(o)
        .with_grads()
        .with_chunk_rows(2);
    let b = c.b.clone().expect("a bias");
    let fd_h = finite_differences(&c.h, |h| c.loss64(h, &c.w, Some(&b), &o));
    let fd_w = finite_differences(&c.w, |w| c.loss64(&c.h, w, Some(&b), &o));
    let fd_b = finite_differences(&b, |b| c.loss64(&c.h, &c.w, Some(b), &o));
    for (name, be) in backends() {
        let got = be
            .linear_cross_entropy(&c.h, 3, c.head(), Target::I64(&c.t), c.cw.as_deref(), &opts)
            .unwrap();
        assert_close(
            &format!("{name} ∂L/∂h"),
            got.grad_input.as_ref().unwrap(),
            &fd_h,
            1e-3,
            1e-4,
        );
        assert_close(
            &format!("{name} ∂L/∂W"),
            got.grad_weight.as_ref().unwrap(),
            &fd_w,
            1e-3,
            1e-4,
        );
        assert_close(
            &format!("{name} ∂L/∂b"),
            got.grad_bias.as_ref().unwrap(),
            &fd_b,
            1e-3,
            1e-4,
        );
    }
}

#[test]
fn any_chunk_size_gives_the_same_result_and_runs_are_bit_identical() {
    let mut rng = rng(13);
    let c = Case::new(&mut rng, (100, 33, 1003), true, true, -100);
    let o = CrossEntropyOptions::default().with_label_smoothing(0.05);
    let want = want(&c, &o);
    for (name, b) in backends() {
        let run = |chunk| {
            let opts = LinearCrossEntropyOptions::default()
                .with_loss(o)
                .with_grads()
                .with_chunk_rows(chunk);
            b.linear_cross_entropy(
                &c.h,
                33,
                c.head(),
                Target::I64(&c.t),
                c.cw.as_deref(),
                &opts,
            )
            .unwrap()
        };
        let first = run(9);
        assert_eq!(first, run(9), "{name}: two runs differ");
        for chunk in [1, 50, 100, 1000] {
            check(&format!("{name} chunk {chunk}"), &run(chunk), &want);
        }
    }
}

#[test]
fn ignored_rows_get_zero_gradient_rows_and_an_all_ignored_mean_is_nan() {
    let mut rng = rng(14);
    let mut c = Case::new(&mut rng, (9, 5, 40), false, false, -100);
    c.t = vec![-100; 9];
    c.t[4] = 7;
    let opts = LinearCrossEntropyOptions::default()
        .with_grads()
        .with_chunk_rows(4);
    for (name, b) in backends() {
        let got = b
            .linear_cross_entropy(&c.h, 5, c.head(), Target::I64(&c.t), None, &opts)
            .unwrap();
        let dh = got.grad_input.unwrap();
        for (r, row) in dh.chunks(5).enumerate() {
            assert_eq!(
                row.iter().all(|&g| g == 0.0),
                r != 4,
                "{name} row {r}: {row:?}"
            );
        }
        let all = vec![-100i64; 9];
        let nan = b
            .linear_cross_entropy(&c.h, 5, c.head(), Target::I64(&all), None, &opts)
            .unwrap();
        assert!(
            nan.loss[0].is_nan(),
            "{name}: mean over no rows is {}",
            nan.loss[0]
        );
    }
}

#[test]
fn products_split_to_fit_a_small_binding() {
    // 64 KiB bindings: the weight (1000 × 64 f32, 256 KiB) and the logits' chunks go in
    // pieces of rows and columns.
    let mut rng = rng(15);
    let c = Case::new(&mut rng, (70, 64, 1000), true, false, -100);
    let o = CrossEntropyOptions::default();
    let want = want(&c, &o);
    let opts = LinearCrossEntropyOptions::default().with_grads();
    for (lane, g) in gpus_with(GpuOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    }) {
        let got = g
            .linear_cross_entropy(&c.h, 64, c.head(), Target::I64(&c.t), None, &opts)
            .unwrap();
        check(&format!("{lane:?} 64 KiB bindings"), &got, &want);
    }
}

#[test]
fn bad_targets_are_errors_and_a_recorded_batch_writes_nothing() {
    let mut rng = rng(16);
    let mut c = Case::new(&mut rng, (6, 4, 10), true, false, -100);
    c.t[3] = 10;
    let opts = LinearCrossEntropyOptions::default()
        .with_grads()
        .with_chunk_rows(2);
    for (name, b) in backends() {
        match b.linear_cross_entropy(&c.h, 4, c.head(), Target::I64(&c.t), None, &opts) {
            Err(Error::Target {
                row: 3,
                value: 10,
                classes: 10,
                ..
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    let Some(gpu) = gpu() else { return };
    let h = Tensor::from_slice(&gpu, &c.h, 6, 4).unwrap();
    let w = Tensor::from_slice(&gpu, &c.w, 10, 4).unwrap();
    let t = Targets::from_i64(&gpu, &c.t).unwrap();
    let nan = |r, cols| Tensor::from_slice(&gpu, &vec![f32::NAN; r * cols], r, cols).unwrap();
    let (loss, dh, dw, db) = (nan(1, 1), nan(6, 4), nan(10, 4), nan(1, 10));
    let out = LinearOut {
        loss: &loss,
        grad_input: Some(&dh),
        grad_weight: Some(&dw),
        grad_bias: Some(&db),
        extras: CeExtras::default(),
    };
    let mut ws = Workspace::new(&gpu);
    let mut enc = gpu.encoder();
    let head = Linear {
        weight: &w,
        bias: None,
    };
    h.record_linear_cross_entropy(&mut ws, &mut enc, head, &t, None, &opts, out)
        .unwrap();
    gpu.queue().submit([enc.finish()]);
    assert!(matches!(
        ws.check_targets(),
        Err(Error::Target { row: 3, .. })
    ));
    for (what, t) in [
        ("loss", &loss),
        ("∂L/∂h", &dh),
        ("∂L/∂W", &dw),
        ("∂L/∂b", &db),
    ] {
        assert!(
            t.to_vec().unwrap().iter().all(|v| v.is_nan()),
            "{what} was written"
        );
    }
}

#[test]
fn bad_arguments_are_errors() {
    let mut rng = rng(17);
    let c = Case::new(&mut rng, (4, 3, 5), false, false, -100);
    let t = Target::I64(&c.t);
    let ok = LinearCrossEntropyOptions::default();
    for (name, b) in backends() {
        let run = |h: &[f32], hs, head, t, opts: &LinearCrossEntropyOptions| {
            b.linear_cross_entropy(h, hs, head, t, None, opts)
        };
        let short_w = Linear {
            weight: &c.w[..14],
            bias: None,
        };
        let short_b = Linear {
            weight: &c.w[..],
            bias: Some(&c.w[..4]),
        };
        let cases: [(&str, xent::Result<LinearLoss<Vec<f32>>>); 6] = [
            ("weight not whole rows", run(&c.h, 3, short_w, t, &ok)),
            ("bias of 4 for 5 classes", run(&c.h, 3, short_b, t, &ok)),
            (
                "3 targets for 4 rows",
                run(&c.h, 3, c.head(), Target::I64(&c.t[..3]), &ok),
            ),
            (
                "probability targets",
                run(&c.h, 3, c.head(), Target::Probs(&c.h), &ok),
            ),
            (
                "chunks of 0 rows",
                run(
                    &c.h,
                    3,
                    c.head(),
                    t,
                    &LinearCrossEntropyOptions {
                        chunk_rows: Some(0),
                        ..ok
                    },
                ),
            ),
            (
                "smoothing 1",
                run(
                    &c.h,
                    3,
                    c.head(),
                    t,
                    &ok.with_loss(CrossEntropyOptions::default().with_label_smoothing(1.0)),
                ),
            ),
        ];
        for (what, r) in cases {
            assert!(
                matches!(r, Err(Error::Shape(_) | Error::InvalidArgument(_))),
                "{name}, {what}: {r:?}"
            );
        }
    }
    let Some(gpu) = gpu() else { return };
    let h = Tensor::from_slice(&gpu, &c.h, 4, 3).unwrap();
    let w = Tensor::from_slice(&gpu, &c.w, 5, 3).unwrap();
    let targets = Targets::from_i64(&gpu, &c.t).unwrap();
    let loss = Tensor::zeros(&gpu, 1, 1).unwrap();
    let out = LinearOut {
        loss: &loss,
        grad_input: None,
        grad_weight: None,
        grad_bias: None,
        extras: CeExtras::default(),
    };
    let mut ws = Workspace::new(&gpu);
    let mut enc = gpu.encoder();
    let head = Linear {
        weight: &w,
        bias: None,
    };
    let asks = ok.with_grads();
    let r = h.record_linear_cross_entropy(&mut ws, &mut enc, head, &targets, None, &asks, out);
    assert!(
        matches!(r, Err(Error::InvalidArgument(_))),
        "gradients asked for without tensors: {r:?}"
    );
    // The weight of another type than the hidden states, a bf16 bias: errors.
    let bits: Vec<half::bf16> = c.w.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let w16 = Tensor::from_half(&gpu, &bits, 5, 3).unwrap();
    let b16 = Tensor::from_half(&gpu, &bits[..5], 1, 5).unwrap();
    let mixed = [
        Linear {
            weight: &w16,
            bias: None,
        },
        Linear {
            weight: &w,
            bias: Some(&b16),
        },
    ];
    for head in mixed {
        let r = h.linear_cross_entropy(head, &targets, None, &ok);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    let wt = Tensor::from_slice(&gpu, &c.w, 3, 5).unwrap();
    let r = h.linear_cross_entropy(
        Linear {
            weight: &wt,
            bias: None,
        },
        &targets,
        None,
        &ok,
    );
    assert!(
        matches!(r, Err(Error::Shape(_))),
        "a 3 × 5 weight for H = 3: {r:?}"
    );
}

#[test]
fn the_logits_never_exist_whole() {
    // N = 16 384, H = 512, V = 32 000: the full logits are 2.1 GB. Recorded, not run (lavapipe
    // would take minutes): what xent allocates is all made while recording. A context of its
    // own, so that no other test's buffers are counted.
    let Some((_, gpu)) = gpus_with(GpuOptions::default()).into_iter().next() else {
        return;
    };
    let (n, hs, v) = (16_384, 512, 32_000);
    let h = Tensor::zeros(&gpu, n, hs).unwrap();
    let w = Tensor::zeros(&gpu, v, hs).unwrap();
    let t = Targets::from_i32(&gpu, &vec![0; n]).unwrap();
    let (loss, dh, dw, db) = (
        Tensor::zeros(&gpu, 1, 1).unwrap(),
        Tensor::zeros(&gpu, n, hs).unwrap(),
        Tensor::zeros(&gpu, v, hs).unwrap(),
        Tensor::zeros(&gpu, 1, v).unwrap(),
    );
    let out = LinearOut {
        loss: &loss,
        grad_input: Some(&dh),
        grad_weight: Some(&dw),
        grad_bias: Some(&db),
        extras: CeExtras::default(),
    };
    let opts = LinearCrossEntropyOptions::default().with_grads();
    let before = gpu.stats();
    let mut ws = Workspace::new(&gpu);
    let mut enc = gpu.encoder();
    let head = Linear {
        weight: &w,
        bias: None,
    };
    h.record_linear_cross_entropy(&mut ws, &mut enc, head, &t, None, &opts, out)
        .unwrap();
    let extra = gpu.stats().bytes_allocated - before.bytes_allocated;
    let logits = (n * v * 4) as u64;
    eprintln!("beyond the inputs and gradients: {extra} bytes, the logits {logits}");
    assert!(
        extra < logits / 8,
        "{extra} bytes allocated, the logits are {logits}"
    );
    // A second recording with the same workspace allocates nothing.
    let before = gpu.stats();
    let out = LinearOut {
        grad_bias: None,
        ..out
    };
    let opts = LinearCrossEntropyOptions {
        grad_bias: false,
        ..opts
    };
    h.record_linear_cross_entropy(&mut ws, &mut enc, head, &t, None, &opts, out)
        .unwrap();
    assert_eq!(gpu.stats().buffers_created, before.buffers_created);
    drop(enc);
}

#[test]
fn recorded_again_with_a_warm_workspace_it_creates_nothing() {
    let Some((_, gpu)) = gpus_with(GpuOptions::default()).into_iter().next() else {
        return;
    };
    let mut rng = rng(18);
    let c = Case::new(&mut rng, (20, 8, 300), true, true, -100);
    let o = CrossEntropyOptions::default().with_reduction(LossReduction::None);
    let want = want(&c, &o);
    let h = Tensor::from_slice(&gpu, &c.h, 20, 8).unwrap();
    let w = Tensor::from_slice(&gpu, &c.w, 300, 8).unwrap();
    let b = Tensor::from_slice(&gpu, c.b.as_ref().unwrap(), 1, 300).unwrap();
    let cw = Tensor::from_slice(&gpu, c.cw.as_ref().unwrap(), 1, 300).unwrap();
    let t = Targets::from_i64(&gpu, &c.t).unwrap();
    let (loss, dh, dw, db) = (
        Tensor::zeros(&gpu, 20, 1).unwrap(),
        Tensor::zeros(&gpu, 20, 8).unwrap(),
        Tensor::zeros(&gpu, 300, 8).unwrap(),
        Tensor::zeros(&gpu, 300, 1).unwrap(),
    );
    let out_of = |ws: &mut Workspace| {
        let opts = LinearCrossEntropyOptions::default()
            .with_loss(o)
            .with_chunk_rows(6);
        let out = LinearOut {
            loss: &loss,
            grad_input: Some(&dh),
            grad_weight: Some(&dw),
            grad_bias: Some(&db),
            extras: CeExtras::default(),
        };
        let mut enc = gpu.encoder();
        let head = Linear {
            weight: &w,
            bias: Some(&b),
        };
        h.record_linear_cross_entropy(ws, &mut enc, head, &t, Some(&cw), &opts, out)
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        ws.check_targets().unwrap();
        let read = |t: &Tensor| Some(t.to_vec().unwrap());
        LinearLoss {
            loss: loss.to_vec().unwrap(),
            grad_input: read(&dh),
            grad_weight: read(&dw),
            grad_bias: read(&db),
            z_loss: None,
            entropy: None,
        }
    };
    let mut ws = Workspace::new(&gpu);
    let first = out_of(&mut ws);
    check("recorded", &first, &want);
    let before = gpu.stats();
    let second = out_of(&mut ws);
    let after = gpu.stats();
    assert_eq!(first, second);
    assert_eq!(after.buffers_created, before.buffers_created);
    assert_eq!(after.bind_groups_created, before.bind_groups_created);
}

#[test]
fn half_precision_inputs_match_float64_of_the_rounded_inputs() {
    // The hidden states and weight in f16 or bf16 (their gradients too; the bias, class
    // weights, loss, ∂L/∂b and extras f32), against float64 on the same rounded inputs.
    let mut rng = rng(19);
    let shapes = [
        (17, 7, 1000, Some(5)),
        (5, 64, 50_257, None),
        (64, 33, 301, Some(16)),
    ];
    for dtype in HALVES {
        for (i, &(n, hs, v, chunk)) in shapes.iter().enumerate() {
            let o = options(i + 2);
            let mut c = Case::new(&mut rng, (n, hs, v), true, i % 2 == 0, o.ignore_index);
            c.h = rounded(&c.h, dtype).0;
            c.w = rounded(&c.w, dtype).0;
            let want = want(&c, &o);
            let opts = LinearCrossEntropyOptions {
                loss: o,
                chunk_rows: chunk,
                ..LinearCrossEntropyOptions::default().with_grads()
            };
            for (name, b) in backends() {
                let what = format!("{name} {dtype} {n}×{hs}×{v}");
                let t = Target::I64(&c.t);
                let got = b
                    .typed(dtype)
                    .linear_cross_entropy(&c.h, hs, c.head(), t, c.cw.as_deref(), &opts)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                check_f32_parts(&what, &got, &want);
                let half =
                    |name: &str, got: &Option<Vec<f32>>, (w, size): &(Vec<f64>, Vec<f64>)| {
                        let atol = 1e-4 * size.iter().fold(0.0f64, |m, &s| m.max(s));
                        let got = got.as_ref().unwrap_or_else(|| panic!("{what}: {name}"));
                        assert_half(&format!("{what} {name}"), got, w, dtype, atol);
                    };
                half("∂L/∂h", &got.grad_input, &want.dh);
                half("∂L/∂W", &got.grad_weight, &want.dw);
            }
        }
    }
}
