//! Row-major 2-D tensors (f32, f16, bf16) that live in GPU memory.

use std::sync::Arc;

use rayon::prelude::*;

use crate::dtype::CONVERT_CHUNK;
use crate::gpu::context::{Gpu, Placed, Region};
use crate::gpu::workspace::Workspace;
use crate::options::{Grad, Loss};
use crate::{DType, Error, Half, Result};

/// A `rows × cols` matrix in a GPU buffer, row-major, of f32 ([`Tensor::from_slice`]) or of
/// a half-precision type ([`Tensor::from_half`], [`Tensor::from_bits`]; see [`DType`]).
///
/// Ops on tensors ([`Tensor::softmax`], ...) return tensors without any host round trip;
/// [`Tensor::to_vec`] reads one back. A 1-D vector is a tensor with one row.
///
/// In the buffer, rows are [`Tensor::stride`] elements apart: `cols` for f32, `cols` rounded
/// up to a multiple of 4 for f16 and bf16, whose rows are padded so that each starts on an
/// 8-byte boundary and no two share a 32-bit word (the padding holds no element).
///
/// ```no_run
/// let gpu = xent::Gpu::new()?;
/// let x = xent::Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], 2, 3)?;
/// let p = x.softmax(&Default::default())?.to_vec()?;
/// assert!((p[3] - 1.0 / 3.0).abs() < 1e-6);
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    /// The byte offset of element (0, 0) in `buffer` (0 but for [`Tensor::from_buffer`]).
    offset: u64,
    rows: usize,
    cols: usize,
    dtype: DType,
    /// For a buffer from the context's pool: returns it there when the last clone is dropped.
    _lease: Option<Arc<Lease>>,
}

/// The smallest tensor worth a pooled buffer: smaller ones cost little to create, and would
/// only push the large ones out of the pool.
const POOLED_MIN_BYTES: u64 = 1 << 20;

/// A device buffer borrowed from its context's pool ([`Gpu::take_pooled`]), given back when
/// dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    gpu: Gpu,
    buffer: wgpu::Buffer,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.gpu.give_back_pooled(self.buffer.clone());
    }
}

impl Tensor {
    /// Uploads `data` (`rows × cols` values, row-major).
    pub fn from_slice(gpu: &Gpu, data: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::upload(
            gpu,
            bytemuck::cast_slice(data),
            data.len(),
            (rows, cols, DType::F32),
        )
    }

    /// Uploads half-precision `data` (`rows × cols` [`half::f16`] or [`half::bf16`] values,
    /// row-major) as a tensor of that type: on the device it stays half precision, and the
    /// ops read it as such (computing in f32).
    ///
    /// ```no_run
    /// use half::bf16;
    /// let gpu = xent::Gpu::new()?;
    /// let x: Vec<bf16> = [1.0f32, 2.0, 3.0].iter().map(|&v| bf16::from_f32(v)).collect();
    /// let x = xent::Tensor::from_half(&gpu, &x, 1, 3)?;
    /// assert_eq!(x.dtype(), xent::DType::Bf16);
    /// let p = x.softmax(&Default::default())?;            // bf16 too
    /// assert!((p.to_vec()?[2] - 0.665).abs() < 4e-3);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn from_half<T: Half>(gpu: &Gpu, data: &[T], rows: usize, cols: usize) -> Result<Self> {
        let bits: Vec<u16> = data.iter().map(|v| v.bits()).collect();
        Self::from_bits(gpu, &bits, T::DTYPE, rows, cols)
    }

    /// Uploads raw half-precision bits (`rows × cols` values, row-major) as a tensor of
    /// `dtype`, [`DType::F16`] or [`DType::Bf16`].
    pub fn from_bits(
        gpu: &Gpu,
        bits: &[u16],
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        if !dtype.is_half() {
            return Err(Error::InvalidArgument(
                "from_bits takes f16 or bf16 bits; use from_slice for f32".into(),
            ));
        }
        Self::check_shape(gpu, rows, cols, dtype)?;
        Self::check_len(bits.len(), rows, cols)?;
        let stride = Self::stride_of(cols, dtype);
        let mut padded = Vec::new();
        padded
            .try_reserve_exact(rows * stride)
            .map_err(|_| Error::HostMemory {
                bytes: (rows * stride * 2) as u64,
                what: "a padded half tensor".into(),
            })?;
        for row in bits.chunks(cols) {
            padded.extend_from_slice(row);
            padded.resize(padded.len() + stride - cols, 0);
        }
        Self::upload(
            gpu,
            bytemuck::cast_slice(&padded),
            bits.len(),
            (rows, cols, dtype),
        )
    }

    /// Uploads `bytes`, the storage of a `rows × cols` tensor of `dtype` given `len`
    /// values.
    fn upload(
        gpu: &Gpu,
        bytes: &[u8],
        len: usize,
        (rows, cols, dtype): (usize, usize, DType),
    ) -> Result<Self> {
        let size = Self::check_shape(gpu, rows, cols, dtype)?;
        Self::check_len(len, rows, cols)?;
        let buffer = gpu.allocate("upload", || {
            gpu.buffer_with("xent tensor", bytes, Self::USAGE)
        })?;
        debug_assert_eq!(buffer.size(), size);
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            offset: 0,
            rows,
            cols,
            dtype,
            _lease: None,
        })
    }

    /// A new `rows × cols` f32 tensor filled with zeros.
    pub fn zeros(gpu: &Gpu, rows: usize, cols: usize) -> Result<Self> {
        Self::zeros_as(gpu, rows, cols, DType::F32)
    }

    /// A new `rows × cols` tensor of `dtype` filled with zeros: for instance the output of
    /// [`Tensor::softmax_into`] over half-precision logits, which is of their type.
    pub fn zeros_as(gpu: &Gpu, rows: usize, cols: usize, dtype: DType) -> Result<Self> {
        let bytes = Self::check_shape(gpu, rows, cols, dtype)?;
        let buffer = gpu.allocate("allocate", || gpu.buffer("xent tensor", bytes, Self::USAGE))?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            offset: 0,
            rows,
            cols,
            dtype,
            _lease: None,
        })
    }

    /// A `rows × cols` tensor on a buffer from the context's pool of device buffers, given
    /// back to the pool when the tensor and its clones are dropped: an idle buffer of its
    /// size, then passed to `reuse`, or else `fresh`'s new one (always, and without a lease,
    /// under [`POOLED_MIN_BYTES`]). For tensors that never leave the crate: the slice-in /
    /// `Vec`-out paths, whose repeated calls then pay no allocation, zero-fill or first touch
    /// of device memory.
    fn pooled_or(
        gpu: &Gpu,
        (rows, cols, dtype): (usize, usize, DType),
        fresh: impl FnOnce(&Gpu) -> Result<Self>,
        reuse: impl FnOnce(&Self) -> Result<()>,
    ) -> Result<Self> {
        let bytes = Self::check_shape(gpu, rows, cols, dtype)?;
        if bytes < POOLED_MIN_BYTES {
            return fresh(gpu);
        }
        let idle = gpu.take_pooled(bytes);
        let reused = idle.is_some();
        let buffer = match idle {
            Some(b) => b,
            None => fresh(gpu)?.buffer,
        };
        let t = Self {
            gpu: gpu.clone(),
            _lease: Some(Arc::new(Lease {
                gpu: gpu.clone(),
                buffer: buffer.clone(),
            })),
            buffer,
            offset: 0,
            rows,
            cols,
            dtype,
        };
        if reused {
            reuse(&t)?;
        }
        Ok(t)
    }

    /// A pooled tensor for a result ([`Tensor::output`]'s NaN poisoning applies).
    pub(crate) fn pooled(gpu: &Gpu, (rows, cols): (usize, usize), dtype: DType) -> Result<Self> {
        Self::pooled_or(
            gpu,
            (rows, cols, dtype),
            |gpu| Self::zeros_as(gpu, rows, cols, dtype),
            |_| Ok(()),
        )?
        .poisoned()
    }

    /// `data` in a pooled tensor of `dtype` (rounded to it): written through the staging
    /// pool into an idle buffer, or into a new one as it is created (on lavapipe, 4096 ×
    /// 32 000 f32: 75 ms the first way, 300 ms the second, 600 ms through staging into a new
    /// buffer).
    pub(crate) fn upload_pooled(
        gpu: &Gpu,
        data: &[f32],
        (rows, cols): (usize, usize),
        dtype: DType,
    ) -> Result<Self> {
        let fresh = |gpu: &Gpu| match dtype {
            DType::F32 => Self::from_slice(gpu, data, rows, cols),
            _ => {
                let mut bits = vec![0u16; data.len()];
                bits.par_chunks_mut(CONVERT_CHUNK)
                    .zip(data.par_chunks(CONVERT_CHUNK))
                    .for_each(|(d, s)| dtype.bits_of(s, d));
                Self::from_bits(gpu, &bits, dtype, rows, cols)
            }
        };
        Self::pooled_or(gpu, (rows, cols, dtype), fresh, |t| t.write(data))
    }

    /// A `rows × cols` tensor of `dtype` over `buffer`, a buffer of the caller's on `gpu`'s
    /// device, from byte `offset`: no copy, and the ops read and write that buffer (a
    /// tensor of another library's memory pool, say). Laid out as xent's own tensors are
    /// ([`Tensor::stride`]: f16 and bf16 rows padded to a multiple of 4 elements). `offset`
    /// must be a multiple of the device's `min_storage_buffer_offset_alignment` (256 bytes
    /// under wgpu's default limits; [`Gpu::limits`]), the tensor must end inside the buffer,
    /// and the buffer's usage must include `STORAGE`, `COPY_SRC` and `COPY_DST`; otherwise an
    /// error. A buffer of another device fails at its first use, with [`Error::Wgpu`]; so
    /// does an op that reads one tensor and writes another of the same buffer (wgpu binds a
    /// buffer either read-only or writable within a dispatch), unless the context was made
    /// with [`GpuOptions::shared_buffers`](crate::GpuOptions::shared_buffers).
    ///
    /// ```no_run
    /// use xent::{DType, Gpu, Tensor};
    /// let gpu = Gpu::new()?;
    /// let usage = wgpu::BufferUsages::STORAGE
    ///     | wgpu::BufferUsages::COPY_SRC
    ///     | wgpu::BufferUsages::COPY_DST;
    /// let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
    ///     label: Some("mine"),
    ///     size: 4096,
    ///     usage,
    ///     mapped_at_creation: false,
    /// });
    /// // Two rows of three f32 from byte 256 of it.
    /// let x = Tensor::from_buffer(&gpu, buffer, 256, 2, 3, DType::F32)?;
    /// x.write(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0])?;
    /// let p = x.softmax(&Default::default())?.to_vec()?;
    /// assert!((p[3] - 1.0 / 3.0).abs() < 1e-6);
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn from_buffer(
        gpu: &Gpu,
        buffer: wgpu::Buffer,
        offset: u64,
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> Result<Self> {
        let bytes = Self::check_shape(gpu, rows, cols, dtype)?;
        check_region(gpu, &buffer, (offset, bytes), Self::USAGE)?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            offset,
            rows,
            cols,
            dtype,
            _lease: None,
        })
    }

    /// A `rows × cols` f32 tensor over `buffer` (a workspace's scratch, at least that large):
    /// for handing a scratch buffer to the ops that take tensors.
    pub(crate) fn view(gpu: &Gpu, buffer: wgpu::Buffer, (rows, cols): (usize, usize)) -> Self {
        Self {
            gpu: gpu.clone(),
            buffer,
            offset: 0,
            rows,
            cols,
            dtype: DType::F32,
            _lease: None,
        }
    }

    /// A new tensor of `dtype` for a result: zeros, or NaN when the context was built with
    /// [`GpuOptions::poison_outputs`](crate::GpuOptions::poison_outputs).
    pub(crate) fn output(gpu: &Gpu, (rows, cols): (usize, usize), dtype: DType) -> Result<Self> {
        Self::zeros_as(gpu, rows, cols, dtype)?.poisoned()
    }

    /// A new tensor shaped and typed like this one, for a row-shaped result
    /// ([`Tensor::output`]).
    pub(crate) fn output_like(&self) -> Result<Self> {
        Self::output(&self.gpu, (self.rows, self.cols), self.dtype)
    }

    /// Filled with NaN when the context was built with
    /// [`GpuOptions::poison_outputs`](crate::GpuOptions::poison_outputs).
    fn poisoned(self) -> Result<Self> {
        if self.gpu.inner.poison_outputs {
            self.write(&vec![f32::NAN; self.len()])?;
        }
        Ok(self)
    }

    const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// Errors unless `len` values make a `rows × cols` tensor.
    fn check_len(len: usize, rows: usize, cols: usize) -> Result<()> {
        if len != rows * cols {
            return Err(Error::Shape(format!(
                "{len} values given for a {rows}×{cols} tensor"
            )));
        }
        Ok(())
    }

    /// Elements from one row's start to the next's in a tensor of `dtype`: `cols`, rounded
    /// up to a multiple of 4 for the half types. Twin: `row_vecs` in
    /// shaders/shared/layout_packed.wgsl.
    fn stride_of(cols: usize, dtype: DType) -> usize {
        match dtype {
            DType::F32 => cols,
            DType::F16 | DType::Bf16 => cols.next_multiple_of(4),
        }
    }

    /// The buffer's bytes for a `rows × cols` tensor of `dtype`, or why there is none.
    fn check_shape(gpu: &Gpu, rows: usize, cols: usize, dtype: DType) -> Result<u64> {
        if rows == 0 || cols == 0 {
            return Err(Error::Shape(format!("empty tensor ({rows}×{cols})")));
        }
        let stored = (rows as u64)
            .checked_mul(Self::stride_of(cols, dtype) as u64)
            .ok_or_else(|| Error::Shape(format!("{rows}×{cols} overflows")))?;
        let bytes = stored
            .checked_mul(dtype.bytes() as u64)
            .ok_or_else(|| Error::Shape(format!("{rows}×{cols} overflows")))?;
        let limit = gpu.inner.limits.max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge { bytes, limit });
        }
        if stored > u64::from(u32::MAX) {
            return Err(Error::Shape(format!(
                "{rows}×{cols} has more than 2^32 - 1 elements"
            )));
        }
        Ok(bytes)
    }

    /// Reads the tensor back (row-major), as f32: a half-precision tensor's values widened
    /// exactly. Through the context's pooled staging buffers.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if !self.dtype.is_half() {
            return self.gpu.read(&self.buffer, self.offset, self.len());
        }
        let bits = self.to_bits()?;
        let mut out = vec![0f32; bits.len()];
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(bits.par_chunks(CONVERT_CHUNK))
            .for_each(|(d, s)| self.dtype.values_of(s, d));
        Ok(out)
    }

    /// Reads a half-precision tensor's bits back (row-major, without the rows' padding);
    /// an error for an f32 tensor.
    pub fn to_bits(&self) -> Result<Vec<u16>> {
        if !self.dtype.is_half() {
            return Err(Error::InvalidArgument(
                "to_bits reads f16 or bf16 tensors; this one is f32 (use to_vec)".into(),
            ));
        }
        let stride = self.stride();
        let mut stored: Vec<u16> = self
            .gpu
            .read(&self.buffer, self.offset, self.rows * stride)?;
        if stride != self.cols {
            let cols = self.cols;
            for row in 1..self.rows {
                stored.copy_within(row * stride..row * stride + cols, row * cols);
            }
            stored.truncate(self.len());
        }
        Ok(stored)
    }

    /// Reads the tensor back into `out` (`rows × cols` values, row-major, as f32): for an
    /// f32 tensor no allocation, so a loop that reads into the same slice runs at the speed
    /// of the copies.
    ///
    /// ```no_run
    /// let gpu = xent::Gpu::new()?;
    /// let x = xent::Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], 1, 3)?;
    /// let mut host = vec![0.0; 3];
    /// x.softmax(&Default::default())?.read_into(&mut host)?;
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn read_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.len() {
            return Err(Error::Shape(format!(
                "{} values to read a {}×{} tensor into",
                out.len(),
                self.rows,
                self.cols
            )));
        }
        if self.dtype.is_half() {
            out.copy_from_slice(&self.to_vec()?);
            return Ok(());
        }
        self.gpu.read_into(&self.buffer, self.offset, out)
    }

    /// Overwrites the whole tensor with `data` (same length; rounded to nearest, ties to
    /// even, for a half-precision tensor), through the context's pooled staging buffers; the
    /// copy is submitted before anything submitted later.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape(format!(
                "{} values written to a {}×{} tensor",
                data.len(),
                self.rows,
                self.cols
            )));
        }
        if !self.dtype.is_half() {
            return self
                .gpu
                .write_chunks(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
        let stride = self.stride();
        let mut bits = vec![0u16; self.rows * stride];
        bits.par_chunks_mut(stride)
            .zip(data.par_chunks(self.cols))
            .for_each(|(dst, src)| self.dtype.bits_of(src, &mut dst[..src.len()]));
        self.gpu
            .write_chunks(&self.buffer, self.offset, bytemuck::cast_slice(&bits))
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (elements per row).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements from the start of one row to the next in [`Tensor::buffer`]: `cols` for
    /// f32, `cols` rounded up to a multiple of 4 for f16 and bf16.
    pub fn stride(&self) -> usize {
        Self::stride_of(self.cols, self.dtype)
    }

    /// Bytes from the start of one row to the next in [`Tensor::buffer`].
    pub(crate) fn row_bytes(&self) -> u64 {
        (self.stride() * self.dtype.bytes()) as u64
    }

    /// `rows × cols`.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Always false: a tensor has at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The context the tensor lives in.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The underlying buffer (usage `STORAGE | COPY_SRC | COPY_DST`), for users who record
    /// their own passes around xent's. The tensor starts at byte [`Tensor::offset`] of it.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The byte offset of the tensor's first element in [`Tensor::buffer`]: 0 but for a
    /// tensor made by [`Tensor::from_buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The tensor's place in its buffer.
    pub(crate) fn region(&self) -> Region<'_> {
        Region {
            buffer: &self.buffer,
            offset: self.offset,
        }
    }

    /// The tensor's place, holding a clone of its buffer, with the bytes it takes there (its
    /// rows, padded for a half type).
    pub(crate) fn placed(&self) -> Placed {
        Placed {
            buffer: self.buffer.clone(),
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.rows as u64 * self.row_bytes()),
        }
    }

    /// The offset of the tensor's first element in its buffer, in elements of its type.
    pub(crate) fn first_elem(&self) -> usize {
        (self.offset / self.dtype.bytes() as u64) as usize
    }

    /// Errors unless `out` lives on the same context and has `rows × cols` elements of
    /// `dtype`.
    pub(crate) fn check_out(
        &self,
        out: &Tensor,
        (rows, cols): (usize, usize),
        dtype: DType,
    ) -> Result<()> {
        self.gpu.same(&out.gpu)?;
        if out.rows != rows || out.cols != cols {
            return Err(Error::Shape(format!(
                "output is {}×{}, expected {rows}×{cols}",
                out.rows, out.cols
            )));
        }
        if out.dtype != dtype {
            return Err(Error::InvalidArgument(format!(
                "the output is {}, expected {dtype}",
                out.dtype
            )));
        }
        Ok(())
    }

    /// Errors unless the tensor is f32: for the inputs (named by `what`) that are f32 only.
    pub(crate) fn require_f32(&self, what: &str) -> Result<()> {
        if self.dtype.is_half() {
            return Err(Error::InvalidArgument(format!(
                "{what}: f32 tensors only, this one is {}",
                self.dtype
            )));
        }
        Ok(())
    }

    /// Errors unless `other` (named `what`) is of this tensor's type.
    pub(crate) fn check_dtype(&self, other: &Tensor, what: &str) -> Result<()> {
        if other.dtype != self.dtype {
            return Err(Error::InvalidArgument(format!(
                "{what} is {}, the input {}",
                other.dtype, self.dtype
            )));
        }
        Ok(())
    }
}

/// Where a recorded loss writes: the loss (one value per row or per element for an
/// unreduced loss, else `1 × 1`) and, as asked, the gradient.
#[derive(Clone, Copy, Debug)]
pub struct LossOut<'a> {
    /// The loss.
    pub loss: &'a Tensor,
    /// The gradient.
    pub grad: GradOut<'a>,
}

/// Where a recorded loss writes its gradient.
#[derive(Clone, Copy, Debug)]
pub enum GradOut<'a> {
    /// No gradient.
    None,
    /// Over the logits (cross-entropy only).
    InPlace,
    /// Into this tensor, shaped like the logits.
    Into(&'a Tensor),
}

impl Tensor {
    /// Errors unless `out` fits a loss over these logits: the loss `loss_shape`, the
    /// gradient (when given a tensor) shaped like the logits.
    pub(crate) fn check_loss_out(
        &self,
        out: &LossOut<'_>,
        loss_shape: (usize, usize),
    ) -> Result<()> {
        self.check_out(out.loss, loss_shape, DType::F32)?;
        if let GradOut::Into(g) = out.grad {
            self.check_out(g, (self.rows, self.cols), self.dtype)?;
            if g.buffer == self.buffer && g.offset == self.offset {
                return Err(Error::InvalidArgument(
                    "the gradient tensor is the logits: use GradOut::InPlace".into(),
                ));
            }
        }
        Ok(())
    }

    /// The convenience form of a loss: outputs from `alloc` ([`Tensor::output`], or
    /// [`Tensor::pooled`] for the slice paths) shaped `loss_shape` and, for [`Grad::New`],
    /// like the logits; `record` into a fresh encoder and workspace, one submission, then the
    /// cross-entropy target check, read at once.
    pub(crate) fn loss_with(
        &self,
        (loss_shape, alloc): ((usize, usize), Alloc),
        grad: Grad,
        record: impl FnOnce(&mut Workspace, &mut wgpu::CommandEncoder, LossOut<'_>) -> Result<()>,
    ) -> Result<Loss<Tensor>> {
        let gpu = &self.gpu;
        let loss = alloc(gpu, loss_shape, DType::F32)?;
        let grad_tensor = match grad {
            Grad::New => Some(alloc(gpu, (self.rows, self.cols), self.dtype)?),
            Grad::None | Grad::InPlace => None,
        };
        let out = LossOut {
            loss: &loss,
            grad: match (grad, &grad_tensor) {
                (_, Some(g)) => GradOut::Into(g),
                (Grad::InPlace, _) => GradOut::InPlace,
                _ => GradOut::None,
            },
        };
        gpu.run_checked("a loss", |ws, enc| record(ws, enc, out))?;
        Ok(Loss::new(loss, grad_tensor))
    }
}

/// How a convenience form allocates its outputs: [`Tensor::output`] or [`Tensor::pooled`].
pub(crate) type Alloc = fn(&Gpu, (usize, usize), DType) -> Result<Tensor>;

/// Class-index targets of cross-entropy in a GPU buffer: one i32 per row.
///
/// ```no_run
/// let gpu = xent::Gpu::new()?;
/// let targets = xent::Targets::from_i64(&gpu, &[3, 0, -100])?;
/// assert_eq!(targets.len(), 3);
/// # Ok::<(), xent::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Targets {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    /// The byte offset of the first target in `buffer` (0 but for [`Targets::from_buffer`]).
    offset: u64,
    len: usize,
}

impl Targets {
    /// Uploads i32 class indices.
    pub fn from_i32(gpu: &Gpu, data: &[i32]) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::Shape("no targets".into()));
        }
        let buffer = gpu.scoped("upload targets", || {
            Ok(gpu.storage_init("xent targets", data))
        })?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            offset: 0,
            len: data.len(),
        })
    }

    /// `len` i32 targets in `buffer`, a buffer of the caller's on `gpu`'s device, from byte
    /// `offset`: no copy. As for [`Tensor::from_buffer`], `offset` must be a multiple of the
    /// device's `min_storage_buffer_offset_alignment` and the targets must end inside the
    /// buffer; its usage must include `STORAGE` and `COPY_SRC`. Otherwise an error.
    pub fn from_buffer(gpu: &Gpu, buffer: wgpu::Buffer, offset: u64, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::Shape("no targets".into()));
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        check_region(gpu, &buffer, (offset, len as u64 * 4), usage)?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            offset,
            len,
        })
    }

    /// Uploads i64 class indices (PyTorch's integer type), converted on the host; a value
    /// outside the i32 range is an error naming its row.
    pub fn from_i64(gpu: &Gpu, data: &[i64]) -> Result<Self> {
        let narrow = data
            .iter()
            .enumerate()
            .map(|(row, &v)| {
                i32::try_from(v).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "target {v} at row {row} does not fit in an i32"
                    ))
                })
            })
            .collect::<Result<Vec<i32>>>()?;
        Self::from_i32(gpu, &narrow)
    }

    /// Number of targets (rows).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: there is at least one target.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Reads the targets back.
    pub fn to_vec(&self) -> Result<Vec<i32>> {
        self.gpu.read(&self.buffer, self.offset, self.len)
    }

    /// The context the targets live in.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The underlying buffer of i32 values; the targets start at byte [`Targets::offset`].
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The byte offset of the first target in [`Targets::buffer`]: 0 but for targets made by
    /// [`Targets::from_buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The targets' place in their buffer.
    pub(crate) fn region(&self) -> Region<'_> {
        Region {
            buffer: &self.buffer,
            offset: self.offset,
        }
    }
}

/// Errors unless `bytes` bytes from byte `offset` lie inside `buffer`, `offset` is a multiple
/// of the device's storage-binding offset alignment (so that every binding window of the data
/// lies where it would in a buffer of its own, in the same element offset from an aligned
/// start) and the buffer's usage includes `usage`: for the tensors and targets over a
/// caller's buffer.
fn check_region(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    (offset, bytes): (u64, u64),
    usage: wgpu::BufferUsages,
) -> Result<()> {
    let align = u64::from(gpu.inner.limits.min_storage_buffer_offset_alignment);
    if offset % align != 0 {
        return Err(Error::InvalidArgument(format!(
            "offset {offset} is not a multiple of {align} bytes"
        )));
    }
    let size = buffer.size();
    if offset.checked_add(bytes).is_none_or(|end| end > size) {
        return Err(Error::InvalidArgument(format!(
            "{bytes} bytes from byte {offset} do not fit a buffer of {size}"
        )));
    }
    if !buffer.usage().contains(usage) {
        return Err(Error::InvalidArgument(format!(
            "the buffer's usage {:?} lacks {:?}",
            buffer.usage(),
            usage.difference(buffer.usage())
        )));
    }
    Ok(())
}
