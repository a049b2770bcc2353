// Elementwise activations shared by softmax.wgsl and bce.wgsl, on the row vector type V.
//   sigmoid(x)     = 1 / (1 + e^-x) for x ≥ 0,  e^x / (1 + e^x) for x < 0   (no overflow)
//   log_sigmoid(x) = min(x, 0) - log1p(e^-|x|)                               (finite for any x)

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

fn sigmoid(v: V) -> V {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= V(0.0));
}

fn log_sigmoid(v: V) -> V {
    return min(v, V(0.0)) - log1p_small(exp(-abs(v)));
}
