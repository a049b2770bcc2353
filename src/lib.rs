//! # xent — softmax, cross-entropy and information theory on any GPU
//!
//! Batched, numerically stable softmax / log-softmax / logsumexp and the elementwise
//! sigmoid / log-sigmoid / logit, as WGSL compute kernels run through wgpu (Vulkan, Metal,
//! DX12, GL), with a CPU path that computes the same things. The math of every op is in
//! SPEC.md; where it is silent xent does what PyTorch does.
//!
//! ```no_run
//! use xent::{Gpu, SoftmaxOptions, Tensor};
//!
//! let gpu = Gpu::new()?;                                    // honors WGPU_BACKEND etc.
//! let logits = Tensor::from_slice(&gpu, &[2.0, 1.0, 0.1, 1234.0, 0.0, 0.0], 2, 3)?;
//! let probs = logits.softmax(&SoftmaxOptions::default())?;  // stays on the GPU
//! let lse = logits.logsumexp(&SoftmaxOptions::default())?;
//! println!("{:?} {:?}", probs.to_vec()?, lse.to_vec()?);
//! # Ok::<(), xent::Error>(())
//! ```
//!
//! The [`Backend`] trait gives slice-in / `Vec`-out versions of every op on both [`Cpu`] and
//! [`Gpu`].
//!
//! Cross-entropy also runs with its vocabulary split across devices: pass 1
//! ([`Backend::shard_stats`], [`Tensor::record_shard_stats`]) gives [`SHARD_STATS`] f32 per
//! row, any collective merges the shards' rows with [`merge_shard_stats`], and pass 2
//! ([`Backend::shard_backward`], [`Tensor::record_shard_backward`]) writes each shard's
//! gradient and the loss; [`cross_entropy_split`] runs it over several backends at once.

/// README.md's code, compiled with the doctests so that what a user copies first never goes
/// stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod backend;
#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "burn")]
pub mod burn;
pub mod cpu;
mod dtype;
mod error;
pub mod gpu;
#[cfg(feature = "cli")]
pub mod npy;
mod options;
mod shard;

pub use backend::Backend;
pub use cpu::Cpu;
pub use dtype::{DType, Element, Half};
pub use error::{Error, Result};
pub use gpu::{
    CeExtras, CeTarget, CrossLane, Gpu, GpuOptions, GpuShard, GradOut, LinearOut, LossOut,
    RowSplit, Stats, Targets, Tensor, Workspace,
};
pub use options::{
    Activation, BceOptions, BceWeights, CrossEntropyOptions, DEFAULT_CHUNK_BYTES, DivReduction,
    Divergence, Form, Grad, InfoOptions, Linear, LinearCrossEntropyOptions, LinearLoss, Loss,
    LossReduction, SoftmaxKind, SoftmaxOptions, Target, validate_probs,
};
pub use shard::{SHARD_STATS, Shard, ShardBatch, cross_entropy_split, merge_shard_stats};
