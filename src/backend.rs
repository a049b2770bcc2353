//! One slice-in / `Vec`-out interface over both paths.

use crate::Result;
use crate::cpu::{self, Cpu};
use crate::gpu::{Gpu, Tensor};
use crate::options::{Activation, SoftmaxKind, SoftmaxOptions, non_empty, rows_of};

/// The ops on host slices, implemented by [`Cpu`] and [`Gpu`] with the same results (to
/// floating-point tolerance). Row-wise ops take the row length `cols`; the number of rows is
/// `x.len() / cols`. On the GPU every call uploads, runs and reads back; keep data on the
/// GPU with [`Tensor`] instead when calls follow each other.
///
/// ```no_run
/// use xent::{Backend, Cpu, Gpu, SoftmaxOptions};
/// let x = [1.0f32, 2.0, 3.0, 4.0, 1.0, 1.0];
/// let cpu = Cpu.softmax(&x, 3, &SoftmaxOptions::default())?;
/// let gpu = Gpu::new()?.softmax(&x, 3, &SoftmaxOptions::default())?;
/// assert!(cpu.iter().zip(&gpu).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok::<(), xent::Error>(())
/// ```
pub trait Backend {
    /// Row-wise softmax or log-softmax.
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>>;
    /// Row-wise logsumexp, one value per row.
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>>;
    /// An elementwise activation.
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>>;

    /// Row-wise softmax.
    fn softmax(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        self.softmax_kind(x, cols, SoftmaxKind::Softmax, opts)
    }
    /// Row-wise log-softmax.
    fn log_softmax(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        self.softmax_kind(x, cols, SoftmaxKind::LogSoftmax, opts)
    }
    /// Elementwise sigmoid.
    fn sigmoid(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::Sigmoid)
    }
    /// Elementwise log-sigmoid.
    fn log_sigmoid(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::LogSigmoid)
    }
    /// Elementwise logit.
    fn logit(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.activation(x, Activation::Logit)
    }
}

impl Backend for Cpu {
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        cpu::softmax(x, cols, kind, opts)
    }
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        cpu::logsumexp(x, cols, opts)
    }
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>> {
        cpu::activation(x, act)
    }
}

impl Backend for Gpu {
    fn softmax_kind(
        &self,
        x: &[f32],
        cols: usize,
        kind: SoftmaxKind,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        opts.validate()?;
        let rows = rows_of(x.len(), cols)?;
        let t = Tensor::from_slice(self, x, rows, cols)?;
        let out = Tensor::zeros(self, rows, cols)?;
        t.softmax_into(&out, kind, opts)?;
        out.to_vec()
    }
    fn logsumexp(&self, x: &[f32], cols: usize, opts: &SoftmaxOptions) -> Result<Vec<f32>> {
        opts.validate()?;
        let rows = rows_of(x.len(), cols)?;
        Tensor::from_slice(self, x, rows, cols)?
            .logsumexp(opts)?
            .to_vec()
    }
    fn activation(&self, x: &[f32], act: Activation) -> Result<Vec<f32>> {
        non_empty(x.len())?;
        Tensor::from_slice(self, x, 1, x.len())?
            .activation(act)?
            .to_vec()
    }
}
