//! Linear cross-entropy on the CPU (SPEC.md §2): rows in chunks, each chunk's logits by
//! `matrixmultiply`'s f32 products, its loss and gradient by the fused cross-entropy's own
//! row code (src/cpu/loss.rs), then `∂L/∂h` and `∂L/∂W` by two more products.

use crate::Result;
use crate::cpu::loss::{class_denominator, class_losses, finish, row_extras};
use crate::options::{
    Linear, LinearCrossEntropyOptions, LinearLoss, Target, check_len, check_targets, class_indices,
    rows_of,
};

/// Linear cross-entropy of the hidden states `hidden` (rows of `hidden_size`) through the
/// layer `head` (`weight` `V × H`, `bias` `V`) against class indices, with optional class
/// weights: the loss of the logits `hidden·weightᵀ + bias` and the gradients the options ask
/// for, the logits never held whole (at most one chunk of rows of them, and its gradient).
/// Same options, results and errors as
/// [`Tensor::linear_cross_entropy`](crate::Tensor::linear_cross_entropy).
///
/// ```
/// use xent::{Linear, LinearCrossEntropyOptions, Target};
/// let h = [0.5, -1.0, 2.0, 0.0];                        // 2 rows, H = 2
/// let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];               // V = 3 classes
/// let head = Linear { weight: &w[..], bias: None };
/// let opts = LinearCrossEntropyOptions::default().with_grads();
/// let out = xent::cpu::linear_cross_entropy(&h, 2, head, Target::I32(&[2, 0]), None, &opts)?;
/// assert_eq!(out.grad_weight.unwrap().len(), 6);
/// # Ok::<(), xent::Error>(())
/// ```
pub fn linear_cross_entropy(
    hidden: &[f32],
    hidden_size: usize,
    head: Linear<'_, [f32]>,
    target: Target<'_>,
    class_weight: Option<&[f32]>,
    opts: &LinearCrossEntropyOptions,
) -> Result<LinearLoss<Vec<f32>>> {
    opts.validate()?;
    let hs = hidden_size;
    let n = rows_of(hidden.len(), hs)?;
    let v = rows_of(head.weight.len(), hs)?;
    check_len("bias", head.bias.map(<[f32]>::len), v)?;
    check_len("class weights", class_weight.map(<[f32]>::len), v)?;
    let t = class_indices(target, n, ("linear cross-entropy", "hidden states"))?;
    let ce = &opts.loss;
    check_targets(&t, ce.ignore_index, v)?;
    let w = |c: usize| class_weight.map_or(1.0, |w| f64::from(w[c]));
    let (den, scale) = class_denominator(&t, &w, ce);
    let any_grad = opts.grad_input || opts.grad_weight || opts.grad_bias;
    let chunk = opts.chunk_rows_for(n, v, if any_grad { 2 } else { 1 }, n);
    let mut logits = vec![0.0f32; chunk * v];
    let mut g = vec![0.0f32; if any_grad { chunk * v } else { 0 }];
    let mut dh = vec![0.0f32; if opts.grad_input { n * hs } else { 0 }];
    let mut dw = vec![0.0f32; if opts.grad_weight { v * hs } else { 0 }];
    let mut db = vec![0.0f32; if opts.grad_bias { v } else { 0 }];
    let mut losses = Vec::with_capacity(n);
    let (mut z_loss, mut entropy) = (Vec::new(), Vec::new());
    for r0 in (0..n).step_by(chunk) {
        let rows = chunk.min(n - r0);
        let h = &hidden[r0 * hs..(r0 + rows) * hs];
        let x = &mut logits[..rows * v];
        for row in x.chunks_mut(v) {
            match head.bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        // x = h·Wᵀ + x: Wᵀ's (k, j) is W[j·H + k].
        product((rows, hs, v), (h, hs, 1), (head.weight, 1, hs), 1.0, x);
        let t = &t[r0..r0 + rows];
        let g = &mut g[..if any_grad { rows * v } else { 0 }];
        losses.extend(class_losses(x, v, t, class_weight, ce, scale, g));
        let ignored = |i: usize| t[i] == ce.ignore_index;
        let (z, e) = row_extras(x, v, &ignored, ce);
        z_loss.extend(z.unwrap_or_default());
        entropy.extend(e.unwrap_or_default());
        if opts.grad_input {
            let dh = &mut dh[r0 * hs..(r0 + rows) * hs];
            product((rows, v, hs), (g, v, 1), (head.weight, hs, 1), 0.0, dh);
        }
        if opts.grad_weight {
            // ∂L/∂W += Gᵀ·h: Gᵀ's (i, k) is G[k·V + i]; the chunks in order.
            let beta = if r0 == 0 { 0.0 } else { 1.0 };
            product((v, rows, hs), (g, 1, v), (h, hs, 1), beta, &mut dw);
        }
        if opts.grad_bias {
            for row in g.chunks(v) {
                db.iter_mut().zip(row).for_each(|(d, &gc)| *d += gc);
            }
        }
    }
    let out = finish(&losses, den, Vec::<f32>::new(), ce.reduction);
    Ok(LinearLoss {
        loss: out.loss,
        grad_input: opts.grad_input.then_some(dh),
        grad_weight: opts.grad_weight.then_some(dw),
        grad_bias: opts.grad_bias.then_some(db),
        z_loss: ce.z_loss_output.then_some(z_loss),
        entropy: ce.entropy_output.then_some(entropy),
    })
}

/// `c = a·b + beta·c` for `a` of `m × k` and `b` of `k × n`, each given with its row and
/// column strides, `c` row-major `m × n`.
pub(crate) fn product(
    (m, k, n): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    assert!(m * n <= c.len() && (m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len()));
    assert!(k == 0 || n == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len());
    let stride = |s: usize| s as isize;
    // SAFETY: the asserts above keep every element the strides reach inside its slice.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            stride(a_rs),
            stride(a_cs),
            b.as_ptr(),
            stride(b_rs),
            stride(b_cs),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}
