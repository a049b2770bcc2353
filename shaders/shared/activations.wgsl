// Elementwise activations shared by softmax.wgsl and bce.wgsl, on the row vector type V
// (log1p_small is md.wgsl's).
//   sigmoid(x)     = 1 / (1 + e^-x) for x ≥ 0,  e^x / (1 + e^x) for x < 0   (no overflow)
//   log_sigmoid(x) = min(x, 0) - log1p(e^-|x|)                               (finite for any x)

fn sigmoid(v: V) -> V {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= V(0.0));
}

fn log_sigmoid(v: V) -> V {
    return min(v, V(0.0)) - log1p_small(exp(-abs(v)));
}
