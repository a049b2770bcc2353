//! Shared test helpers: the GPU contexts (both cross-lane paths), seeded inputs and one
//! mismatch reporter.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use xent::{Backend, Cpu, CrossLane, DType, Gpu, GpuOptions};

/// `true` when the test must not skip for want of an adapter.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Test contexts fill every result xent allocates with NaN first, so unwritten elements show.
fn open(cross_lane: CrossLane) -> Option<Gpu> {
    match Gpu::with_options(GpuOptions {
        cross_lane,
        poison_outputs: true,
        ..Default::default()
    }) {
        Ok(gpu) => Some(gpu),
        Err(e @ xent::Error::InvalidArgument(_)) => {
            eprintln!("skipping the {cross_lane:?} path: {e}");
            None
        }
        Err(e) if in_ci() => panic!("CI=true but no GPU adapter: {e}"),
        Err(e) => {
            eprintln!("skipping GPU checks: {e}");
            None
        }
    }
}

/// Every cross-lane path this machine's adapter can run, each context opened once per test
/// binary: workgroup memory always, subgroups where the device has them. Empty (and a
/// skip) only outside CI.
pub fn gpus() -> Vec<(&'static str, Gpu)> {
    static GPUS: OnceLock<Vec<(&'static str, Gpu)>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let mut all = Vec::new();
        if let Some(g) = open(CrossLane::Workgroup) {
            all.push(("workgroup", g));
            if let Some(g) = open(CrossLane::Subgroup) {
                all.push(("subgroup", g));
            }
        }
        if let Some((_, g)) = all.first() {
            eprintln!("GPU: {}", g.describe());
        }
        all
    })
    .clone()
}

/// The default context (the first of [`gpus`]).
pub fn gpu() -> Option<Gpu> {
    gpus().into_iter().next().map(|(_, g)| g)
}

/// Contexts with capped limits (to exercise chunking and 2-D grids on small inputs), one
/// per cross-lane path the adapter has, results NaN-poisoned; empty without an adapter.
pub fn gpus_with(options: GpuOptions) -> Vec<(CrossLane, Gpu)> {
    if gpu().is_none() {
        return Vec::new();
    }
    [CrossLane::Workgroup, CrossLane::Subgroup]
        .into_iter()
        .filter_map(|cross_lane| {
            let g = Gpu::with_options(GpuOptions {
                cross_lane,
                poison_outputs: true,
                ..options.clone()
            });
            g.ok().map(|g| (cross_lane, g))
        })
        .collect()
}

/// Every path, labelled: the CPU and each GPU cross-lane path of [`gpus`].
pub fn backends() -> Vec<(String, Box<dyn Backend>)> {
    let mut all: Vec<(String, Box<dyn Backend>)> = vec![("cpu".into(), Box::new(Cpu))];
    for (name, g) in gpus() {
        all.push((format!("gpu/{name}"), Box::new(g)));
    }
    all
}

/// Central differences (step 1e-2) of a float64 function of f32 inputs.
pub fn finite_differences(x: &[f32], f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let h = 1e-2f32;
            let mut a = x.to_vec();
            a[i] += h;
            let mut b = x.to_vec();
            b[i] -= h;
            (f(&a) - f(&b)) / f64::from(a[i] - b[i])
        })
        .collect()
}

/// A .npy file by hand: any dtype string, order, shape (even one no memory could hold) and
/// raw data.
pub fn npy_bytes(descr: &str, fortran: bool, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard-normal-ish values (sum of uniforms), scaled.
pub fn normal(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0;
            s * scale * 1.7
        })
        .collect()
}

/// Logits with the awkward rows SPEC.md names mixed in: every 5th row offset by ±1e4, every
/// 7th row constant, every 11th row with some `-inf` entries (never all of them).
pub fn awkward_logits(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = normal(rng, rows * cols, 4.0);
    for (r, row) in x.chunks_mut(cols).enumerate() {
        if r % 5 == 3 {
            let off = if r % 2 == 0 { 1e4 } else { -1e4 };
            row.iter_mut().for_each(|v| *v += off);
        }
        if r % 7 == 5 {
            let c = row[0];
            row.iter_mut().for_each(|v| *v = c);
        }
        if r % 11 == 2 && cols > 1 {
            for c in (0..cols).step_by(3) {
                if c != cols - 1 {
                    row[c] = f32::NEG_INFINITY;
                }
            }
        }
    }
    x
}

/// Checks `got` against `want` elementwise: `|got - want| ≤ atol + rtol·|want|`, NaN only
/// where NaN is expected, infinities equal. Panics with a report of how many elements
/// mismatch, the worst ones and their positions.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            let err = (g - w).abs();
            worst = worst.max(err / (atol + rtol * w.abs()));
            err <= atol + rtol * w.abs()
        };
        if !ok {
            bad.push((i, g, w));
        }
    }
    if !bad.is_empty() {
        let shown: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, g, w)| format!("[{i}] got {g:e} want {w:e}"))
            .collect();
        panic!(
            "{what}: {} of {} elements mismatch (rtol {rtol:e}, atol {atol:e}, worst ratio {worst:.2}): {}",
            bad.len(),
            got.len(),
            shown.join(", ")
        );
    }
}

/// [`assert_close`] with a tolerance of `tol · scale[i]` for element `i`: for results whose
/// error follows another quantity's size (a gradient `p - q` is as exact as `p` and `q`).
#[track_caller]
pub fn assert_scaled(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(scale.len(), want.len(), "{what}: scale length");
    let got: Vec<f32> = got
        .iter()
        .zip(scale)
        .map(|(&g, &s)| (f64::from(g) / s) as f32)
        .collect();
    let want: Vec<f64> = want.iter().zip(scale).map(|(w, s)| w / s).collect();
    assert_close(what, &got, &want, 0.0, tol);
}

/// The element types a test runs every op at.
pub const HALVES: [DType; 2] = [DType::F16, DType::Bf16];

/// `x` rounded to `dtype` (the inputs a half-precision test gives both the kernel and the
/// reference) and its bits.
pub fn rounded(x: &[f32], dtype: DType) -> (Vec<f32>, Vec<u16>) {
    let bits: Vec<u16> = x
        .iter()
        .map(|&v| match dtype {
            DType::Bf16 => half::bf16::from_f32(v).to_bits(),
            _ => half::f16::from_f32(v).to_bits(),
        })
        .collect();
    let values = bits.iter().map(|&b| half_value(b, dtype)).collect();
    (values, bits)
}

fn half_value(bits: u16, dtype: DType) -> f32 {
    match dtype {
        DType::Bf16 => half::bf16::from_bits(bits).to_f32(),
        _ => half::f16::from_bits(bits).to_f32(),
    }
}

/// The spacing of `dtype`'s values at `|v|` (v a value of the type): the step to the next
/// one up in magnitude.
fn half_ulp(v: f32, dtype: DType) -> f64 {
    let (_, bits) = rounded(&[v.abs()], dtype);
    f64::from(half_value(bits[0] + 1, dtype)) - f64::from(v.abs())
}

/// Checks results of a half-precision type (widened to f32) against float64 answers
/// (SPEC.md §4): each within one unit in the last place of `dtype` of the answer rounded to
/// it, plus the f32 budget `1e-5·|want| + atol`; NaN only where NaN is expected, infinities
/// where the answer rounds to one.
#[track_caller]
pub fn assert_half(what: &str, got: &[f32], want: &[f64], dtype: DType, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = dtype.round(w as f32);
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if r.is_infinite() || g.is_infinite() {
            g == r
        } else {
            let err = (f64::from(g) - f64::from(r)).abs();
            err <= half_ulp(r, dtype) + 1e-5 * w.abs() + atol
        };
        if !ok {
            bad.push(format!("[{i}] got {g:e} want {w:e} ({dtype}: {r:e})"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements mismatch: {}",
        bad.len(),
        got.len(),
        bad[..bad.len().min(8)].join(", ")
    );
}

/// NaN-filled output, so elements a kernel never wrote show up.
pub fn poison(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Float64 references, written independently of both paths.
pub mod reference {
    /// Row-wise log-softmax of `x / t` in f64.
    pub fn log_softmax(x: &[f32], cols: usize, t: f64) -> Vec<f64> {
        log_softmax64(&widen(x), cols, t)
    }

    /// [`log_softmax`] of f64 logits.
    pub fn log_softmax64(x: &[f64], cols: usize, t: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let lse = logsumexp_row(row, t);
            out.extend(row.iter().map(|&v| v / t - lse));
        }
        out
    }

    pub fn softmax(x: &[f32], cols: usize, t: f64) -> Vec<f64> {
        log_softmax(x, cols, t).into_iter().map(f64::exp).collect()
    }

    pub fn logsumexp(x: &[f32], cols: usize, t: f64) -> Vec<f64> {
        logsumexp64(&widen(x), cols, t)
    }

    /// [`logsumexp`] of f64 logits.
    pub fn logsumexp64(x: &[f64], cols: usize, t: f64) -> Vec<f64> {
        x.chunks(cols).map(|row| logsumexp_row(row, t)).collect()
    }

    /// Logits as a softcap `c` reads them, `c·tanh(x / c)`, and the slope `1 − tanh²(x / c)`
    /// of each.
    pub fn softcap(x: &[f32], c: f64) -> (Vec<f64>, Vec<f64>) {
        softcap64(&widen(x), c)
    }

    /// [`softcap`] of f64 logits.
    pub fn softcap64(x: &[f64], c: f64) -> (Vec<f64>, Vec<f64>) {
        let t: Vec<f64> = x.iter().map(|&v| (v / c).tanh()).collect();
        (
            t.iter().map(|t| c * t).collect(),
            t.iter().map(|t| 1.0 - t * t).collect(),
        )
    }

    /// The float64 reference of SPEC.md §2's losses: row-wise log-softmax and logsumexp of
    /// the logits as the losses read them (each x as `c·tanh(x / c)` under a softcap c), and
    /// the slope `∂x'/∂x` of each (1 without a softcap).
    pub fn read_logits(
        x: &[f64],
        cols: usize,
        softcap: Option<f32>,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (y, slope) = match softcap {
            Some(c) => softcap64(x, f64::from(c)),
            None => (x.to_vec(), vec![1.0; x.len()]),
        };
        let lp = log_softmax64(&y, cols, 1.0);
        (lp, logsumexp64(&y, cols, 1.0), slope)
    }

    /// Cross-entropy against class indices (SPEC.md §2), written from the formulas as PyTorch
    /// states them: per-row losses, the mean's denominator and the gradient of the *sum* of
    /// the losses.
    pub fn cross_entropy(
        x: &[f64],
        cols: usize,
        t: &[i64],
        w: Option<&[f32]>,
        o: &xent::CrossEntropyOptions,
    ) -> (Vec<f64>, f64, Vec<f64>) {
        let (lp, lse, slope) = read_logits(x, cols, o.softcap);
        let wc = |c: usize| w.map_or(1.0, |w| f64::from(w[c]));
        let w_sum: f64 = (0..cols).map(wc).sum();
        let (eps, z, k) = (
            f64::from(o.label_smoothing),
            f64::from(o.z_loss),
            cols as f64,
        );
        let mut losses = Vec::new();
        let mut grad = Vec::new();
        let mut den = 0.0;
        for (r, &y) in t.iter().enumerate() {
            let lp = &lp[r * cols..(r + 1) * cols];
            if y == o.ignore_index {
                losses.push(0.0);
                grad.extend(std::iter::repeat_n(0.0, cols));
                continue;
            }
            let y = y as usize;
            den += wc(y);
            // PyTorch adds the smoothing term only when ε > 0 (else -inf logits would give 0·inf).
            let smooth = if eps > 0.0 {
                eps / k * (0..cols).map(|c| wc(c) * -lp[c]).sum::<f64>()
            } else {
                0.0
            };
            losses.push((1.0 - eps) * wc(y) * -lp[y] + smooth + z * lse[r] * lse[r]);
            for (c, lp) in lp.iter().enumerate() {
                let p = lp.exp();
                let hot = if c == y { 1.0 } else { 0.0 };
                let g = (1.0 - eps) * wc(y) * (p - hot)
                    + eps / k * (w_sum * p - wc(c))
                    + 2.0 * z * lse[r] * p;
                grad.push(g * slope[r * cols + c]);
            }
        }
        (losses, den, grad)
    }

    pub fn widen(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| f64::from(v)).collect()
    }

    fn logsumexp_row(row: &[f64], t: f64) -> f64 {
        let y: Vec<f64> = row.iter().map(|&v| v / t).collect();
        if y.iter().any(|v| v.is_nan()) {
            return f64::NAN;
        }
        let m = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            // All -inf: logsumexp is -inf and softmax 0/0 (NaN), as PyTorch.
            return f64::NEG_INFINITY;
        }
        m + y.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    }
}

/// A half type the CPU's typed functions take, with the conversions a test needs.
pub trait HalfElement: xent::Element {
    /// The type's value nearest `v`.
    fn from_f32(v: f32) -> Self;
    /// The value, exactly.
    fn to_f32(self) -> f32;
}

impl HalfElement for half::f16 {
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

impl HalfElement for half::bf16 {
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// `x` as elements of `E` (exact for values of the type).
pub fn as_half<E: HalfElement>(x: &[f32]) -> Vec<E> {
    x.iter().map(|&v| E::from_f32(v)).collect()
}

/// Elements of `E` widened to f32.
pub fn widened<E: HalfElement>(x: &[E]) -> Vec<f32> {
    x.iter().map(|&v| v.to_f32()).collect()
}
