// Online softmax statistics (Milakov & Gimelshein 2018) at scale s = 1/T: a pair (m, d) with
// m = max of the raw values x seen and d = Σ exp((x - m)·s). Two pairs combine without a
// second pass:  m = max(m1, m2),  d = d1·exp((m1 - m)·s) + d2·exp((m2 - m)·s).
// The max is taken on raw x and the difference scaled afterwards: x - m is exact for nearby
// values, where (x·s) - (m·s) would carry the rounding of two products of size |x|·s.
// The identity is (-FLT_MAX, 0), not (-inf, 0): exp(m1 - m) then never meets -inf - (-inf),
// a row of all -inf keeps d = 0 (so softmax is 0/0 = NaN and logsumexp is -inf, as PyTorch),
// and a NaN anywhere in the row reaches d through exp and stays in that row.

const NEG_BIG: f32 = -3.4028234663852886e38;
const MD_IDENTITY: vec2<f32> = vec2<f32>(NEG_BIG, 0.0);

fn md_combine(a: vec2<f32>, b: vec2<f32>, s: f32) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp((a.x - m) * s) + b.y * exp((b.x - m) * s));
}

// Adds the W values of one vector to the running pair.
fn md_push(a: vec2<f32>, v: V, s: f32) -> vec2<f32> {
    let m = max(a.x, hmax(v));
    return vec2<f32>(m, a.y * exp((a.x - m) * s) + hsum(exp((v - V(m)) * s)));
}
