// Online softmax statistics (Milakov & Gimelshein 2018) at scale s = 1/T: a pair (m, r) with
// m = max of the raw values x seen and r = d - 1, where d = Σ exp((x - m)·s) is the softmax
// denominator. d ≥ 1 (the largest term is exactly 1), and keeping the 1 out of the sum keeps
// the small terms' digits: a confident row's log d ≈ d - 1 (its loss, the top's log-softmax)
// is then exact to f32's relative precision instead of to 2^-24 absolutely. Two pairs
// combine without a second pass: m = max(m1, m2), and the pair holding m keeps its r while
// the other adds its whole d rescaled, d2·exp((m2 - m)·s); equal maxima add both r and 1.
// The max is taken on raw x and the difference scaled afterwards: x - m is exact for nearby
// values, where (x·s) - (m·s) would carry the rounding of two products of size |x|·s.
// The identity is (-FLT_MAX, -1), d = 0, not m = -inf: exp(m1 - m) then never meets
// -inf - (-inf), a row of all -inf keeps d = 0 (so softmax is 0/0 = NaN and logsumexp is
// -inf, as PyTorch), and a NaN anywhere in the row reaches r through exp and stays in that row.

const NEG_BIG: f32 = -3.4028234663852886e38;
const MD_IDENTITY: vec2<f32> = vec2<f32>(NEG_BIG, -1.0);

// -inf (no constant can hold it).
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// The denominator d of a pair.
fn md_d(md: vec2<f32>) -> f32 {
    return 1.0 + md.y;
}

// Symmetric in a and b to the last bit, so that both lanes of a butterfly agree.
fn md_combine(a: vec2<f32>, b: vec2<f32>, s: f32) -> vec2<f32> {
    let m = max(a.x, b.x);
    let a_holds = a.x > b.x;
    let hi = select(b, a, a_holds);
    let lo = select(a, b, a_holds);
    let r = select(hi.y + (1.0 + lo.y) * exp((lo.x - m) * s), (a.y + b.y) + 1.0, a.x == b.x);
    return vec2<f32>(m, r);
}

// Adds the W values of one vector to the running pair.
fn md_push(a: vec2<f32>, v: V, s: f32) -> vec2<f32> {
    let m = max(a.x, hmax(v));
    return md_push_with(a, v, s, m, exp((v - V(m)) * s));
}

// md_push given the new max m = max(a.x, hmax(v)) and v's terms e = exp((v - m)·s), for
// callers that use them too.
fn md_push_with(a: vec2<f32>, v: V, s: f32, m: f32, e: V) -> vec2<f32> {
    // The running max holds (equal values in v add exactly 1 each).
    let keep = a.y + hsum(e);
    // v brings the new max: the running d rescaled, v's terms but the 1 of one of its maxima.
    let top = v == V(m);
    let ties = hsum(select(V(0.0), V(1.0), top)) - 1.0;
    let fresh = (1.0 + a.y) * exp((a.x - m) * s) + hsum(select(e, V(0.0), top)) + ties;
    return vec2<f32>(m, select(fresh, keep, a.x == m));
}

// log(1 + z) for z in [-1/2, 1] to f32 precision without relying on the accuracy of the
// device's log near 1 (Vulkan allows 2^-21 absolute error there): 2·atanh(s), s = z / (2 + z),
// |s| ≤ 1/3, so the odd series below is exact to s^19/19 < 1e-10.
fn log1p_small(z: V) -> V {
    let s = z / (2.0 + z);
    let s2 = s * s;
    var acc = V(1.0 / 17.0);
    acc = acc * s2 + 1.0 / 15.0;
    acc = acc * s2 + 1.0 / 13.0;
    acc = acc * s2 + 1.0 / 11.0;
    acc = acc * s2 + 1.0 / 9.0;
    acc = acc * s2 + 1.0 / 7.0;
    acc = acc * s2 + 1.0 / 5.0;
    acc = acc * s2 + 1.0 / 3.0;
    acc = acc * s2 + 1.0;
    return 2.0 * s * acc;
}

// log d of a pair's denominator: log1p(r) through log1p_small for r ≤ 1, where a confident
// row's loss, logsumexp and log-softmax are about r and the device's log may be off by 2^-21
// absolutely (Vulkan's allowance on [0.5, 2]); -inf for d = 0 (a row of all -inf) on every
// device; NaN stays NaN.
fn log_denominator(md: vec2<f32>) -> f32 {
    let r = md.y;
    let near = r <= 1.0;
    let z = select(0.0, r, near && r >= 0.0);
    let l = select(log(1.0 + r), elem(log1p_small(V(z)), 0u), near);
    return select(l, neg_inf(), r == -1.0);
}
