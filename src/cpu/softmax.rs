//! CPU twin of shaders/softmax.wgsl: the same stable math, rows in parallel (rayon), sums in
//! f64.

use rayon::prelude::*;

use crate::Result;
use crate::options::{Activation, SoftmaxKind, SoftmaxOptions, non_empty, rows_of};

/// `(m, d)` of one row at scale `s = 1/T`: `m = max x` (starting from -FLT_MAX, as the
/// shader), `d = Σ exp((x - m)·s)` in f64. A NaN reaches `d` through `exp`.
pub(super) fn row_stats(row: &[f32], s: f64) -> (f64, f64) {
    let m = f64::from(row.iter().fold(f32::MIN, |m, &v| m.max(v)));
    let d = row
        .iter()
        .map(|&v| ((f64::from(v) - m) * s).exp())
        .sum::<f64>();
    (m, d)
}

/// Row-wise softmax or log-softmax of `x / T` (rows of `cols`).
pub fn softmax(
    x: &[f32],
    cols: usize,
    kind: SoftmaxKind,
    opts: &SoftmaxOptions,
) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(x.len(), cols)?;
    let s = 1.0 / f64::from(opts.temperature);
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .for_each(|(o, row)| {
            let (m, d) = row_stats(row, s);
            match kind {
                SoftmaxKind::Softmax => {
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = (((f64::from(v) - m) * s).exp() / d) as f32;
                    }
                }
                SoftmaxKind::LogSoftmax => {
                    let log_d = d.ln();
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = ((f64::from(v) - m) * s - log_d) as f32;
                    }
                }
            }
        });
    Ok(out)
}

/// Row-wise `logsumexp(x / T)`: one value per row.
pub fn logsumexp(x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(x.len(), cols)?;
    let s = 1.0 / f64::from(opts.temperature);
    Ok(x.par_chunks(cols)
        .map(|row| {
            let (m, d) = row_stats(row, s);
            (m * s + d.ln()) as f32
        })
        .collect())
}

/// Elementwise sigmoid, log-sigmoid or logit, computed in f64.
pub fn activation(x: &[f32], act: Activation) -> Result<Vec<f32>> {
    non_empty(x.len())?;
    let f: fn(f64) -> f64 = match act {
        Activation::Sigmoid => |v| {
            let e = (-v.abs()).exp();
            if v >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            }
        },
        Activation::LogSigmoid => |v| v.min(0.0) - (-v.abs()).exp().ln_1p(),
        Activation::Logit => |p| (p / (1.0 - p)).ln(),
    };
    Ok(x.par_iter().map(|&v| f(f64::from(v)) as f32).collect())
}
