//! Option types shared by the GPU and CPU paths.

use crate::{Error, Result};

/// Options of softmax, log-softmax and logsumexp.
///
/// `temperature` divides the logits first: `softmax(x / T)`, `log_softmax(x / T)` and
/// `logsumexp(x / T)`. It must be finite and positive. (PyTorch has no temperature argument;
/// `T = 1`, the default, is PyTorch's function exactly.)
///
/// ```
/// let opts = xent::SoftmaxOptions::default().with_temperature(2.0);
/// assert_eq!(opts.temperature, 2.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxOptions {
    /// Divides every logit before the softmax. Default 1.
    pub temperature: f32,
}

impl Default for SoftmaxOptions {
    fn default() -> Self {
        Self { temperature: 1.0 }
    }
}

impl SoftmaxOptions {
    /// These options with another temperature.
    pub fn with_temperature(self, temperature: f32) -> Self {
        Self { temperature }
    }

    /// An error unless the temperature is finite and positive.
    pub fn validate(&self) -> Result<()> {
        if self.temperature.is_finite() && self.temperature > 0.0 {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "temperature must be finite and > 0, got {}",
                self.temperature
            )))
        }
    }
}

/// Which row-wise output a softmax-family kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// `exp(y_i - m) / d`.
    Softmax,
    /// `y_i - m - log d`.
    LogSoftmax,
}

/// The elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `min(x, 0) - log1p(e^-|x|)`.
    LogSigmoid,
    /// `ln(p / (1 - p))`, the inverse of the sigmoid.
    Logit,
}

/// Number of rows of a row-major buffer of `len` values with `cols` per row; an error for
/// empty input or a length that is not a whole number of rows.
pub(crate) fn rows_of(len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || len == 0 {
        return Err(Error::Shape(format!(
            "empty input ({len} values, {cols} columns)"
        )));
    }
    if !len.is_multiple_of(cols) {
        return Err(Error::Shape(format!(
            "{len} values are not a whole number of rows of {cols}"
        )));
    }
    Ok(len / cols)
}

/// An error for empty elementwise input.
pub(crate) fn non_empty(len: usize) -> Result<()> {
    if len == 0 {
        Err(Error::Shape("empty input".into()))
    } else {
        Ok(())
    }
}
