// Logs for information theory, on the vector type V (vec1.wgsl or vec4.wgsl).

// log that is -inf at 0 on every device (SPIR-V leaves log(0) to the implementation).
fn log0(v: V) -> V {
    return select(log(v), V(bitcast<f32>(0xff800000u)), v == V(0.0));
}

// p·(a) with 0·anything = 0 where p = 0 (NaN in p stays NaN).
fn weighted(p: V, a: V) -> V {
    return select(p * a, V(0.0), p == V(0.0));
}
