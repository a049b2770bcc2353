// Elementwise functions shared by softmax.wgsl, bce.wgsl and cross_entropy.wgsl, on the row
// vector type V (log1p_small is md.wgsl's).
//   sigmoid(x)     = 1 / (1 + e^-x) for x ≥ 0,  e^x / (1 + e^x) for x < 0   (no overflow)
//   log_sigmoid(x) = min(x, 0) - log1p(e^-|x|)                               (finite for any x)
//   tanh_stable(x) = sign(x)·(1 - e)/(1 + e), e = e^-2|x|, for |x| ≥ 0.3      (no overflow)
//                    its Taylor series to x^11 below (1 - e would cancel there)

fn sigmoid(v: V) -> V {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= V(0.0));
}

fn log_sigmoid(v: V) -> V {
    return min(v, V(0.0)) - log1p_small(exp(-abs(v)));
}

fn tanh_stable(v: V) -> V {
    let e = exp(-2.0 * abs(v));
    let far = sign(v) * (1.0 - e) / (1.0 + e);
    let v2 = v * v;
    // The next term, 21844/6081075·x^13, is under 3e-9 of tanh at |x| = 0.3.
    let near = v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 + v2 * (-17.0 / 315.0
        + v2 * (62.0 / 2835.0 + v2 * (-1382.0 / 155925.0))))));
    return select(far, near, abs(v) < V(0.3));
}
