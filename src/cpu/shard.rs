//! CPU twin of cross-entropy's shard kernels (shaders/cross_entropy.wgsl): a vocabulary
//! split across devices (SPEC.md §2), rows in parallel (rayon), in f64.

use rayon::prelude::*;

use crate::Result;
use crate::cpu::capped;
use crate::cpu::loss::finish;
use crate::cpu::softmax::row_stats;
use crate::options::{
    CrossEntropyOptions, Grad, Loss, LossReduction, Target, check_cross_entropy, check_len,
    check_targets, class_indices,
};
use crate::shard::{RowStats, SHARD_STATS, Shard, ShardBatch, check_stats, shard_rows};

/// A host shard's batch (see [`ShardBatch`]).
type HostShard<'a> = ShardBatch<'a, Target<'a>, [f32]>;

/// Pass 1 of vocabulary-parallel cross-entropy on the CPU: the statistics of each row of
/// the shard's logits `x` (rows of `shard.width`), [`SHARD_STATS`] f32 per row, for
/// [`crate::merge_shard_stats`]. Same results and errors as
/// [`crate::Tensor::shard_stats`].
pub fn shard_stats(
    x: &[f32],
    batch: HostShard<'_>,
    opts: &CrossEntropyOptions,
) -> Result<Vec<f32>> {
    let (rows, t) = check_batch(x, batch, opts)?;
    let width = batch.shard.width;
    let w = |c: usize| batch.weight.map_or(1.0, |w| f64::from(w[c]));
    let mut out = vec![0.0f32; rows * SHARD_STATS];
    out.par_chunks_mut(SHARD_STATS)
        .zip(x.par_chunks(width))
        .zip(t.par_iter())
        .for_each(|((out, row), &y)| {
            let (row, _) = capped(row, opts.softcap);
            let (m, d) = row_stats(&row, 1.0);
            let xm = |c: usize| f64::from(row[c]) - m;
            let smooth: f64 = (0..width).map(|c| w(c) * xm(c)).sum();
            let w_sum: f64 = (0..width).map(w).sum();
            // -inf logits add nothing to the entropy sum.
            let ent: f64 = (0..width)
                .map(xm)
                .filter(|v| v.is_finite() || v.is_nan())
                .map(|v| v.exp() * v)
                .sum();
            let (xy, wy) = match local(y, opts, batch.shard) {
                Some(c) => (f64::from(row[c]), w(c)),
                None => (0.0, 0.0),
            };
            RowStats {
                m: m as f32,
                r: (d - 1.0) as f32,
                smooth: smooth as f32,
                ent: ent as f32,
                xy: xy as f32,
                wy: wy as f32,
                w: w_sum as f32,
            }
            .write(out);
        });
    Ok(out)
}

/// Pass 2 of vocabulary-parallel cross-entropy on the CPU: from the merged statistics of
/// every row, the loss (reduced as the options ask, the extras they ask for) and, when
/// `grad` asks for it, the shard's columns of the gradient of the reduced loss. Same results
/// and errors as [`crate::Tensor::shard_backward`].
pub fn shard_backward(
    x: &[f32],
    batch: HostShard<'_>,
    merged: &[f32],
    opts: &CrossEntropyOptions,
    grad: Grad,
) -> Result<Loss<Vec<f32>>> {
    let (rows, t) = check_batch(x, batch, opts)?;
    check_stats(merged.len(), rows)?;
    let Shard { width, classes, .. } = batch.shard;
    let w = |c: usize| batch.weight.map_or(1.0, |w| f64::from(w[c]));
    let stats = |i: usize| RowStats::read(&merged[i * SHARD_STATS..]);
    let ignored = |i: usize| t[i] == opts.ignore_index;
    let eps = f64::from(opts.label_smoothing);
    let z = f64::from(opts.z_loss);
    let k = classes as f64;
    // What a row's loss and gradient need: (log d, d, lse, b, a).
    let row_of = |s: RowStats| {
        let log_d = f64::from(s.r).ln_1p();
        let lse = f64::from(s.m) + log_d;
        let b = (1.0 - eps) * f64::from(s.wy);
        let a = b + eps * f64::from(s.w) / k + 2.0 * z * lse;
        (log_d, 1.0 + f64::from(s.r), lse, b, a)
    };
    let den: f64 = (0..rows)
        .filter(|&i| !ignored(i))
        .map(|i| f64::from(stats(i).wy))
        .sum();
    let scale = if opts.reduction == LossReduction::Mean {
        1.0 / den
    } else {
        1.0
    };
    let losses: Vec<f64> = (0..rows)
        .into_par_iter()
        .map(|i| {
            if ignored(i) {
                return 0.0;
            }
            let s = stats(i);
            let (log_d, _, lse, b, _) = row_of(s);
            let mut l = b * ((f64::from(s.m) - f64::from(s.xy)) + log_d) + z * lse * lse;
            if eps > 0.0 {
                l += eps / k * (f64::from(s.w) * log_d - f64::from(s.smooth));
            }
            l
        })
        .collect();
    let mut g = vec![0.0f32; if grad.wanted() { x.len() } else { 0 }];
    g.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .enumerate()
        .for_each(|(i, (g, row))| {
            if ignored(i) {
                g.fill(0.0);
                return;
            }
            let s = stats(i);
            let (_, d, _, b, a) = row_of(s);
            let y = local(t[i], opts, batch.shard);
            let (row, slope) = capped(row, opts.softcap);
            for (c, g) in g.iter_mut().enumerate() {
                let p = (f64::from(row[c]) - f64::from(s.m)).exp() / d;
                let hot = if Some(c) == y { b } else { 0.0 };
                *g = ((p * a - eps / k * w(c) - hot) * scale * slope(c)) as f32;
            }
        });
    let mut out = finish(&losses, den, g, opts.reduction);
    let per_row = |f: &(dyn Fn(RowStats) -> f64 + Sync)| {
        (0..rows)
            .into_par_iter()
            .map(|i| if ignored(i) { 0.0 } else { f(stats(i)) as f32 })
            .collect()
    };
    out.z_loss = opts.z_loss_output.then(|| {
        per_row(&|s| {
            let lse = row_of(s).2;
            z * lse * lse
        })
    });
    out.entropy = opts.entropy_output.then(|| {
        per_row(&|s| {
            let (log_d, d, ..) = row_of(s);
            log_d - f64::from(s.ent) / d
        })
    });
    Ok(out)
}

/// The shard's rows and its targets as i64, after every check: the options (class indices),
/// the shard, the weights' length, the targets against the whole vocabulary.
fn check_batch(
    x: &[f32],
    batch: HostShard<'_>,
    opts: &CrossEntropyOptions,
) -> Result<(usize, Vec<i64>)> {
    check_cross_entropy(opts, false)?;
    let rows = shard_rows(x, batch.shard)?;
    check_len("weight", batch.weight.map(<[f32]>::len), batch.shard.width)?;
    let t = class_indices(
        batch.targets,
        rows,
        ("vocabulary-parallel cross-entropy", "logits"),
    )?;
    check_targets(&t, opts.ignore_index, batch.shard.classes)?;
    Ok((rows, t))
}

/// The target's column in the shard, if it is there (and not ignored).
fn local(y: i64, opts: &CrossEntropyOptions, shard: Shard) -> Option<usize> {
    let y = usize::try_from(y).ok().filter(|_| y != opts.ignore_index)?;
    (shard.first..shard.first + shard.width)
        .contains(&y)
        .then(|| y - shard.first)
}
