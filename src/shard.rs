//! Cross-entropy over a vocabulary split across devices (SPEC.md §2, vocab parallel).
//!
//! Each shard holds some columns of the logits (and the matching class weights). Pass 1
//! ([`Backend::shard_stats`], [`Tensor::record_shard_stats`]) gives per row
//! [`SHARD_STATS`] f32 of statistics over the shard's columns; the shards' rows are merged by
//! [`merge_shard_stats`] in shard order — by any all-reduce, a host loop, MPI — and pass 2
//! ([`Backend::shard_backward`], [`Tensor::record_shard_backward`]) takes the merged rows and
//! writes the shard's slice of the gradient and the loss. [`cross_entropy_split`] runs the
//! whole exchange over several backends at once, one thread each.
//!
//! ```no_run
//! use xent::{Backend, Cpu, CrossEntropyOptions, Gpu, Grad, Shard, ShardBatch, Target, merge_shard_stats};
//! // Two rows over a vocabulary of 5: columns 0..2 on the GPU, 2..5 on the CPU.
//! let gpu = Gpu::new()?;
//! let (left, right) = ([0.5f32, 1.0, -2.0, 0.0], [3.0f32, 0.1, 0.2, 1.0, 2.0, -1.0]);
//! let targets = [4i64, 1];
//! let opts = CrossEntropyOptions::default();
//! let shards = Shard::split(5, &[2, 3])?;
//! let batch = |shard| ShardBatch { shard, targets: Target::I64(&targets), weight: None };
//! let mut merged = gpu.shard_stats(&left, batch(shards[0]), &opts)?;
//! merge_shard_stats(&mut merged, &Cpu.shard_stats(&right, batch(shards[1]), &opts)?)?;
//! let a = gpu.shard_backward(&left, batch(shards[0]), &merged, &opts, Grad::New)?;
//! let b = Cpu.shard_backward(&right, batch(shards[1]), &merged, &opts, Grad::New)?;
//! println!("loss {} (both shards give it: {})", a.loss[0], b.loss[0]);
//! # Ok::<(), xent::Error>(())
//! ```

use crate::options::{CrossEntropyOptions, Grad, Loss, Target, rows_of};
use crate::{Backend, Error, Result};

#[cfg(doc)]
use crate::Tensor;

/// f32 values per row of a shard's statistics: `(m, r)` of its logits (the online max and
/// `Σ exp(x - m) - 1`), the smoothing sum `Σ w_c·(x_c - m)`, the entropy sum
/// `Σ e^(x_c - m)·(x_c - m)`, the target's logit and class weight (0 where the target is in
/// another shard), `Σ w_c`, and a zero. 32 bytes per row is all the exchange moves.
pub const SHARD_STATS: usize = 8;

/// Where a shard's columns sit in the vocabulary: columns `first .. first + width` of
/// `classes`. The targets are class indices into the whole vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The shard's first class.
    pub first: usize,
    /// Its columns: the row length of its logits.
    pub width: usize,
    /// K, the classes of the whole vocabulary.
    pub classes: usize,
}

impl Shard {
    /// Consecutive shards of `widths` columns covering a vocabulary of `classes`, in order.
    ///
    /// ```
    /// let s = xent::Shard::split(10, &[3, 7])?;
    /// assert_eq!((s[1].first, s[1].width, s[1].classes), (3, 7, 10));
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn split(classes: usize, widths: &[usize]) -> Result<Vec<Shard>> {
        let total: usize = widths.iter().sum();
        if total != classes {
            return Err(Error::Shape(format!(
                "shards of {total} columns in all for a vocabulary of {classes}"
            )));
        }
        let mut first = 0;
        widths
            .iter()
            .map(|&width| {
                let shard = Shard {
                    first,
                    width,
                    classes,
                };
                shard.check()?;
                first += width;
                Ok(shard)
            })
            .collect()
    }

    /// An error unless the shard has columns and they lie inside the vocabulary (whose K
    /// must fit an i32, as the targets do).
    pub(crate) fn check(&self) -> Result<()> {
        if self.width == 0 || self.first + self.width > self.classes {
            return Err(Error::Shape(format!(
                "a shard of columns {}..{} of a vocabulary of {}",
                self.first,
                self.first + self.width,
                self.classes
            )));
        }
        if i32::try_from(self.classes).is_err() {
            return Err(Error::Shape(format!(
                "a vocabulary of {} classes (at most i32::MAX)",
                self.classes
            )));
        }
        Ok(())
    }
}

/// One shard's part of a batch: where its columns are, the targets of every row (indices
/// into the whole vocabulary) and the class weights of its own columns. On the host
/// `ShardBatch<'_, Target<'_>, [f32]>`; on the GPU `ShardBatch<'_, &Targets, Tensor>`.
#[derive(Debug)]
pub struct ShardBatch<'a, T, W: ?Sized> {
    /// The shard's columns.
    pub shard: Shard,
    /// One class index per row.
    pub targets: T,
    /// The shard's `width` class weights (f32), or none (all 1).
    pub weight: Option<&'a W>,
}

// Copy whatever the weights' type (a derive would ask `W: Copy`).
impl<T: Copy, W: ?Sized> Clone for ShardBatch<'_, T, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Copy, W: ?Sized> Copy for ShardBatch<'_, T, W> {}

/// One row of statistics, named (the layout of [`SHARD_STATS`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowStats {
    pub(crate) m: f32,
    pub(crate) r: f32,
    pub(crate) smooth: f32,
    pub(crate) ent: f32,
    pub(crate) xy: f32,
    pub(crate) wy: f32,
    pub(crate) w: f32,
}

impl RowStats {
    pub(crate) fn read(v: &[f32]) -> Self {
        RowStats {
            m: v[0],
            r: v[1],
            smooth: v[2],
            ent: v[3],
            xy: v[4],
            wy: v[5],
            w: v[6],
        }
    }

    pub(crate) fn write(&self, v: &mut [f32]) {
        v.copy_from_slice(&[
            self.m,
            self.r,
            self.smooth,
            self.ent,
            self.xy,
            self.wy,
            self.w,
            0.0,
        ]);
    }

    /// The statistics of both sides' columns: the twin of `stats_combine` in
    /// shaders/cross_entropy.wgsl, symmetric in its operands to the last bit.
    fn combine(a: Self, b: Self) -> Self {
        // md_combine (shaders/shared/md.wgsl).
        let m = a.m.max(b.m);
        let (hi, lo) = if a.m > b.m { (a, b) } else { (b, a) };
        let r = if a.m == b.m {
            (a.r + b.r) + 1.0
        } else {
            hi.r + (1.0 + lo.r) * (lo.m - m).exp()
        };
        // A sum at a side's max, brought to m.
        let smooth = |s: Self| {
            if s.w == 0.0 {
                s.smooth
            } else {
                s.smooth + (s.m - m) * s.w
            }
        };
        let ent = |s: Self| {
            let f = (s.m - m).exp();
            if f == 0.0 || s.r == -1.0 {
                0.0
            } else {
                f * (s.ent + (s.m - m) * (1.0 + s.r))
            }
        };
        RowStats {
            m,
            r,
            smooth: smooth(a) + smooth(b),
            ent: ent(a) + ent(b),
            xy: a.xy + b.xy,
            wy: a.wy + b.wy,
            w: a.w + b.w,
        }
    }
}

/// Merges a shard's statistics (`next`, [`SHARD_STATS`] per row) into those of the shards
/// before it (`acc`), row by row: the online `(m, d)` combine, the sums brought to the
/// common max and added. Symmetric (`acc ⊕ next` and `next ⊕ acc` are the same bits) and
/// associative up to f32 rounding, so any all-reduce can run it; a fixed order of the shards
/// gives the same bits every run (MPI: an operation that is not commutative, reduced in
/// rank order). An error if the lengths differ or are not whole rows.
///
/// ```
/// // One row, two shards of one column each: logits 0 and ln 3.
/// let a = [0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
/// let mut b = [3f32.ln(), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
/// xent::merge_shard_stats(&mut b, &a)?;
/// // m = ln 3, d = 1 + 1/3.
/// assert!((b[1] - 1.0 / 3.0).abs() < 1e-7);
/// # Ok::<(), xent::Error>(())
/// ```
pub fn merge_shard_stats(acc: &mut [f32], next: &[f32]) -> Result<()> {
    if acc.len() != next.len() || !acc.len().is_multiple_of(SHARD_STATS) {
        return Err(Error::Shape(format!(
            "shard statistics of {} and {} values ({SHARD_STATS} per row)",
            acc.len(),
            next.len()
        )));
    }
    for (a, b) in acc
        .chunks_exact_mut(SHARD_STATS)
        .zip(next.chunks_exact(SHARD_STATS))
    {
        RowStats::combine(RowStats::read(a), RowStats::read(b)).write(a);
    }
    Ok(())
}

/// Checks merged (or a shard's) statistics against the rows: [`SHARD_STATS`] per row.
pub(crate) fn check_stats(len: usize, rows: usize) -> Result<()> {
    if len != rows * SHARD_STATS {
        return Err(Error::Shape(format!(
            "{len} statistics for {rows} rows ({SHARD_STATS} per row)"
        )));
    }
    Ok(())
}

/// The rows of logits `x` of a shard: an error unless `x` is whole rows of its width.
pub(crate) fn shard_rows(x: &[f32], shard: Shard) -> Result<usize> {
    shard.check()?;
    rows_of(x.len(), shard.width)
}

/// Softmax cross-entropy of `x` (rows of `classes` logits) against class indices, computed
/// with the vocabulary split over `parts`: each backend takes the next `width` columns (and
/// their class weights), one thread each, and the shards exchange only their statistics
/// ([`SHARD_STATS`] f32 per row), merged in part order. The result equals
/// [`Backend::cross_entropy`] of the whole rows to f32 rounding, with every option; the
/// gradient is gathered back into rows of `classes`. Every part computes the loss from the
/// merged statistics; the first one's is returned. Each part works on a copy of its columns:
/// logits already held in shards go through the passes directly.
///
/// ```no_run
/// use xent::{Backend, Cpu, CrossEntropyOptions, Gpu, Grad, Target};
/// let x = [2.0f32, 0.5, -1.0, 0.0, 3.0, 1.0];
/// let gpu = Gpu::new()?;
/// let parts: [(&(dyn Backend + Sync), usize); 2] = [(&gpu, 1), (&Cpu, 2)];
/// let opts = CrossEntropyOptions::default();
/// let out = xent::cross_entropy_split(&parts, &x, 3, Target::I64(&[0, 2]), None, &opts, Grad::New)?;
/// println!("loss {:?}", out.loss);
/// # Ok::<(), xent::Error>(())
/// ```
pub fn cross_entropy_split(
    parts: &[(&(dyn Backend + Sync), usize)],
    x: &[f32],
    classes: usize,
    target: Target<'_>,
    weight: Option<&[f32]>,
    opts: &CrossEntropyOptions,
    grad: Grad,
) -> Result<Loss<Vec<f32>>> {
    let rows = rows_of(x.len(), classes)?;
    crate::options::check_len("weight", weight.map(<[f32]>::len), classes)?;
    if parts.is_empty() {
        return Err(Error::InvalidArgument("no parts to split over".into()));
    }
    let widths: Vec<usize> = parts.iter().map(|p| p.1).collect();
    let shards = Shard::split(classes, &widths)?;
    // Each shard's columns, contiguous.
    let columns: Vec<Vec<f32>> = shards
        .iter()
        .map(|s| {
            x.chunks_exact(classes)
                .flat_map(|row| &row[s.first..s.first + s.width])
                .copied()
                .collect()
        })
        .collect();
    let batch = |s: Shard| ShardBatch {
        shard: s,
        targets: target,
        weight: weight.map(|w| &w[s.first..s.first + s.width]),
    };
    let stats = on_each(parts.len(), |i| {
        parts[i].0.shard_stats(&columns[i], batch(shards[i]), opts)
    })?;
    let mut merged = stats[0].clone();
    for s in &stats[1..] {
        merge_shard_stats(&mut merged, s)?;
    }
    let merged = &merged;
    let outs = on_each(parts.len(), |i| {
        parts[i]
            .0
            .shard_backward(&columns[i], batch(shards[i]), merged, opts, grad)
    })?;
    let grad = grad.wanted().then(|| {
        let mut g = vec![0.0f32; rows * classes];
        for (s, out) in shards.iter().zip(&outs) {
            if let Some(part) = &out.grad {
                for (row, src) in g.chunks_exact_mut(classes).zip(part.chunks_exact(s.width)) {
                    row[s.first..s.first + s.width].copy_from_slice(src);
                }
            }
        }
        g
    });
    let first = outs
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("no shard's result".into()))?;
    Ok(Loss { grad, ..first })
}

/// `f(0), f(1), …, f(n - 1)`, each on a thread of its own, in order.
fn on_each<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a shard's thread panicked".into())))
            })
            .collect()
    })
}
