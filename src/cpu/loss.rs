//! CPU twin of shaders/cross_entropy.wgsl and shaders/bce.wgsl: the same losses and
//! gradients (SPEC.md §2), rows in parallel (rayon), in f64.

use rayon::prelude::*;

use crate::cpu::softmax::{PAR_ELEMS, each_block, pieces, row_stats};
use crate::cpu::{as_f32, capped, simd};
use crate::options::{
    BceOptions, BceWeights, CrossEntropyOptions, Grad, Loss, LossReduction, Target,
    check_cross_entropy, check_len, check_targets, rows_of,
};
use crate::{Element, Error, Result};

/// Softmax cross-entropy of `x` (rows of `cols` logits) against class indices or
/// probability rows, with optional class weights; the gradient of the reduced loss when
/// `grad` asks for it ([`Grad::InPlace`] returns it like [`Grad::New`]: `x` is borrowed).
/// Same options, results and errors as [`crate::Tensor::cross_entropy`] and
/// [`crate::Tensor::cross_entropy_soft`]. The logits may be of any [`Element`] type, the
/// gradient then of the same (probability targets, class weights and the loss stay f32).
///
/// ```
/// use half::bf16;
/// use xent::{CrossEntropyOptions, Grad, Target};
/// let x: Vec<bf16> = [2.0f32, 0.5, -1.0].iter().map(|&v| bf16::from_f32(v)).collect();
/// let opts = CrossEntropyOptions::default();
/// let out = xent::cpu::cross_entropy(&x, 3, Target::I64(&[0]), None, &opts, Grad::New)?;
/// let g: Vec<bf16> = out.grad.unwrap();
/// assert!((out.loss[0] - 0.241_3).abs() < 1e-4 && g[0] < bf16::ZERO);
/// # Ok::<(), xent::Error>(())
/// ```
pub fn cross_entropy<E: Element>(
    x: &[E],
    cols: usize,
    target: Target<'_>,
    weight: Option<&[f32]>,
    opts: &CrossEntropyOptions,
    grad: Grad,
) -> Result<Loss<Vec<f32>, Vec<E>>> {
    check_cross_entropy(opts, matches!(target, Target::Probs(_)))?;
    let rows = rows_of(x.len(), cols)?;
    check_len("weight", weight.map(<[f32]>::len), cols)?;
    let w = |c: usize| weight.map_or(1.0, |w| f64::from(w[c]));
    let eps = f64::from(opts.label_smoothing);
    let k = cols as f64;
    let mean = opts.reduction == LossReduction::Mean;
    let mut g = E::zeros(if grad.wanted() { x.len() } else { 0 });
    let ignored = |i: usize| match target {
        Target::I32(t) => i64::from(t[i]) == opts.ignore_index,
        Target::I64(t) => t[i] == opts.ignore_index,
        Target::Probs(_) => false,
    };
    let (losses, den) = match target {
        Target::Probs(q) => {
            check_len("probability targets", Some(q.len()), x.len())?;
            let scale = if mean { 1.0 / rows as f64 } else { 1.0 };
            let losses = for_rows(x, cols, &mut g, |i, row, g| {
                let q = &q[i * cols..(i + 1) * cols];
                let (row, slope) = capped(row, opts.softcap);
                let (m, d) = row_stats(&row, 1.0);
                let log_d = d.ln();
                let wq: Vec<f64> = (0..cols)
                    .map(|c| w(c) * ((1.0 - eps) * f64::from(q[c]) + eps / k))
                    .collect();
                let s: f64 = wq.iter().sum();
                let mut loss = 0.0;
                for c in 0..cols {
                    let xm = f64::from(row[c]) - m;
                    loss -= wq[c] * (xm - log_d);
                    if let Some(g) = g.get_mut(c) {
                        *g = ((s * xm.exp() / d - wq[c]) * scale * slope(c)) as f32;
                    }
                }
                loss
            });
            (losses, rows as f64)
        }
        Target::I32(t) => {
            let t: Vec<i64> = t.iter().map(|&v| i64::from(v)).collect();
            class_rows(x, cols, &t, weight, opts, &mut g)?
        }
        Target::I64(t) => class_rows(x, cols, t, weight, opts, &mut g)?,
    };
    let mut out = finish(&losses, den, g, opts.reduction);
    (out.z_loss, out.entropy) = row_extras(x, cols, &ignored, opts);
    Ok(out)
}

/// The per-row extras the options ask for ([`CrossEntropyOptions::z_loss_output`],
/// [`CrossEntropyOptions::entropy_output`]) of the rows of `x`; 0 where `ignored`.
pub(crate) fn row_extras<E: Element>(
    x: &[E],
    cols: usize,
    ignored: &(dyn Fn(usize) -> bool + Sync),
    opts: &CrossEntropyOptions,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let per_row = |f: &(dyn Fn(f64, f64, &[f32]) -> f64 + Sync)| -> Vec<f32> {
        let pieces = each_block(x, &mut [] as &mut [f32], (cols, 0), |first, x, _| {
            x.chunks(cols)
                .enumerate()
                .map(|(r, row)| {
                    if ignored(first + r) {
                        return 0.0;
                    }
                    let (row, _) = capped(row, opts.softcap);
                    let (m, d) = row_stats(&row, 1.0);
                    f(m, d, &row) as f32
                })
                .collect::<Vec<f32>>()
        });
        pieces.concat()
    };
    let z = f64::from(opts.z_loss);
    let z_loss = opts.z_loss_output.then(|| {
        per_row(&|m, d, _| {
            let lse = m + d.ln();
            z * lse * lse
        })
    });
    // H = log d - Σ e^(x - m)·(x - m) / d; -inf logits add nothing.
    let entropy = opts.entropy_output.then(|| {
        per_row(&|m, d, row| {
            let s: f64 = row
                .iter()
                .map(|&v| f64::from(v) - m)
                .filter(|xm| xm.is_finite() || xm.is_nan())
                .map(|xm| xm.exp() * xm)
                .sum();
            d.ln() - s / d
        })
    });
    (z_loss, entropy)
}

/// Per-row losses (and gradients into `g`) for class-index targets, and the mean's
/// denominator `Σ w_y` over the rows not ignored.
fn class_rows<E: Element>(
    x: &[E],
    cols: usize,
    t: &[i64],
    weight: Option<&[f32]>,
    opts: &CrossEntropyOptions,
    g: &mut [E],
) -> Result<(Vec<f64>, f64)> {
    let rows = x.len() / cols;
    if t.len() != rows {
        return Err(Error::Shape(format!(
            "{} targets for {rows} rows of logits",
            t.len()
        )));
    }
    check_targets(t, opts.ignore_index, cols)?;
    let w = |c: usize| weight.map_or(1.0, |w| f64::from(w[c]));
    let (den, scale) = class_denominator(t, &w, opts);
    Ok((class_losses(x, cols, t, weight, opts, scale, g), den))
}

/// The mean's denominator `Σ w_y` over the targets not ignored, and the factor of the
/// gradient: 1 over it for `mean`, else 1.
pub(crate) fn class_denominator(
    t: &[i64],
    w: &(dyn Fn(usize) -> f64 + Sync),
    opts: &CrossEntropyOptions,
) -> (f64, f64) {
    let den: f64 = t
        .iter()
        .filter(|&&v| v != opts.ignore_index)
        .map(|&v| w(v as usize))
        .sum();
    let scale = if opts.reduction == LossReduction::Mean {
        1.0 / den
    } else {
        1.0
    };
    (den, scale)
}

/// Per-row losses of the rows of `x` against the checked class indices `t`, and their
/// gradients times `scale` into `g` (unless it is empty). Per row: its max, the terms
/// e^(x - m) written into the gradient row while they are summed (f32 terms, f64 total), then
/// the gradient made from them in place; the target's element, where the softmax's 1 - p may
/// cancel, is made again in f64.
pub(crate) fn class_losses<E: Element>(
    x: &[E],
    cols: usize,
    t: &[i64],
    weight: Option<&[f32]>,
    opts: &CrossEntropyOptions,
    scale: f64,
    g: &mut [E],
) -> Vec<f64> {
    let w = |c: usize| weight.map_or(1.0, |w| f64::from(w[c]));
    let ignore = opts.ignore_index;
    let eps = f64::from(opts.label_smoothing);
    let z = f64::from(opts.z_loss);
    let k = cols as f64;
    let w_sum: f64 = weight.map_or(k, |w| w.iter().map(|&v| f64::from(v)).sum());
    for_rows(x, cols, g, |i, row, g| {
        if t[i] == ignore {
            g.fill(0.0);
            return 0.0;
        }
        let y = t[i] as usize;
        let (row, slope) = capped(row, opts.softcap);
        let m = simd::max(&row);
        let d = simd::exp_sum(&row, m, 1.0, (!g.is_empty()).then_some(&mut *g));
        let m = f64::from(m);
        let log_d = d.ln();
        let lse = m + log_d;
        let b = (1.0 - eps) * w(y);
        let a = b + eps * w_sum / k + 2.0 * z * lse;
        if !g.is_empty() {
            let e_y = f64::from(g[y]);
            simd::ce_grad(g, (a / d * scale) as f32, (eps / k * scale) as f32, weight);
            g[y] = ((e_y / d * a - eps / k * w(y) - b) * scale) as f32;
            if opts.softcap.is_some() {
                for (c, g) in g.iter_mut().enumerate() {
                    *g = (f64::from(*g) * slope(c)) as f32;
                }
            }
        }
        // Every `lse - x_c` is taken as `log d - (x_c - m)`: lse itself rounds away log d
        // next to logits of 1e16, where the loss is still log K.
        let smooth = if eps > 0.0 {
            w_sum * log_d - simd::shifted_sum(&row, m as f32, weight)
        } else {
            0.0
        };
        b * (log_d - (f64::from(row[y]) - m)) + eps / k * smooth + z * lse * lse
    })
}

/// Binary cross-entropy with logits of `x` (rows of `cols`) against `target` (same length),
/// with optional per-column `pos_weight` and per-element `weight`; the gradient when `grad`
/// asks for it ([`Grad::InPlace`] is an error, as on the GPU).
/// Same options and results as [`crate::Tensor::bce_with_logits`]. The logits and targets
/// may be of any [`Element`] type (one for both), the gradient then of the same; weights and
/// losses are f32.
pub fn bce_with_logits<E: Element>(
    x: &[E],
    cols: usize,
    target: &[E],
    weights: BceWeights<'_>,
    opts: &BceOptions,
    grad: Grad,
) -> Result<Loss<Vec<f32>, Vec<E>>> {
    grad.refuse_in_place("binary cross-entropies")?;
    rows_of(x.len(), cols)?;
    check_len("target", Some(target.len()), x.len())?;
    check_len("pos_weight", weights.pos_weight.map(<[f32]>::len), cols)?;
    check_len("weight", weights.weight.map(<[f32]>::len), x.len())?;
    let n = x.len();
    let scale = if opts.reduction == LossReduction::Mean {
        1.0 / n as f64
    } else {
        1.0
    };
    let per_element = opts.reduction == LossReduction::None;
    let mut g = E::zeros(if grad.wanted() { n } else { 0 });
    let mut l = vec![0.0f32; if per_element { n } else { 0 }];
    // Whole rows per task (pos_weight is per column), at least PAR_ELEMS elements each;
    // without pos_weight a task's rows go through as one (no call per row).
    let rows_per = PAR_ELEMS.div_ceil(cols);
    let ones = vec![
        1.0f32;
        if weights.pos_weight.is_some() {
            0
        } else {
            rows_per * cols
        }
    ];
    let (pw, row_len) = match weights.pos_weight {
        Some(pw) => (pw, cols),
        None => (&ones[..], rows_per * cols),
    };
    // A task's rows, as f32: each row's losses into `l`, or into a row of scratch when only
    // their sum is kept.
    let bce_rows =
        |(x, t): (&[f32], &[f32]), (g, l): (&mut [f32], &mut [f32]), w: Option<&[f32]>| {
            let mut scratch = vec![
                0.0f32;
                if l.is_empty() {
                    row_len.min(x.len())
                } else {
                    0
                }
            ];
            x.chunks(row_len)
                .zip(t.chunks(row_len))
                .enumerate()
                .map(|(r, (x, t))| {
                    let row = r * row_len..r * row_len + x.len();
                    let pw = &pw[..x.len()];
                    let have = scratch.len();
                    let scratch = &mut scratch[..x.len().min(have)];
                    let w = w.map(|w| &w[row.clone()]);
                    let g = g.get_mut(row.clone()).unwrap_or_default();
                    let l = match l.get_mut(row) {
                        Some(l) => l,
                        None => scratch,
                    };
                    simd::bce_row((x, t), (pw, w), scale as f32, g, l);
                    simd::sum(l)
                })
                .sum::<f64>()
        };
    let task = |(i, (g, l)): (usize, (&mut [E], &mut [f32]))| {
        let at = i * rows_per * cols;
        let len = (rows_per * cols).min(n - at);
        let w = weights.weight.map(|w| &w[at..at + len]);
        let (x, t) = (&x[at..at + len], &target[at..at + len]);
        as_f32(x, g, |x, g| {
            as_f32(t, &mut [] as &mut [f32], |t, _| bce_rows((x, t), (g, l), w))
        })
    };
    let blocks = n.div_ceil(rows_per * cols);
    let (gs, ls) = (
        pieces(&mut g, rows_per * cols, blocks),
        pieces(&mut l, rows_per * cols, blocks),
    );
    let pieces = gs.into_iter().zip(ls).enumerate();
    let total: f64 = if n < 2 * PAR_ELEMS {
        pieces.map(task).sum()
    } else {
        pieces.collect::<Vec<_>>().into_par_iter().map(task).sum()
    };
    let loss = match opts.reduction {
        LossReduction::None => l,
        LossReduction::Sum => vec![total as f32],
        LossReduction::Mean => vec![(total / n as f64) as f32],
    };
    Ok(Loss::new(loss, grad.wanted().then_some(g)))
}

/// `f(row index, row, gradient row)` over the rows in parallel (as f32, whatever the
/// element type); the gradient row is empty when `g` is.
fn for_rows<E: Element>(
    x: &[E],
    cols: usize,
    g: &mut [E],
    f: impl Fn(usize, &[f32], &mut [f32]) -> f64 + Sync,
) -> Vec<f64> {
    let g_cols = if g.is_empty() { 0 } else { cols };
    let pieces = each_block(x, g, (cols, g_cols), |first, x, g| {
        x.chunks(cols)
            .enumerate()
            .map(|(r, row)| f(first + r, row, &mut g[r * g_cols..(r + 1) * g_cols]))
            .collect::<Vec<f64>>()
    });
    pieces.concat()
}

/// Applies the reduction to the per-sample losses (`den` divides the mean); `g` is the
/// gradient, already scaled, or empty when none was asked for.
pub(crate) fn finish<G>(
    losses: &[f64],
    den: f64,
    g: Vec<G>,
    reduction: LossReduction,
) -> Loss<Vec<f32>, Vec<G>> {
    let total: f64 = losses.iter().sum();
    let loss = match reduction {
        LossReduction::None => losses.iter().map(|&l| l as f32).collect(),
        LossReduction::Sum => vec![total as f32],
        LossReduction::Mean => vec![(total / den) as f32],
    };
    Loss::new(loss, (!g.is_empty()).then_some(g))
}
