//! CPU twin of shaders/softmax.wgsl: the same stable math in f32 (simd.rs), rows in parallel
//! (rayon) where there are enough of them.

use rayon::prelude::*;

use crate::Result;
use crate::cpu::simd;
use crate::options::{Activation, SoftmaxKind, SoftmaxOptions, non_empty, rows_of};

/// `(m, d)` of one row at scale `s = 1/T`: `m = max x` (starting from -FLT_MAX, as the
/// shader), `d = Σ exp((x - m)·s)`, each term f32, summed in f32 lanes per block and f64
/// across blocks (simd.rs). A NaN reaches `d` through `exp`.
pub(super) fn row_stats(row: &[f32], s: f64) -> (f64, f64) {
    let m = simd::max(row);
    (f64::from(m), simd::exp_sum(row, m, s as f32, None))
}

/// Elements below which an op runs on the calling thread: rayon's hand-off costs more than
/// the work (about 10 µs; 64 Ki elements take about as long).
pub(super) const PAR_ELEMS: usize = 1 << 16;

/// `f(row, out row)` over the rows of `x` and `out` (rows of `cols`): in parallel, each task
/// at least [`PAR_ELEMS`] elements, or on this thread when there are fewer in all.
pub(super) fn each_row(
    x: &[f32],
    out: &mut [f32],
    cols: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) {
    if x.len() < 2 * PAR_ELEMS {
        x.chunks(cols)
            .zip(out.chunks_mut(cols))
            .for_each(|(r, o)| f(r, o));
    } else {
        x.par_chunks(cols)
            .zip(out.par_chunks_mut(cols))
            .with_min_len(PAR_ELEMS.div_ceil(cols))
            .for_each(|(r, o)| f(r, o));
    }
}

/// Row-wise softmax or log-softmax of `x / T` (rows of `cols`): per row its max, then the
/// terms e^((x - m)/T) written out while they are summed, then scaled (softmax) or
/// `(x - m)/T - log d` written (log-softmax).
pub fn softmax(
    x: &[f32],
    cols: usize,
    kind: SoftmaxKind,
    opts: &SoftmaxOptions,
) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(x.len(), cols)?;
    let s = 1.0 / opts.temperature;
    let mut out = vec![0.0f32; x.len()];
    each_row(x, &mut out, cols, |row, o| {
        let m = simd::max(row);
        match kind {
            SoftmaxKind::Softmax => {
                let d = simd::exp_sum(row, m, s, Some(o));
                simd::scale(o, (1.0 / d) as f32);
            }
            SoftmaxKind::LogSoftmax => {
                let d = simd::exp_sum(row, m, s, None);
                simd::shift(row, o, m, s, d.ln() as f32);
            }
        }
    });
    Ok(out)
}

/// Row-wise `logsumexp(x / T)`: one value per row.
pub fn logsumexp(x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    rows_of(x.len(), cols)?;
    let s = f64::from(1.0 / opts.temperature);
    let lse = |row: &[f32]| {
        let (m, d) = row_stats(row, s);
        (m * s + d.ln()) as f32
    };
    if x.len() < 2 * PAR_ELEMS {
        return Ok(x.chunks(cols).map(lse).collect());
    }
    Ok(x.par_chunks(cols)
        .with_min_len(PAR_ELEMS.div_ceil(cols))
        .map(lse)
        .collect())
}

/// Elementwise sigmoid, log-sigmoid or logit.
pub fn activation(x: &[f32], act: Activation) -> Result<Vec<f32>> {
    non_empty(x.len())?;
    let f = match act {
        Activation::Sigmoid => simd::sigmoid_into,
        Activation::LogSigmoid => simd::log_sigmoid_into,
        Activation::Logit => simd::logit_into,
    };
    let mut out = vec![0.0f32; x.len()];
    each_row(x, &mut out, PAR_ELEMS, f);
    Ok(out)
}
