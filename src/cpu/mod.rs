//! The CPU path: the same ops and option types as the GPU path, parallel over rows.

use std::borrow::Cow;
use std::cell::Cell;

use crate::{DType, Element};

mod info;
pub(crate) mod linear;
mod loss;
mod shard;
mod simd;
mod softmax;

pub use info::{divergence, entropy, joint_entropies, self_information};
pub use linear::linear_cross_entropy;
pub use loss::{bce_with_logits, cross_entropy};
pub use shard::{shard_backward, shard_stats};
pub use simd::simd_path;
pub use softmax::{activation, logsumexp, softmax};

/// A row of logits as the ops read it under softcap `c`: every logit x as c·tanh(x / c)
/// (rounded to f32, as the GPU reads it), and the slope 1 − tanh²(x / c) of each, which its
/// gradient takes; the row itself and slopes of 1 without a softcap.
pub(crate) fn capped(row: &[f32], softcap: Option<f32>) -> (Cow<'_, [f32]>, impl Fn(usize) -> f64) {
    let tanh: Vec<f64> = softcap.map_or_else(Vec::new, |c| {
        row.iter()
            .map(|&x| (f64::from(x) / f64::from(c)).tanh())
            .collect()
    });
    let row = match softcap {
        Some(c) => Cow::Owned(tanh.iter().map(|t| (f64::from(c) * t) as f32).collect()),
        None => Cow::Borrowed(row),
    };
    (row, move |i: usize| {
        tanh.get(i).map_or(1.0, |t| 1.0 - t * t)
    })
}

/// The CPU backend, for code that is generic over [`crate::Backend`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

thread_local! {
    /// This thread's f32 buffers for the half-precision rows it works on, kept from one call
    /// to the next: two per [`as_f32`] in progress (one inside another takes two more).
    static SCRATCH: Cell<Vec<Vec<f32>>> = const { Cell::new(Vec::new()) };
}

/// `f(x, out)` on f32 values: the slices themselves for f32; for a half type `x` widened
/// into this thread's scratch and `out` rounded from it after. A second input is read by a
/// call inside `f` on its matching piece.
pub(crate) fn as_f32<E: Element, O: Element, R>(
    x: &[E],
    out: &mut [O],
    f: impl FnOnce(&[f32], &mut [f32]) -> R,
) -> R {
    if E::DTYPE == DType::F32 && O::DTYPE == DType::F32 {
        return O::narrow(out, &mut Vec::new(), |o| f(E::widen(x, &mut Vec::new()), o));
    }
    let mut pool = SCRATCH.take();
    let (mut a, mut b) = (
        pool.pop().unwrap_or_default(),
        pool.pop().unwrap_or_default(),
    );
    SCRATCH.set(pool);
    let r = O::narrow(out, &mut b, |o| f(E::widen(x, &mut a), o));
    let mut pool = SCRATCH.take();
    pool.extend([b, a]);
    SCRATCH.set(pool);
    r
}
