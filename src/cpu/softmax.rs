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

/// `f(rows of x, their rows of out)` over blocks of whole rows — `x` in rows of `cols`, `out`
/// in rows of `out_cols` — in parallel, each block at least [`PAR_ELEMS`] elements, or all at
/// once on this thread when there are fewer in all.
pub(super) fn each_block(
    x: &[f32],
    out: &mut [f32],
    (cols, out_cols): (usize, usize),
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) {
    if x.len() < 2 * PAR_ELEMS {
        f(x, out);
    } else {
        let rows = PAR_ELEMS.div_ceil(cols);
        x.par_chunks(rows * cols)
            .zip(out.par_chunks_mut(rows * out_cols))
            .for_each(|(x, o)| f(x, o));
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
    let rows = rows_of(x.len(), cols)?;
    let s = 1.0 / opts.temperature;
    let log = kind == SoftmaxKind::LogSoftmax;
    let mut out = vec![0.0f32; x.len()];
    if one_long_row(rows, cols) {
        // One long row: its pieces in parallel.
        let (m, d) = long_row_stats(x, s, Some(&mut out));
        if log {
            let c = simd::ln_denominator(d) as f32;
            out.par_chunks_mut(PAR_ELEMS)
                .zip(x.par_chunks(PAR_ELEMS))
                .for_each(|(o, x)| {
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = (v - m) * s - c;
                    }
                });
        } else {
            let k = (1.0 / d) as f32;
            out.par_chunks_mut(PAR_ELEMS)
                .for_each(|o| o.iter_mut().for_each(|v| *v *= k));
        }
        return Ok(out);
    }
    each_block(x, &mut out, (cols, cols), |x, o| {
        simd::softmax_rows(x, o, cols, s, log);
    });
    Ok(out)
}

/// Whether a batch is one row long enough for [`long_row_stats`].
fn one_long_row(rows: usize, cols: usize) -> bool {
    rows == 1 && cols >= 2 * PAR_ELEMS
}

/// `(m, d)` of a row of at least 2·[`PAR_ELEMS`] elements at scale `s`, its pieces of
/// [`PAR_ELEMS`] in parallel (a batch of one long row would keep one thread: sampling from
/// a large vocabulary; more rows go in parallel as they are), each term e^((x - m)·s)
/// written into `out` when given; the pieces' sums added in order (the same bits on every
/// run, whatever the threads).
fn long_row_stats(row: &[f32], s: f32, out: Option<&mut [f32]>) -> (f32, f64) {
    let m = row
        .par_chunks(PAR_ELEMS)
        .map(simd::max)
        .reduce(|| f32::MIN, f32::max);
    let sums: Vec<f64> = match out {
        Some(o) => row
            .par_chunks(PAR_ELEMS)
            .zip(o.par_chunks_mut(PAR_ELEMS))
            .map(|(x, o)| simd::exp_sum(x, m, s, Some(o)))
            .collect(),
        None => row
            .par_chunks(PAR_ELEMS)
            .map(|x| simd::exp_sum(x, m, s, None))
            .collect(),
    };
    (m, sums.iter().sum())
}

/// Row-wise `logsumexp(x / T)`: one value per row.
pub fn logsumexp(x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    let rows = rows_of(x.len(), cols)?;
    let s = 1.0 / opts.temperature;
    if one_long_row(rows, cols) {
        // One long row: its pieces in parallel.
        let (m, d) = long_row_stats(x, s, None);
        return Ok(vec![m * s + simd::ln_denominator(d) as f32]);
    }
    let mut out = vec![0.0f32; rows];
    each_block(x, &mut out, (cols, 1), |x, o| {
        simd::logsumexp_rows(x, o, cols, s);
    });
    Ok(out)
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
    each_block(x, &mut out, (1, 1), f);
    Ok(out)
}
