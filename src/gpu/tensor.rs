//! Row-major 2-D f32 tensors that live in GPU memory.

use std::sync::Arc;

use crate::gpu::context::Gpu;
use crate::gpu::workspace::Workspace;
use crate::options::{Grad, Loss};
use crate::{Error, Result};

/// A `rows × cols` f32 matrix in a GPU buffer, row-major.
///
/// Ops on tensors ([`Tensor::softmax`], ...) return tensors without any host round trip;
/// [`Tensor::to_vec`] reads one back. A 1-D vector is a tensor with one row.
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
    rows: usize,
    cols: usize,
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
        let bytes = Self::check_shape(gpu, rows, cols)?;
        if data.len() != rows * cols {
            return Err(Error::Shape(format!(
                "{} values given for a {rows}×{cols} tensor",
                data.len()
            )));
        }
        let buffer = gpu.allocate("upload", || {
            gpu.buffer_with("xent tensor", bytemuck::cast_slice(data), Self::USAGE)
        })?;
        debug_assert_eq!(buffer.size(), bytes);
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            rows,
            cols,
            _lease: None,
        })
    }

    /// A new `rows × cols` tensor filled with zeros.
    pub fn zeros(gpu: &Gpu, rows: usize, cols: usize) -> Result<Self> {
        let bytes = Self::check_shape(gpu, rows, cols)?;
        let buffer = gpu.allocate("allocate", || gpu.buffer("xent tensor", bytes, Self::USAGE))?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            rows,
            cols,
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
        (rows, cols): (usize, usize),
        fresh: impl FnOnce(&Gpu) -> Result<Self>,
        reuse: impl FnOnce(&Self) -> Result<()>,
    ) -> Result<Self> {
        let bytes = Self::check_shape(gpu, rows, cols)?;
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
            rows,
            cols,
        };
        if reused {
            reuse(&t)?;
        }
        Ok(t)
    }

    /// A pooled tensor for a result ([`Tensor::output`]'s NaN poisoning applies).
    pub(crate) fn pooled(gpu: &Gpu, rows: usize, cols: usize) -> Result<Self> {
        Self::pooled_or(
            gpu,
            (rows, cols),
            |gpu| Self::zeros(gpu, rows, cols),
            |_| Ok(()),
        )?
        .poisoned()
    }

    /// `data` in a pooled tensor: written through the staging pool into an idle buffer, or
    /// into a new one as it is created (on lavapipe, 4096 × 32 000 f32: 75 ms the first way,
    /// 300 ms the second, 600 ms through staging into a new buffer).
    pub(crate) fn upload_pooled(gpu: &Gpu, data: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let fresh = |gpu: &Gpu| Self::from_slice(gpu, data, rows, cols);
        Self::pooled_or(gpu, (rows, cols), fresh, |t| t.write(data))
    }

    /// A new tensor for a result: zeros, or NaN when the context was built with
    /// [`GpuOptions::poison_outputs`](crate::GpuOptions::poison_outputs).
    pub(crate) fn output(gpu: &Gpu, rows: usize, cols: usize) -> Result<Self> {
        Self::zeros(gpu, rows, cols)?.poisoned()
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

    fn check_shape(gpu: &Gpu, rows: usize, cols: usize) -> Result<u64> {
        if rows == 0 || cols == 0 {
            return Err(Error::Shape(format!("empty tensor ({rows}×{cols})")));
        }
        let bytes = (rows as u64)
            .checked_mul(cols as u64)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| Error::Shape(format!("{rows}×{cols} overflows")))?;
        let limit = gpu.inner.limits.max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge { bytes, limit });
        }
        if rows * cols > u32::MAX as usize {
            return Err(Error::Shape(format!(
                "{rows}×{cols} has more than 2^32 - 1 elements"
            )));
        }
        Ok(bytes)
    }

    /// Reads the tensor back (row-major), through the context's pooled staging buffers.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.gpu.read(&self.buffer, 0, self.len())
    }

    /// Reads the tensor back into `out` (`rows × cols` values, row-major): no allocation, so
    /// a loop that reads into the same slice runs at the speed of the copies.
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
        self.gpu.read_into(&self.buffer, 0, out)
    }

    /// Overwrites the whole tensor with `data` (same length), through the context's pooled
    /// staging buffers; the copy is submitted before anything submitted later.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape(format!(
                "{} values written to a {}×{} tensor",
                data.len(),
                self.rows,
                self.cols
            )));
        }
        self.gpu
            .write_chunks(&self.buffer, 0, bytemuck::cast_slice(data))
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (elements per row).
    pub fn cols(&self) -> usize {
        self.cols
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
    /// their own passes around xent's.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Errors unless `out` lives on the same context and has `rows × cols`.
    pub(crate) fn check_out(&self, out: &Tensor, rows: usize, cols: usize) -> Result<()> {
        self.gpu.same(&out.gpu)?;
        if out.rows != rows || out.cols != cols {
            return Err(Error::Shape(format!(
                "output is {}×{}, expected {rows}×{cols}",
                out.rows, out.cols
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
        self.check_out(out.loss, loss_shape.0, loss_shape.1)?;
        if let GradOut::Into(g) = out.grad {
            self.check_out(g, self.rows, self.cols)?;
            if g.buffer == self.buffer {
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
        let loss = alloc(gpu, loss_shape.0, loss_shape.1)?;
        let grad_tensor = match grad {
            Grad::New => Some(alloc(gpu, self.rows, self.cols)?),
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
        let mut ws = Workspace::new(gpu);
        let mut encoder = gpu.encoder();
        record(&mut ws, &mut encoder, out)?;
        gpu.submit("a loss", encoder)?;
        ws.check_targets().map_err(|e| match e {
            Error::Target {
                row,
                value,
                classes,
                ..
            } => Error::Target {
                batch: None,
                row,
                value,
                classes,
            },
            e => e,
        })?;
        Ok(Loss {
            loss,
            grad: grad_tensor,
        })
    }
}

/// How a convenience form allocates its outputs: [`Tensor::output`] or [`Tensor::pooled`].
pub(crate) type Alloc = fn(&Gpu, usize, usize) -> Result<Tensor>;

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
            len: data.len(),
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
        self.gpu.read(&self.buffer, 0, self.len)
    }

    /// The context the targets live in.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The underlying buffer of i32 values.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}
