//! Softmax regression (the seed article's) trained in [burn](https://burn.dev) on the red Wine
//! Quality data (11 features, 6 classes), twice from the same start: once with burn's own
//! `CrossEntropyLoss` (log-softmax, gather, mean: a graph of several kernels), once with
//! xent's fused cross-entropy on the same burn tensors (`xent::burn::cross_entropy`: loss and
//! gradient in one pass, on burn's buffers, backward through burn's autodiff). Full-batch
//! gradient descent, on one wgpu device shared by burn and xent. Prints both loss curves, the
//! largest difference between them and the time per step of each.
//!
//! Run: `cargo run --release --features burn --example burn_training`

use std::error::Error;
use std::time::Instant;

#[path = "common/wine.rs"]
mod wine;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use xent::CrossEntropyOptions;

const STEPS: usize = 300;
const LEARNING_RATE: f32 = 0.5;
const REPORT_EVERY: usize = 50;

/// The model's weights `W` (`f × c`) and biases `b` (`c`): logits `X·W + b`.
#[derive(Clone)]
struct Params {
    w: Tensor<2>,
    b: Tensor<1>,
}

impl Params {
    fn require_grad(self) -> Self {
        Self {
            w: self.w.require_grad(),
            b: self.b.require_grad(),
        }
    }

    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.w.clone()) + self.b.clone().unsqueeze()
    }
}

/// Which loss a run trains with.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    Burn,
    Xent,
}

/// `steps` steps of gradient descent from `start`; the loss of every step and the mean time
/// per step (the loss read back every step in both runs).
fn train(
    loss: Loss,
    start: &Params,
    (x, y): (&Tensor<2>, &Tensor<1, Int>),
    steps: usize,
) -> Result<(Vec<f32>, f64), Box<dyn Error>> {
    let burn_loss = CrossEntropyLossConfig::new().init(&x.device());
    let opts = CrossEntropyOptions::default();
    let mut p = start.clone().require_grad();
    let mut curve = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for _ in 0..steps {
        let logits = p.logits(x.clone());
        let value = match loss {
            Loss::Burn => burn_loss.forward(logits, y.clone()),
            Loss::Xent => xent::burn::cross_entropy(logits, y.clone(), None, &opts)?,
        };
        let grads = value.backward();
        let step = |t: Tensor<2>| {
            let g = t.grad(&grads).expect("a gradient");
            Tensor::from_inner(t.inner() - g * LEARNING_RATE).require_grad()
        };
        let step1 = |t: Tensor<1>| {
            let g = t.grad(&grads).expect("a gradient");
            Tensor::from_inner(t.inner() - g * LEARNING_RATE).require_grad()
        };
        p = Params {
            w: step(p.w),
            b: step1(p.b),
        };
        curve.push(value.into_scalar::<f32>());
    }
    Ok((curve, t0.elapsed().as_secs_f64() / steps as f64))
}

fn main() -> Result<(), Box<dyn Error>> {
    let (train_set, _, f, c) = wine::load();
    let (gpu, device) = xent::burn::open(Default::default())?;
    println!("device: {}", gpu.describe());
    let device = device.autodiff();
    device.seed(7);
    let n = train_set.n();
    let x = Tensor::<2>::from_data(TensorData::new(train_set.x.clone(), [n, f]), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(train_set.y.clone(), [n]), &device);
    let start = Params {
        w: Tensor::random([f, c], Distribution::Normal(0.0, 0.1), &device),
        b: Tensor::zeros([c], &device),
    };

    // A few warm-up steps each, so that neither time includes compiling kernels.
    let run = |loss| -> Result<(Vec<f32>, f64), Box<dyn Error>> {
        train(loss, &start, (&x, &y), 3)?;
        train(loss, &start, (&x, &y), STEPS)
    };
    let (burn_curve, burn_step) = run(Loss::Burn)?;
    let (xent_curve, xent_step) = run(Loss::Xent)?;

    println!("{n} wines, {f} features, {c} classes, learning rate {LEARNING_RATE}");
    println!("{:>5}  {:>12}  {:>12}", "step", "burn CE", "xent CE");
    for s in (0..STEPS).step_by(REPORT_EVERY).chain([STEPS - 1]) {
        println!("{s:>5}  {:>12.7}  {:>12.7}", burn_curve[s], xent_curve[s]);
    }
    let diff = burn_curve
        .iter()
        .zip(&xent_curve)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("largest difference between the curves: {diff:.2e}");
    println!(
        "time per step: burn's CrossEntropyLoss {:.3} ms, xent {:.3} ms",
        burn_step * 1e3,
        xent_step * 1e3
    );
    if diff > 1e-5 {
        return Err(format!("the loss curves differ by {diff:.2e} (> 1e-5)").into());
    }
    Ok(())
}
