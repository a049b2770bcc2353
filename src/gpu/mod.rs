//! The GPU path: context, tensors, kernels.

mod bce;
mod context;
mod cross_entropy;
mod info;
pub(crate) mod kernels;
mod linear;
mod probe;
mod reduce;
mod rows;
mod shard;
mod softmax;
pub(crate) mod tensor;
mod transfer;
mod workspace;

pub use context::{Gpu, GpuOptions, Stats, list_adapters};
pub use cross_entropy::{CeExtras, CeTarget};
pub use kernels::shader_variants;
pub use kernels::{CrossLane, RowSplit};
pub use linear::LinearOut;
pub use shard::GpuShard;
pub use tensor::{GradOut, LossOut, Targets, Tensor};
pub use workspace::Workspace;
