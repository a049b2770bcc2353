//! The CPU path's inner loops: f32 math without branches (so that loops over slices
//! vectorise), compiled once per instruction set by `multiversion` — AVX-512, AVX2 + FMA,
//! SSE4.1 on x86-64, NEON on ARM, plain code elsewhere — and the best the CPU has picked at
//! run time ([`simd_path`] names it). Sums of many terms run in 16 f32 lanes over blocks of
//! [`BLOCK`] elements, each block's total added in f64: the f32 error of a block stays
//! that of 64 terms, however long the row.

use multiversion::multiversion;

/// Elements whose f32 lane sums are added into the f64 total at once.
const BLOCK: usize = 1024;

/// Lanes of the f32 accumulators: a multiple of every vector width (4, 8, 16).
const LANES: usize = 16;

/// The instruction set the kernels run with on this CPU, for reports.
pub fn simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA";
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            return "SSE4.1";
        }
        "SSE2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// Whether the instruction set the enclosing multiversioned function was compiled for has
/// fused multiply-add (x86-64 with FMA, every aarch64): the `F` of the inline math below.
/// Without it [`fma`] is a product and a sum, where `f32::mul_add` would be a library call.
macro_rules! fused {
    () => {
        multiversion::target::target_cfg_f!(any(target_feature = "fma", target_arch = "aarch64"))
    };
}

/// `a·b + c`, rounded once where the instruction set has FMA (`F`), else twice.
#[inline(always)]
fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// `1.5·2^23`: adding and subtracting it rounds an f32 of magnitude below 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// 2^k for an integer `k` in [-252, 254], as two normal factors (2^k itself may be
/// subnormal or beyond f32).
#[inline(always)]
fn pow2(k: i32) -> (f32, f32) {
    let half = k >> 1;
    let factor = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    (factor(half), factor(k - half))
}

/// e^x to about 1 ulp (Cephes' expf: x = k·ln 2 + r, |r| ≤ ln 2 / 2, e^r by a polynomial),
/// subnormal results included; -inf → 0, +inf → +inf, NaN → NaN. k is read from the bits of
/// the rounded float (no float-to-int conversion, which does not vectorise everywhere).
#[inline(always)]
pub(crate) fn exp<const F: bool>(x: f32) -> f32 {
    let x = x.clamp(-104.0, 88.8);
    let rounded = fma::<F>(x, std::f32::consts::LOG2_E, ROUND);
    let k = rounded - ROUND;
    let r = fma::<F>(k, 2.121_944_4e-4, fma::<F>(k, -0.693_359_4, x));
    let r2 = r * r;
    let p = [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ]
    .into_iter()
    .fold(1.987_569_1e-4, |p, c| fma::<F>(p, r, c));
    let e = fma::<F>(p, r2, r + 1.0);
    let (a, b) = pow2(rounded.to_bits() as i32 - ROUND.to_bits() as i32);
    e * a * b
}

/// ln x to about 1 ulp (Cephes' logf: x = 2^e·f, f in [√½, √2), ln f by a polynomial in
/// f - 1), subnormal x included; 0 → -inf, +inf → +inf, negative or NaN → NaN.
#[inline(always)]
pub(crate) fn ln<const F: bool>(x: f32) -> f32 {
    // Subnormals scaled into the normal range first.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 16_777_216.0 } else { x };
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut f = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    // f in [0.5, 1): move it to [√½, √2).
    let low = f < std::f32::consts::FRAC_1_SQRT_2;
    e -= i32::from(low);
    f = if low { f + f } else { f } - 1.0;
    let z = f * f;
    let p = [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ]
    .into_iter()
    .fold(7.037_683_6e-2, |p, c| fma::<F>(p, f, c))
        * f
        * z;
    let e = e as f32 - if tiny { 24.0 } else { 0.0 };
    let y = fma::<F>(
        e,
        0.693_359_4,
        fma::<F>(-0.5, z, fma::<F>(e, -2.121_944_4e-4, p)) + f,
    );
    let special = if x == 0.0 {
        f32::NEG_INFINITY
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        f32::INFINITY
    };
    if x > 0.0 && x < f32::INFINITY {
        y
    } else {
        special
    }
}

/// ln(1 + y) for y > -1 without losing a small y's digits: ln(u)·y / (u - 1), u = 1 + y
/// rounded (the correction cancels u's rounding).
#[inline(always)]
pub(crate) fn ln_1p<const F: bool>(y: f32) -> f32 {
    let u = 1.0 + y;
    let d = u - 1.0;
    if d == 0.0 { y } else { ln::<F>(u) * (y / d) }
}

/// The largest element of `x` (from -FLT_MAX, as the shaders start; NaN is passed over).
#[multiversion(targets = "simd")]
pub(crate) fn max(x: &[f32]) -> f32 {
    max_in(x)
}

/// [`max`], inlined into the caller's instruction set.
#[inline(always)]
fn max_in(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return x.iter().fold(f32::MIN, |m, &v| m.max(v));
    }
    let mut acc = [f32::MIN; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = tail.iter().fold(f32::MIN, |m, &v| m.max(v));
    for v in acc {
        m = m.max(v);
    }
    m
}

/// d = Σ e^((x - m)·s) over `x`, `m` the largest element of `x` (from [`max`]), each term
/// also written into `out` (of the same length) when given. The terms of the maxima, 1 each,
/// are counted apart from the others' sum (as shaders/shared/md.wgsl keeps d - 1): a
/// confident row's d - 1 of 1e-7 keeps its digits in the f32 lanes.
#[multiversion(targets = "simd")]
pub(crate) fn exp_sum(x: &[f32], m: f32, s: f32, out: Option<&mut [f32]>) -> f64 {
    const F: bool = fused!();
    exp_sum_in::<F>(x, m, s, out)
}

/// [`exp_sum`], inlined into the caller's instruction set.
#[inline(always)]
fn exp_sum_in<const F: bool>(x: &[f32], m: f32, s: f32, mut out: Option<&mut [f32]>) -> f64 {
    if x.len() < LANES {
        // A short row: one f32 sum of the terms that are not the maxima's.
        let (mut rest, mut tops) = (0.0f32, 0.0f32);
        for (j, &v) in x.iter().enumerate() {
            let e = exp::<F>((v - m) * s);
            if let Some(o) = out.as_deref_mut() {
                o[j] = e;
            }
            if v == m {
                tops += 1.0;
            } else {
                rest += e;
            }
        }
        return f64::from(tops) + f64::from(rest);
    }
    let (mut rest, mut tops) = (0.0f64, 0.0f64);
    for (b, block) in x.chunks(BLOCK).enumerate() {
        let (mut acc, mut top) = ([0.0f32; LANES], [0.0f32; LANES]);
        let o = out
            .as_deref_mut()
            .map(|o| &mut o[b * BLOCK..b * BLOCK + block.len()]);
        match o {
            Some(o) => {
                let (oc, o_tail) = o.as_chunks_mut::<LANES>();
                let (xc, x_tail) = block.as_chunks::<LANES>();
                for (c, oc) in xc.iter().zip(oc) {
                    for i in 0..LANES {
                        let e = exp::<F>((c[i] - m) * s);
                        oc[i] = e;
                        let is_top = c[i] == m;
                        acc[i] += if is_top { 0.0 } else { e };
                        top[i] += if is_top { 1.0 } else { 0.0 };
                    }
                }
                for (o, &v) in o_tail.iter_mut().zip(x_tail) {
                    let e = exp::<F>((v - m) * s);
                    *o = e;
                    acc[0] += if v == m { 0.0 } else { e };
                    top[0] += if v == m { 1.0 } else { 0.0 };
                }
            }
            None => {
                let (xc, x_tail) = block.as_chunks::<LANES>();
                for c in xc {
                    for i in 0..LANES {
                        // A maximum's term (e^0 = 1, also where m is +inf) counted apart and
                        // multiplied out of the sum: a select of e here let the compiler move
                        // exp into a branch, 1.7× slower.
                        let t = if c[i] == m { 1.0 } else { 0.0 };
                        let e = exp::<F>(if t == 1.0 { 0.0 } else { (c[i] - m) * s });
                        acc[i] += e * (1.0 - t);
                        top[i] += t;
                    }
                }
                for &v in x_tail {
                    acc[0] += if v == m { 0.0 } else { exp::<F>((v - m) * s) };
                    top[0] += if v == m { 1.0 } else { 0.0 };
                }
            }
        }
        rest += f64::from(acc.iter().sum::<f32>());
        tops += f64::from(top.iter().sum::<f32>());
    }
    tops + rest
}

/// Whether every element of `x` is finite (no early exit: one vectorised pass).
#[multiversion(targets = "simd")]
pub(crate) fn all_finite(x: &[f32]) -> bool {
    let mut ok = [true; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            ok[i] &= c[i].is_finite();
        }
    }
    tail.iter().all(|v| v.is_finite()) && ok.iter().all(|&v| v)
}

/// (d, Σ e·(u - v), Σ e·v) over two finite rows of logits, with u = (x - mx)·s, v =
/// (y - my)·s, e = e^u and d = Σ e: the sums of KL(P‖Q) = Σ e·(u - v)/d - ln d + ln d_Q and
/// of H(P, Q) = -Σ e·v/d + ln d_Q (P, Q the rows' softmaxes at 1/s). The maxima's terms of d
/// are counted apart, as in [`exp_sum`].
#[multiversion(targets = "simd")]
pub(crate) fn exp_dots(x: &[f32], mx: f32, y: &[f32], my: f32, s: f32) -> (f64, f64, f64) {
    const F: bool = fused!();
    let (mut d, mut tops, mut a, mut b) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (xb, yb) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
        let mut acc = [[0.0f32; LANES]; 4];
        let (xc, x_tail) = xb.as_chunks::<LANES>();
        let (yc, y_tail) = yb.as_chunks::<LANES>();
        let mut add = |i: usize, xv: f32, yv: f32| {
            let u = (xv - mx) * s;
            let v = (yv - my) * s;
            let e = exp::<F>(u);
            let is_top = xv == mx;
            acc[0][i] += if is_top { 0.0 } else { e };
            acc[1][i] += if is_top { 1.0 } else { 0.0 };
            acc[2][i] += e * (u - v);
            acc[3][i] += e * v;
        };
        for (c, q) in xc.iter().zip(yc) {
            for i in 0..LANES {
                add(i, c[i], q[i]);
            }
        }
        for (&xv, &yv) in x_tail.iter().zip(y_tail) {
            add(0, xv, yv);
        }
        let sum = |l: &[f32; LANES]| f64::from(l.iter().sum::<f32>());
        d += sum(&acc[0]);
        tops += sum(&acc[1]);
        a += sum(&acc[2]);
        b += sum(&acc[3]);
    }
    (tops + d, a, b)
}

/// JS(P‖Q) in nats over two finite rows of logits, P and Q their softmaxes at 1/s with log
/// denominators `lx`, `ly`: Σ ½ (p·(lp - lm) + q·(lq - lm)), lm = ln ½(p + q), a term 0
/// where its probability is 0 (as shaders/info.wgsl's `terms`).
#[multiversion(targets = "simd")]
pub(crate) fn js_sum(
    x: &[f32],
    (mx, lx): (f32, f32),
    y: &[f32],
    (my, ly): (f32, f32),
    s: f32,
) -> f64 {
    const F: bool = fused!();
    let mut total = 0.0f64;
    for (xb, yb) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
        let mut acc = [0.0f32; LANES];
        let (xc, x_tail) = xb.as_chunks::<LANES>();
        let (yc, y_tail) = yb.as_chunks::<LANES>();
        let mut add = |i: usize, xv: f32, yv: f32| {
            let lp = (xv - mx) * s - lx;
            let lq = (yv - my) * s - ly;
            let (p, q) = (exp::<F>(lp), exp::<F>(lq));
            let lm = ln::<F>(0.5 * (p + q));
            let tp = if p == 0.0 { 0.0 } else { p * (lp - lm) };
            let tq = if q == 0.0 { 0.0 } else { q * (lq - lm) };
            acc[i] += 0.5 * (tp + tq);
        };
        for (c, q) in xc.iter().zip(yc) {
            for i in 0..LANES {
                add(i, c[i], q[i]);
            }
        }
        // The tail as one more vector, padded with logits whose probabilities are 0 (their
        // terms 0): short rows run vectorised too.
        if !x_tail.is_empty() {
            let (c, q) = (padded(x_tail), padded(y_tail));
            for i in 0..LANES {
                add(i, c[i], q[i]);
            }
        }
        total += f64::from(acc.iter().sum::<f32>());
    }
    total
}

/// `tail` (shorter than LANES) in a vector, the rest `f32::MIN`: a logit below every finite
/// row's by so much that its probability is 0.
#[inline(always)]
fn padded(tail: &[f32]) -> [f32; LANES] {
    let mut v = [f32::MIN; LANES];
    v[..tail.len()].copy_from_slice(tail);
    v
}

/// ln d of a softmax denominator in f32 ([`ln_of_sum`]), for the CPU's row paths: the bits
/// the row kernels' own [`ln_of_sum`] gives.
#[multiversion(targets = "simd")]
pub(crate) fn ln_denominator(d: f64) -> f64 {
    const F: bool = fused!();
    f64::from(ln_of_sum::<F>(d))
}

/// (Σ e, Σ e·u) with u = (x - m)·s and e = e^u; a term with e = 0 (an -inf logit) adds 0 to
/// the second sum.
/// The maxima's terms are counted apart, as in [`exp_sum`].
#[multiversion(targets = "simd")]
pub(crate) fn exp_sums2(x: &[f32], m: f32, s: f32) -> (f64, f64) {
    const F: bool = fused!();
    let (mut d, mut t) = (0.0f64, 0.0f64);
    for block in x.chunks(BLOCK) {
        let (mut a, mut top, mut b) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        let (xc, x_tail) = block.as_chunks::<LANES>();
        let mut add = |i: usize, v: f32| {
            let u = (v - m) * s;
            let e = exp::<F>(u);
            let is_top = v == m;
            a[i] += if is_top { 0.0 } else { e };
            top[i] += if is_top { 1.0 } else { 0.0 };
            b[i] += if e == 0.0 { 0.0 } else { e * u };
        };
        for c in xc {
            for (i, &v) in c.iter().enumerate() {
                add(i, v);
            }
        }
        for &v in x_tail {
            add(0, v);
        }
        d += f64::from(top.iter().sum::<f32>()) + f64::from(a.iter().sum::<f32>());
        t += f64::from(b.iter().sum::<f32>());
    }
    (d, t)
}

/// Σ -q·ln q over q = k·p (the probabilities of counts `p` at k = 1/total; k = 1 for
/// probabilities), 0 where q = 0.
#[multiversion(targets = "simd")]
pub(crate) fn neg_xlogx_sum(p: &[f32], k: f32) -> f64 {
    const F: bool = fused!();
    let mut total = 0.0f64;
    for block in p.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let (pc, p_tail) = block.as_chunks::<LANES>();
        for c in pc {
            for i in 0..LANES {
                let q = c[i] * k;
                acc[i] -= if q == 0.0 { 0.0 } else { q * ln::<F>(q) };
            }
        }
        for &v in p_tail {
            let q = v * k;
            acc[0] -= if q == 0.0 { 0.0 } else { q * ln::<F>(q) };
        }
        total += f64::from(acc.iter().sum::<f32>());
    }
    total
}

/// Softmax (`log` false) or log-softmax of each row of `x` (rows of `cols`) into `out`, at
/// scale `s` = 1/T: per row its max, the terms e^((x - m)·s) written while they are summed,
/// then scaled by 1/d (softmax) or `(x - m)·s - log d` written (log-softmax). The loop over
/// the rows runs inside one dispatch, so that short rows pay no call each.
#[multiversion(targets = "simd")]
pub(crate) fn softmax_rows(x: &[f32], out: &mut [f32], cols: usize, s: f32, log: bool) {
    const F: bool = fused!();
    for (row, o) in x.chunks(cols).zip(out.chunks_mut(cols)) {
        let m = max_in(row);
        if log {
            let c = ln_of_sum::<F>(exp_sum_in::<F>(row, m, s, None));
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - m) * s - c;
            }
        } else {
            let k = (1.0 / exp_sum_in::<F>(row, m, s, Some(&mut *o))) as f32;
            for v in o.iter_mut() {
                *v *= k;
            }
        }
    }
}

/// ln d of a softmax denominator d ≥ 1 (or 0, a row of -inf: -inf) as ln(1 + (d - 1)) in
/// f32: a confident row's d - 1 of 1e-7 gives its log to f32's relative precision.
#[inline(always)]
fn ln_of_sum<const F: bool>(d: f64) -> f32 {
    ln_1p::<F>((d - 1.0) as f32)
}

/// `logsumexp(x·s)` of each row of `x` (rows of `cols`) into `out`, one per row.
#[multiversion(targets = "simd")]
pub(crate) fn logsumexp_rows(x: &[f32], out: &mut [f32], cols: usize, s: f32) {
    const F: bool = fused!();
    let mut done = 0;
    if cols < LANES {
        // Short rows, LANES at a time: lane i takes row i of the group through the same
        // operations, in the same order, as the one-row path below (the same bits), and the
        // exponentials run across the rows, one vector for LANES of them.
        let group = LANES * cols;
        // The group transposed: t[j][i] = element j of row i.
        let mut t = [[0.0f32; LANES]; LANES];
        for (g, o) in x.chunks_exact(group).zip(out.chunks_exact_mut(LANES)) {
            for (i, row) in g.chunks_exact(cols).enumerate() {
                for (tj, &v) in t.iter_mut().zip(row) {
                    tj[i] = v;
                }
            }
            let t = &t[..cols];
            let mut m = [f32::MIN; LANES];
            for tj in t {
                for i in 0..LANES {
                    m[i] = m[i].max(tj[i]);
                }
            }
            let (mut rest, mut tops) = ([0.0f32; LANES], [0.0f32; LANES]);
            for tj in t {
                for i in 0..LANES {
                    let v = tj[i];
                    let e = exp::<F>((v - m[i]) * s);
                    let top = v == m[i];
                    tops[i] += if top { 1.0 } else { 0.0 };
                    rest[i] += if top { 0.0 } else { e };
                }
            }
            for i in 0..LANES {
                o[i] = m[i] * s + ln_of_sum::<F>(f64::from(tops[i]) + f64::from(rest[i]));
            }
        }
        done = x.len() / group * LANES;
    }
    for (row, o) in x[done * cols..].chunks(cols).zip(&mut out[done..]) {
        let m = max_in(row);
        *o = m * s + ln_of_sum::<F>(exp_sum_in::<F>(row, m, s, None));
    }
}

/// Σ (x[i] - m)·w[i] (w all 1 when `None`).
#[multiversion(targets = "simd")]
pub(crate) fn shifted_sum(x: &[f32], m: f32, w: Option<&[f32]>) -> f64 {
    let mut total = 0.0f64;
    for (b, block) in x.chunks(BLOCK).enumerate() {
        let mut acc = [0.0f32; LANES];
        let (xc, x_tail) = block.as_chunks::<LANES>();
        match w {
            Some(w) => {
                let w = &w[b * BLOCK..b * BLOCK + block.len()];
                let (wc, w_tail) = w.as_chunks::<LANES>();
                for (c, wc) in xc.iter().zip(wc) {
                    for i in 0..LANES {
                        acc[i] += (c[i] - m) * wc[i];
                    }
                }
                for (&v, &w) in x_tail.iter().zip(w_tail) {
                    acc[0] += (v - m) * w;
                }
            }
            None => {
                for c in xc {
                    for i in 0..LANES {
                        acc[i] += c[i] - m;
                    }
                }
                for &v in x_tail {
                    acc[0] += v - m;
                }
            }
        }
        total += f64::from(acc.iter().sum::<f32>());
    }
    total
}

/// Cross-entropy's gradient from the terms e = e^(x - m) in `g`: `g[c] = e·c1 - c2·w[c]`
/// (w all 1 when `None`).
#[multiversion(targets = "simd")]
pub(crate) fn ce_grad(g: &mut [f32], c1: f32, c2: f32, w: Option<&[f32]>) {
    match w {
        Some(w) => {
            for (g, &w) in g.iter_mut().zip(w) {
                *g = *g * c1 - c2 * w;
            }
        }
        None => {
            for g in g {
                *g = *g * c1 - c2;
            }
        }
    }
}

/// One element of binary cross-entropy with logits: its loss
/// -w·(pw·t·log σ(v) + (1-t)·log σ(-v)) and gradient w·((pw·t + 1 - t)·σ(v) - pw·t).
#[inline(always)]
fn bce<const F: bool>(v: f32, t: f32, pw: f32, w: f32) -> (f32, f32) {
    // log σ(v), log σ(-v) and σ(v) share e^-|v|.
    let e = exp::<F>(-v.abs());
    let soft = ln_1p::<F>(e);
    let (ls_pos, ls_neg) = (v.min(0.0) - soft, (-v).min(0.0) - soft);
    let r = 1.0 / (1.0 + e);
    let sigma = if v >= 0.0 { r } else { e * r };
    (
        -w * (pw * t * ls_pos + (1.0 - t) * ls_neg),
        w * ((pw * t + 1.0 - t) * sigma - pw * t),
    )
}

/// One row of binary cross-entropy with logits `x` against `t`, positive-class weights `pw`
/// (one per column) and element weights `w` (1 when `None`): each loss into `l`, each
/// gradient times `scale` into `g` (when not empty). Plain zipped loops, which vectorise.
#[multiversion(targets = "simd")]
pub(crate) fn bce_row(
    (x, t): (&[f32], &[f32]),
    (pw, w): (&[f32], Option<&[f32]>),
    scale: f32,
    g: &mut [f32],
    l: &mut [f32],
) {
    const F: bool = fused!();
    let xs = x.iter().zip(t).zip(pw);
    match (w, g.is_empty()) {
        (None, true) => {
            for (((&v, &t), &p), l) in xs.zip(l) {
                *l = bce::<F>(v, t, p, 1.0).0;
            }
        }
        (None, false) => {
            for ((((&v, &t), &p), l), g) in xs.zip(l).zip(g) {
                let (loss, grad) = bce::<F>(v, t, p, 1.0);
                (*l, *g) = (loss, grad * scale);
            }
        }
        (Some(w), true) => {
            for ((((&v, &t), &p), &w), l) in xs.zip(w).zip(l) {
                *l = bce::<F>(v, t, p, w).0;
            }
        }
        (Some(w), false) => {
            for (((((&v, &t), &p), &w), l), g) in xs.zip(w).zip(l).zip(g) {
                let (loss, grad) = bce::<F>(v, t, p, w);
                (*l, *g) = (loss, grad * scale);
            }
        }
    }
}

/// Σ x, in f32 lanes per block and f64 across blocks.
#[multiversion(targets = "simd")]
pub(crate) fn sum(x: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let (xc, x_tail) = block.as_chunks::<LANES>();
        for c in xc {
            for i in 0..LANES {
                acc[i] += c[i];
            }
        }
        for &v in x_tail {
            acc[0] += v;
        }
        total += f64::from(acc.iter().sum::<f32>());
    }
    total
}

/// Sigmoid without overflow: e = e^-|x|, 1 / (1 + e) or e / (1 + e).
#[inline(always)]
pub(crate) fn sigmoid<const F: bool>(v: f32) -> f32 {
    let e = exp::<F>(-v.abs());
    let r = 1.0 / (1.0 + e);
    if v >= 0.0 { r } else { e * r }
}

/// log σ(x) = min(x, 0) - ln(1 + e^-|x|).
#[inline(always)]
pub(crate) fn log_sigmoid<const F: bool>(v: f32) -> f32 {
    v.min(0.0) - ln_1p::<F>(exp::<F>(-v.abs()))
}

/// The elementwise activations over a slice.
#[multiversion(targets = "simd")]
pub(crate) fn sigmoid_into(x: &[f32], out: &mut [f32]) {
    const F: bool = fused!();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = sigmoid::<F>(v);
    }
}

#[multiversion(targets = "simd")]
pub(crate) fn log_sigmoid_into(x: &[f32], out: &mut [f32]) {
    const F: bool = fused!();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = log_sigmoid::<F>(v);
    }
}

/// logit p = ln(p / (1 - p)), as ln(1 + (2p - 1)/(1 - p)) within 1/6 of p = 1/2 where the
/// result is small (shaders/softmax.wgsl's split): -inf at 0, +inf at 1, NaN outside [0, 1].
#[multiversion(targets = "simd")]
pub(crate) fn logit_into(x: &[f32], out: &mut [f32]) {
    const F: bool = fused!();
    for (o, &p) in out.iter_mut().zip(x) {
        let q = 1.0 - p;
        let near_half = (p - 0.5).abs() <= 1.0 / 6.0;
        // One quotient and one logarithm on either side (the loop runs both): near ½ those
        // of [`ln_1p`] of z = (2p - 1)/q, elsewhere ln(p/q).
        let z = if near_half { 2.0 * p - 1.0 } else { p } / q;
        let u = if near_half { 1.0 + z } else { z };
        let (l, d) = (ln::<F>(u), u - 1.0);
        *o = match (near_half, d == 0.0) {
            (true, true) => z,
            (true, false) => l * (z / d),
            (false, _) => l,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 in steps across `[lo, hi]`, the ends and the specials.
    fn samples(lo: f32, hi: f32) -> Vec<f32> {
        let n = 200_000;
        let mut v: Vec<f32> = (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect();
        v.extend([0.0, -0.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, f32::EPSILON]);
        v
    }

    /// Relative error in units of f32's epsilon against the f64 function, where the answer
    /// is a normal f32.
    fn worst(f: fn(f32) -> f32, g: fn(f64) -> f64, xs: &[f32]) -> f64 {
        xs.iter()
            .map(|&x| {
                let want = g(f64::from(x));
                let got = f64::from(f(x));
                if want.abs() < f64::from(f32::MIN_POSITIVE) || want.abs() > f64::from(f32::MAX) {
                    0.0
                } else {
                    ((got - want) / want).abs() / f64::from(f32::EPSILON)
                }
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_sums_with_and_without_their_terms_agree_to_the_bit() {
        // The two loops of exp_sum_in (terms written or not) take the maxima's terms apart
        // in different ways; rows with ties at the max, +inf (whose terms are e^NaN), -inf,
        // NaN, and rows longer than a block.
        for (len, special) in [
            (40, 0.0),
            (1500, f32::INFINITY),
            (3000, f32::NAN),
            (77, f32::NEG_INFINITY),
        ] {
            let mut x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
                .collect();
            x[len / 3] = 5.12;
            x[len / 2] = 5.12;
            x[len / 4] = special;
            let m = max(&x);
            let mut terms = vec![0.0f32; len];
            for s in [1.0, 0.7] {
                let without = exp_sum(&x, m, s, None);
                let with = exp_sum(&x, m, s, Some(&mut terms));
                assert!(
                    without.to_bits() == with.to_bits() || (without.is_nan() && with.is_nan()),
                    "{len} {special} {s}: {without} against {with}"
                );
            }
        }
    }

    #[test]
    fn short_rows_in_lanes_give_the_bits_of_one_row_at_a_time() {
        // Rows of every length below LANES, in groups of LANES and a ragged rest, with ties at
        // the maximum, -inf, +inf and NaN among them; at two temperatures.
        let mut state = 0x9e37_79b9u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for cols in 1..LANES {
            let rows = 3 * LANES + 5;
            let x: Vec<f32> = (0..rows * cols)
                .map(|_| match next() % 50 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::INFINITY,
                    2 => f32::NAN,
                    3..=9 => 2.5,
                    k => (k as f32 - 30.0) * 0.37 + (next() % 1000) as f32 * 1e-3,
                })
                .collect();
            for s in [1.0, 0.5] {
                let mut lanes = vec![0.0f32; rows];
                logsumexp_rows(&x, &mut lanes, cols, s);
                for (r, row) in x.chunks(cols).enumerate() {
                    let mut one = [0.0f32];
                    logsumexp_rows(row, &mut one, cols, s);
                    assert!(
                        lanes[r].to_bits() == one[0].to_bits()
                            || (lanes[r].is_nan() && one[0].is_nan()),
                        "cols {cols} row {r} s {s}: {} against {}",
                        lanes[r],
                        one[0]
                    );
                }
            }
        }
    }

    /// The math's accuracy and specials with fused multiply-adds (`F`) and without.
    fn exp_and_ln<const F: bool>() {
        assert!(worst(exp::<F>, f64::exp, &samples(-87.0, 88.0)) < 2.0);
        assert!(worst(ln::<F>, f64::ln, &samples(1e-30, 1e30)) < 2.0);
        assert!(worst(ln::<F>, f64::ln, &samples(0.5, 2.0)) < 2.0);
        assert!(worst(ln_1p::<F>, f64::ln_1p, &samples(0.0, 1.0)) < 2.0);
        assert!(worst(ln_1p::<F>, f64::ln_1p, &samples(0.0, 1e-6)) < 2.0);
        let (exp, ln) = (exp::<F>, ln::<F>);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results: e^-100 = 3.7e-44.
        let sub = exp(-100.0);
        assert!(
            (f64::from(sub) - (-100f64).exp()).abs() <= 1.5e-45,
            "{sub:e}"
        );
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
        assert!((f64::from(ln(1e-45)) - (1e-45f32 as f64).ln()).abs() < 1e-5);
        assert_eq!(sigmoid::<F>(100.0), 1.0);
        assert!((f64::from(sigmoid::<F>(-100.0)) - (-100f64).exp()).abs() < 1.5e-45);
        assert_eq!(log_sigmoid::<F>(-100.0), -100.0);
    }

    #[test]
    fn exp_and_ln_are_within_two_ulp_of_float64_and_follow_ieee() {
        exp_and_ln::<true>();
        exp_and_ln::<false>();
    }

    #[test]
    fn long_sums_keep_f32_precision() {
        // 2^20 terms of about 1: a plain f32 sum would be off by ~1e-3 relatively.
        let x: Vec<f32> = (0..1 << 20).map(|i| (i % 7) as f32 * 1e-3).collect();
        let got = exp_sum(&x, 0.0, 1.0, None);
        let want: f64 = x.iter().map(|&v| f64::from(v).exp()).sum();
        assert!(((got - want) / want).abs() < 1e-6, "{got} {want}");
        let mut out = vec![0.0; x.len()];
        assert_eq!(exp_sum(&x, 0.0, 1.0, Some(&mut out)), got);
        // The written term is the clone's own exp, with or without fused multiply-adds.
        assert!([exp::<true>(5e-3), exp::<false>(5e-3)].contains(&out[5]));
    }
}
