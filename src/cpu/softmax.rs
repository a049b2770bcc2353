//! CPU twin of shaders/softmax.wgsl: the same stable math in f32 (simd.rs), rows in parallel
//! (rayon) where there are enough of them, rows of any [`Element`] type.

use rayon::prelude::*;

use crate::cpu::{as_f32, simd};
use crate::options::{Activation, SoftmaxKind, SoftmaxOptions, non_empty, rows_of};
use crate::{DType, Element, Result};

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

/// Elements of half-precision rows widened to f32 at a time (whole rows, or one row when
/// longer): 32 KiB of f32 in and out, in cache while the op reads them.
const TYPED_PIECE: usize = 1 << 13;

/// `f(first row, rows of x, their rows of out)` over pieces of whole rows, in order — `x`
/// in rows of `cols`, `out` in rows of `out_cols` (0: no row-shaped output) — in parallel
/// blocks of at least [`PAR_ELEMS`] elements, or all on this thread when there are fewer in
/// all. `f` sees f32: the slices themselves, or for a half type pieces of
/// [`TYPED_PIECE`] elements widened and rounded back through the thread's scratch.
pub(super) fn each_block<E: Element, O: Element, R: Send>(
    x: &[E],
    out: &mut [O],
    (cols, out_cols): (usize, usize),
    f: impl Fn(usize, &[f32], &mut [f32]) -> R + Sync + Send,
) -> Vec<R> {
    let piece = if E::DTYPE == DType::F32 && O::DTYPE == DType::F32 {
        x.len() / cols
    } else {
        (TYPED_PIECE / cols).max(1)
    };
    let block = |first: usize, x: &[E], out: &mut [O]| -> Vec<R> {
        let rows = x.len() / cols;
        (0..rows)
            .step_by(piece)
            .map(|r| {
                let k = piece.min(rows - r);
                let o = &mut out[r * out_cols..(r + k) * out_cols];
                as_f32(&x[r * cols..(r + k) * cols], o, |x, o| f(first + r, x, o))
            })
            .collect()
    };
    if x.len() < 2 * PAR_ELEMS {
        return block(0, x, out);
    }
    let rows = PAR_ELEMS.div_ceil(cols);
    let outs = pieces(out, rows * out_cols, x.len().div_ceil(rows * cols));
    let done: Vec<Vec<R>> = x
        .par_chunks(rows * cols)
        .zip(outs)
        .enumerate()
        .map(|(i, (x, o))| block(i * rows, x, o))
        .collect();
    done.into_iter().flatten().collect()
}

/// `v` in `count` pieces of `len` (the last may be shorter), or `count` empty pieces when `v`
/// is empty (an output not asked for).
pub(super) fn pieces<T>(v: &mut [T], len: usize, count: usize) -> Vec<&mut [T]> {
    if v.is_empty() {
        (0..count).map(|_| &mut [][..]).collect()
    } else {
        v.chunks_mut(len).collect()
    }
}

/// Row-wise softmax or log-softmax of `x / T` (rows of `cols`, of any [`Element`] type; the
/// result of the same type): per row its max, then the terms e^((x - m)/T) written out while
/// they are summed, then scaled (softmax) or `(x - m)/T - log d` written (log-softmax).
///
/// ```
/// use xent::{SoftmaxKind, SoftmaxOptions};
/// let p = xent::cpu::softmax(&[0.0f32, 0.0], 2, SoftmaxKind::Softmax, &SoftmaxOptions::default())?;
/// assert_eq!(p, [0.5, 0.5]);
/// # Ok::<(), xent::Error>(())
/// ```
pub fn softmax<E: Element>(
    x: &[E],
    cols: usize,
    kind: SoftmaxKind,
    opts: &SoftmaxOptions,
) -> Result<Vec<E>> {
    opts.validate()?;
    let rows = rows_of(x.len(), cols)?;
    let s = 1.0 / opts.temperature;
    let log = kind == SoftmaxKind::LogSoftmax;
    let mut out = E::zeros(x.len());
    if one_long_row(rows, cols) {
        // One long row: its pieces in parallel. f32 terms are written while they are summed,
        // then scaled; half ones are made again once the sum is known (rounded once).
        let kept = !log && E::DTYPE == DType::F32;
        let (m, d) = long_row_stats(x, s, kept.then_some(&mut out[..]));
        let (k, c) = ((1.0 / d) as f32, simd::ln_denominator(d) as f32);
        out.par_chunks_mut(PAR_ELEMS)
            .zip(x.par_chunks(PAR_ELEMS))
            .for_each(|(o, x)| {
                as_f32(x, o, |x, o| {
                    if log {
                        for (o, &v) in o.iter_mut().zip(x) {
                            *o = (v - m) * s - c;
                        }
                    } else {
                        if !kept {
                            simd::exp_sum(x, m, s, Some(&mut *o));
                        }
                        o.iter_mut().for_each(|v| *v *= k);
                    }
                });
            });
        return Ok(out);
    }
    each_block(x, &mut out, (cols, cols), |_, x, o| {
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
fn long_row_stats<E: Element>(row: &[E], s: f32, out: Option<&mut [E]>) -> (f32, f64) {
    let m = row
        .par_chunks(PAR_ELEMS)
        .map(|x| as_f32(x, &mut [] as &mut [f32], |x, _| simd::max(x)))
        .reduce(|| f32::MIN, f32::max);
    let sums: Vec<f64> = match out {
        Some(o) => row
            .par_chunks(PAR_ELEMS)
            .zip(o.par_chunks_mut(PAR_ELEMS))
            .map(|(x, o)| as_f32(x, o, |x, o| simd::exp_sum(x, m, s, Some(o))))
            .collect(),
        None => row
            .par_chunks(PAR_ELEMS)
            .map(|x| {
                as_f32(x, &mut [] as &mut [f32], |x, _| {
                    simd::exp_sum(x, m, s, None)
                })
            })
            .collect(),
    };
    (m, sums.iter().sum())
}

/// Row-wise `logsumexp(x / T)` of rows of any [`Element`] type: one f32 value per row.
pub fn logsumexp<E: Element>(x: &[E], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
    opts.validate()?;
    let rows = rows_of(x.len(), cols)?;
    let s = 1.0 / opts.temperature;
    if one_long_row(rows, cols) {
        // One long row: its pieces in parallel.
        let (m, d) = long_row_stats(x, s, None);
        return Ok(vec![m * s + simd::ln_denominator(d) as f32]);
    }
    let mut out = vec![0.0f32; rows];
    each_block(x, &mut out, (cols, 1), |_, x, o| {
        simd::logsumexp_rows(x, o, cols, s);
    });
    Ok(out)
}

/// Elementwise sigmoid, log-sigmoid or logit of any [`Element`] type; the result of the
/// same type.
pub fn activation<E: Element>(x: &[E], act: Activation) -> Result<Vec<E>> {
    non_empty(x.len())?;
    let f = match act {
        Activation::Sigmoid => simd::sigmoid_into,
        Activation::LogSigmoid => simd::log_sigmoid_into,
        Activation::Logit => simd::logit_into,
    };
    let mut out = E::zeros(x.len());
    each_block(x, &mut out, (1, 1), |_, x, o| f(x, o));
    Ok(out)
}
