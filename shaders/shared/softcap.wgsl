// Logit softcapping (SPEC.md §2), shared by cross_entropy.wgsl and info.wgsl: a kernel's
// loads of logits (`#load NAME cap`) read every x as s = c·tanh(x / c) when SOFTCAP is set
// (c = P.softcap > 0), so that every formula reads s; a gradient w.r.t. the raw x takes the
// factor ds/dx = 1 - (s / c)², cap_slope(s). The host sets SOFTCAP when it builds the pipeline
// (`Consts::softcap` in src/gpu/kernels.rs): without it the branches vanish. Needs `P.softcap`.

override SOFTCAP: bool = false;

fn cap(v: V) -> V {
    if (SOFTCAP) {
        return P.softcap * tanh_stable(v / P.softcap);
    }
    return v;
}

fn cap_slope(s: V) -> V {
    if (SOFTCAP) {
        let t = s / P.softcap;
        return 1.0 - t * t;
    }
    return V(1.0);
}

// tanh to a few ulp at every x: sign(x)·(1 - e)/(1 + e) with e = e^-2|x| for |x| ≥ 0.3 (no
// overflow; ±1 at ±inf), its Taylor series to x^11 below, where 1 - e would cancel.
fn tanh_stable(v: V) -> V {
    let e = exp(-2.0 * abs(v));
    let far = sign(v) * (1.0 - e) / (1.0 + e);
    let v2 = v * v;
    // The next term, 21844/6081075·x^13, is under 3e-9 of tanh at |x| = 0.3.
    let near = v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 + v2 * (-17.0 / 315.0
        + v2 * (62.0 / 2835.0 + v2 * (-1382.0 / 155925.0))))));
    return select(far, near, abs(v) < V(0.3));
}
