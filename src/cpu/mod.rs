//! The CPU path: the same ops and option types as the GPU path, parallel over rows.

mod info;
mod loss;
mod softmax;

pub use info::{divergence, entropy, joint_entropies, self_information};
pub use loss::{bce_with_logits, cross_entropy};
pub use softmax::{activation, logsumexp, softmax};

/// The CPU backend, for code that is generic over [`crate::Backend`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;
