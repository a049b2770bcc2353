// The two small kernels of examples/softmax_regression.rs: the model's forward pass and its
// gradient-descent step. The loss and its gradient w.r.t. the logits come from xent's fused
// cross-entropy kernel in between, written over the logits (z).
//
//   forward:  z[s, k] = b[k] + Σ_j x[s, j] · W[j, k]                (one invocation per sample)
//   update:   W[j, k] -= lr · Σ_s x[s, j] · g[s, k]   (x[s, F] = 1: the bias row; one per weight)

struct Params {
    n: u32,     // samples
    f: u32,     // features
    c: u32,     // classes
    lr: f32,    // learning rate
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // n × f, row-major
@group(0) @binding(2) var<storage, read_write> w: array<f32>;    // (f + 1) × c; the last row is b
@group(0) @binding(3) var<storage, read_write> z: array<f32>;    // n × c: logits, then gradient

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>) {
    let s = id.x;
    if (s >= P.n) {
        return;
    }
    for (var k = 0u; k < P.c; k = k + 1u) {
        var acc = w[P.f * P.c + k];
        for (var j = 0u; j < P.f; j = j + 1u) {
            acc = acc + x[s * P.f + j] * w[j * P.c + k];
        }
        z[s * P.c + k] = acc;
    }
}

@compute @workgroup_size(8)
fn update(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= (P.f + 1u) * P.c) {
        return;
    }
    let j = i / P.c;
    let k = i % P.c;
    var acc = 0.0;
    for (var s = 0u; s < P.n; s = s + 1u) {
        var xv = 1.0;
        if (j < P.f) {
            xv = x[s * P.f + j];
        }
        acc = acc + xv * z[s * P.c + k];
    }
    w[i] = w[i] - P.lr * acc;
}
