//! The CPU path: the same ops and option types as the GPU path, parallel over rows.

use std::borrow::Cow;

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
