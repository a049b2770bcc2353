//! The crate's one error type.

/// Everything that can go wrong in xent, on either path.
///
/// Bad input is reported before any GPU work is recorded, so an `Err` never leaves an output
/// half-written. wgpu validation and out-of-memory errors are caught in error scopes and
/// arrive here as [`Error::Wgpu`] instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (none at all, or none matching `WGPU_ADAPTER_NAME`).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter was found but the device could not be opened.
    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),
    /// The adapter exists but cannot run compute shaders.
    #[error("the adapter {0} cannot run compute shaders")]
    NoCompute(String),
    /// A shape that the operation cannot take (empty, mismatched, not divisible, ...).
    #[error("bad shape: {0}")]
    Shape(String),
    /// An option or argument outside its domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A class-index target outside `[0, K)` that is not `ignore_index` (the first such row).
    #[error(
        "target {value} at row {row} is outside [0, {classes}) and is not ignore_index{}",
        batch_note(*batch)
    )]
    Target {
        /// For checks gathered by [`Workspace::check_targets`](crate::Workspace::check_targets):
        /// the batch, counted from 0 among those recorded since the last check. `None` for a
        /// call that checks at once.
        batch: Option<usize>,
        /// The first offending row.
        row: usize,
        /// Its target.
        value: i64,
        /// K, the number of classes.
        classes: usize,
    },
    /// One row alone does not fit in a single storage binding of this device.
    #[error(
        "one row of {cols} values needs {bytes} bytes, more than this device's storage binding limit of {limit} bytes"
    )]
    RowTooLarge {
        /// Elements in the row.
        cols: usize,
        /// Bytes the row (plus binding alignment) needs.
        bytes: u64,
        /// The device's `max_storage_buffer_binding_size` (or the cap in `GpuOptions`).
        limit: u64,
    },
    /// The tensor does not fit in a single buffer of this device.
    #[error("a tensor of {bytes} bytes exceeds this device's maximum buffer size of {limit} bytes")]
    TooLarge {
        /// Bytes requested.
        bytes: u64,
        /// The device's `max_buffer_size`.
        limit: u64,
    },
    /// burn refused or failed something xent asked of it (feature `burn`): a tensor on a
    /// backend or device xent cannot run on, a device that cannot be shared.
    #[error("burn: {0}")]
    Burn(String),
    /// Tensors from two different `Gpu` contexts were mixed in one call.
    #[error("the tensors belong to different GPU contexts")]
    DeviceMismatch,
    /// A wgpu validation, out-of-memory or internal error, caught in an error scope.
    #[error("wgpu error during {op}: {message}")]
    Wgpu {
        /// What xent was doing (the shader is named for compilation errors).
        op: String,
        /// wgpu's message.
        message: String,
    },
    /// A `.npy` file that cannot be read or written (missing, truncated, wrong dtype, ...).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Mapping a buffer for readback failed.
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    /// Mapping a staging buffer for an upload failed.
    #[error("uploading data to the GPU failed: {0}")]
    Upload(String),
    /// The host could not allocate memory for a result.
    #[error("out of host memory: {bytes} bytes for {what}")]
    HostMemory {
        /// Bytes asked for.
        bytes: u64,
        /// What they were for.
        what: String,
    },
    /// A broken internal invariant (a bug in xent): a launch would exceed a bound the launch
    /// code guarantees. Reported instead of returning wrong numbers.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

/// The batch of a gathered target check, for [`Error::Target`]'s message.
fn batch_note(batch: Option<usize>) -> String {
    batch.map_or(String::new(), |b| {
        format!(" (batch {b} of those recorded since the last check)")
    })
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
