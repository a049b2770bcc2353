//! The GPU path: context, tensors, kernels.

mod context;
pub(crate) mod kernels;
mod softmax;
mod tensor;

pub use context::{Gpu, GpuOptions, Reduction, list_adapters};
pub use kernels::shader_variants;
pub use tensor::Tensor;
