//! CPU twin of shaders/info.wgsl: the information-theory ops (SPEC.md §3), rows in parallel
//! (rayon): entropy through the f32 kernels of simd.rs, the rest in f64.

use rayon::prelude::*;

use crate::cpu::softmax::{each_block, row_stats};
use crate::cpu::{as_f32, capped, simd};
use crate::options::{DivReduction, Divergence, Form, Grad, InfoOptions, Loss, check_len, rows_of};
use crate::{Element, Error, Result};

/// A row's probabilities and their natural logs, from `form` (logits at `1/t = s`).
fn side(row: &[f32], form: Form, s: f64) -> Vec<(f64, f64)> {
    match form {
        Form::Probs => row
            .iter()
            .map(|&v| (f64::from(v), f64::from(v).ln()))
            .collect(),
        Form::LogProbs => row
            .iter()
            .map(|&v| (f64::from(v).exp(), f64::from(v)))
            .collect(),
        Form::Logits => {
            let (m, d) = row_stats(row, s);
            let log_d = d.ln();
            row.iter()
                .map(|&v| {
                    let lp = (f64::from(v) - m) * s - log_d;
                    (lp.exp(), lp)
                })
                .collect()
        }
    }
}

/// `p·a`, 0 where `p = 0` (0·log 0 = 0; NaN in `p` stays).
fn weighted(p: f64, a: f64) -> f64 {
    if p == 0.0 { 0.0 } else { p * a }
}

/// Row-wise entropy `-Σ P log_b P` of rows of any [`Element`] type; one f32 value per row.
/// Same as [`crate::Tensor::entropy`].
pub fn entropy<E: Element>(p: &[E], cols: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(p.len(), cols)?;
    let s = 1.0 / f64::from(opts.temperature);
    let inv_ln_b = opts.inv_ln_base();
    let h = |row: &[f32]| {
        let (row, _) = capped(row, opts.softcap);
        let h = match opts.form {
            // H = log d - Σ e^u·u / d, u = (x - m)/T: one pass after the max.
            Form::Logits => {
                let m = simd::max(&row);
                let (d, t) = simd::exp_sums2(&row, m, s as f32);
                d.ln() - t / d
            }
            Form::Probs => simd::neg_xlogx_sum(&row, 1.0),
            Form::LogProbs => side(&row, opts.form, s)
                .iter()
                .map(|&(p, lp)| -weighted(p, lp))
                .sum(),
        };
        (h * inv_ln_b) as f32
    };
    let pieces = each_block(p, &mut [] as &mut [f32], (cols, 0), |_, p, _| {
        p.chunks(cols).map(h).collect::<Vec<f32>>()
    });
    Ok(pieces.concat())
}

/// Elementwise self-information `-log_b P` of rows of any [`Element`] type; the result of
/// the same type. Same as [`crate::Tensor::self_information`].
pub fn self_information<E: Element>(p: &[E], cols: usize, opts: &InfoOptions) -> Result<Vec<E>> {
    opts.validate()?;
    rows_of(p.len(), cols)?;
    let s = 1.0 / f64::from(opts.temperature);
    let inv_ln_b = opts.inv_ln_base();
    let mut out = E::zeros(p.len());
    each_block(p, &mut out, (cols, cols), |_, p, out| {
        for (row, out) in p.chunks(cols).zip(out.chunks_mut(cols)) {
            let side = side(&capped(row, opts.softcap).0, opts.form, s);
            for (o, (_, lp)) in out.iter_mut().zip(side) {
                *o = (-lp * inv_ln_b) as f32;
            }
        }
    });
    Ok(out)
}

/// A divergence between rows `P` and `Q` (both of one [`Element`] type), and when `grad`
/// asks for it the gradient w.r.t. Q's logits, of that type ([`Grad::InPlace`] is an error,
/// as on the GPU). Same as [`crate::Tensor::divergence`].
pub fn divergence<E: Element>(
    p: &[E],
    q: &[E],
    cols: usize,
    kind: Divergence,
    opts: &InfoOptions,
    grad: Grad,
) -> Result<Loss<Vec<f32>, Vec<E>>> {
    grad.refuse_in_place("divergences")?;
    opts.validate()?;
    let rows = rows_of(p.len(), cols)?;
    check_len("Q", Some(q.len()), p.len())?;
    if grad.wanted() && opts.form != Form::Logits {
        return Err(Error::InvalidArgument(
            "the gradient is w.r.t. Q's logits: give the inputs as logits".into(),
        ));
    }
    let s = 1.0 / f64::from(opts.temperature);
    let inv_ln_b = opts.inv_ln_base();
    let divisor = opts.divisor(rows, cols);
    let f = s * inv_ln_b / divisor.unwrap_or(1.0);
    // One row's divergence, its gradient written into `g` (empty when none is asked for).
    let row = |pr: &[f32], qr: &[f32], g: &mut [f32]| -> f64 {
        if let Some(v) = logit_row_fast(pr, qr, kind, opts, grad) {
            return v * inv_ln_b;
        }
        let a = side(&capped(pr, opts.softcap).0, opts.form, s);
        let (qr, slope) = capped(qr, opts.softcap);
        let b = side(&qr, opts.form, s);
        let mut value = 0.0;
        for (&(p, lp), &(q, lq)) in a.iter().zip(&b) {
            value += match kind {
                Divergence::CrossEntropy => -weighted(p, lq),
                Divergence::Kl => weighted(p, lp - lq),
                Divergence::Js => {
                    let lm = (0.5 * (p + q)).ln();
                    0.5 * (weighted(p, lp - lm) + weighted(q, lq - lm))
                }
            };
        }
        if g.is_empty() {
            return value * inv_ln_b;
        }
        if kind == Divergence::Js {
            let h: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(&(p, _), &(q, lq))| {
                    if q == 0.0 {
                        0.0
                    } else {
                        0.5 * (lq - (0.5 * (p + q)).ln())
                    }
                })
                .collect();
            let mean: f64 = b.iter().zip(&h).map(|(&(q, _), h)| q * h).sum();
            for (c, (g, (&(q, _), h))) in g.iter_mut().zip(b.iter().zip(&h)).enumerate() {
                *g = (q * (h - mean) * f * slope(c)) as f32;
            }
        } else {
            let sp: f64 = a.iter().map(|&(p, _)| p).sum();
            for (c, (g, (&(p, _), &(q, _)))) in g.iter_mut().zip(a.iter().zip(&b)).enumerate() {
                *g = ((q * sp - p) * f * slope(c)) as f32;
            }
        }
        value * inv_ln_b
    };
    // Rows in parallel whatever their number (a row's work is worth a hand-off), each pair
    // as f32.
    let pair = |pr: &[E], qr: &[E], g: &mut [E]| {
        as_f32(pr, g, |pr, g| {
            as_f32(qr, &mut [] as &mut [f32], |qr, _| row(pr, qr, g))
        })
    };
    let rows = p.par_chunks(cols).zip(q.par_chunks(cols));
    let mut g = E::zeros(if grad.wanted() { p.len() } else { 0 });
    let values: Vec<f64> = if g.is_empty() {
        rows.map(|(pr, qr)| pair(pr, qr, &mut [])).collect()
    } else {
        rows.zip(g.par_chunks_mut(cols))
            .map(|((pr, qr), g)| pair(pr, qr, g))
            .collect()
    };
    let loss = if opts.reduction == DivReduction::None {
        values.iter().map(|&v| v as f32).collect()
    } else {
        vec![(values.iter().sum::<f64>() / divisor.unwrap_or(1.0)) as f32]
    };
    Ok(Loss::new(loss, grad.wanted().then_some(g)))
}

/// KL(P‖Q), H(P, Q) or JS(P‖Q) in nats of two finite rows of logits, with no gradient
/// asked, in vectorised f32 passes after the rows' maxima (Q's sum, then one pass over both
/// rows; JS P's sum too; the terms as shaders/info.wgsl takes them: the same tolerances
/// hold); `None` for every other
/// case (probabilities, a gradient, a row with an infinity or NaN), which the f64 path takes.
fn logit_row_fast(
    pr: &[f32],
    qr: &[f32],
    kind: Divergence,
    opts: &InfoOptions,
    grad: Grad,
) -> Option<f64> {
    if opts.form != Form::Logits || grad.wanted() {
        return None;
    }
    let (x, _) = capped(pr, opts.softcap);
    let (y, _) = capped(qr, opts.softcap);
    if !(simd::all_finite(&x) && simd::all_finite(&y)) {
        return None;
    }
    let s = 1.0 / opts.temperature;
    let (mx, my) = (simd::max(&x), simd::max(&y));
    let ln_dq = simd::ln_denominator(simd::exp_sum(&y, my, s, None));
    if kind == Divergence::Js {
        let ln_dp = simd::ln_denominator(simd::exp_sum(&x, mx, s, None));
        return Some(simd::js_sum(
            &x,
            (mx, ln_dp as f32),
            &y,
            (my, ln_dq as f32),
            s,
        ));
    }
    let (d, a, b) = simd::exp_dots(&x, mx, &y, my, s);
    Some(match kind {
        Divergence::Kl => a / d - simd::ln_denominator(d) + ln_dq,
        _ => -b / d + ln_dq,
    })
}

/// Tables of at least this many cells take the vectorised f32 path (below, the f64 one is
/// as fast: 65 536 tables of 2 × 5 cells).
const JOINT_F32_CELLS: usize = 256;

/// Statistics of joint tables (`B` rows of `X × Y` cells): `B × 5` values `H(X), H(Y),
/// H(X,Y), H(Y|X), I(X;Y)`. Same as [`crate::Tensor::joint_entropies`].
pub fn joint_entropies(j: &[f32], cols: usize, x: usize, opts: &InfoOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(j.len(), cols)?;
    if opts.form != Form::Probs {
        return Err(Error::InvalidArgument(
            "joint tables hold counts or probabilities".into(),
        ));
    }
    if x == 0 || !cols.is_multiple_of(x) {
        return Err(Error::Shape(format!(
            "tables of {cols} cells are not X × Y with X = {x}"
        )));
    }
    let y = cols / x;
    let inv_ln_b = opts.inv_ln_base();
    let h = |p: f64| -weighted(p, p.ln());
    Ok(j.par_chunks(cols)
        .flat_map_iter(|t| {
            let (hx, hy, hxy) = if cols < JOINT_F32_CELLS {
                let total: f64 = t.iter().map(|&v| f64::from(v)).sum();
                let p = |i: usize, k: usize| f64::from(t[i * y + k]) / total;
                let hxy: f64 = t.iter().map(|&v| h(f64::from(v) / total)).sum();
                let hx: f64 = (0..x).map(|i| h((0..y).map(|k| p(i, k)).sum())).sum();
                let hy: f64 = (0..y).map(|k| h((0..x).map(|i| p(i, k)).sum())).sum();
                (hx, hy, hxy)
            } else {
                // Large tables: H(X, Y) through the vectorised f32 sum of -q·ln q, as entropy
                // from probabilities takes it, the sums in f32 lanes; the marginals' entropies
                // in f64, the columns summed a row at a time.
                let total = simd::sum(t);
                let hxy = simd::neg_xlogx_sum(t, (1.0 / total) as f32);
                let mut col = vec![0.0f64; y];
                let mut hx = 0.0;
                for row in t.chunks(y) {
                    hx += h(simd::sum(row) / total);
                    for (c, &v) in col.iter_mut().zip(row) {
                        *c += f64::from(v);
                    }
                }
                (hx, col.iter().map(|&c| h(c / total)).sum(), hxy)
            };
            [hx, hy, hxy, hxy - hx, hx + hy - hxy].map(|v| (v * inv_ln_b) as f32)
        })
        .collect())
}
