// Binary cross-entropy with logits (SPEC.md §2), elementwise, through log-sigmoid (never
// log(σ)): with target t, pos_weight pw (per column), weight w (per element),
//   l = -w·(pw·t·log σ(x) + (1 - t)·log σ(-x))
//   g = scale·w·((pw·t + 1 - t)·σ(x) - pw·t)
// (Both log σ terms are computed: PyTorch's single-log form w·((pw·t + 1 - t)·softplus(-x)
// + (1 - t)·x) cancels to 1e-4 relative error for small losses in f32.) Each lane takes ITEMS vectors, WG apart (coalesced); for reductions
// sum/mean each workgroup writes the sum of its losses (a fixed tree, no atomics) and
// reduce.wgsl finishes; for none, one loss per element.
//
// Bindings (twin: src/gpu/bce.rs): 0 uniform Params; 1 x; 2 grad; 3 t; 4 weight; 5 pos_weight;
// 6 loss (per element from P.off, or per workgroup from P.p_off). x, t, weight, grad and the
// per-element loss share one layout from element P.off; weight and pos_weight are dummies when
// their flag is 0.

#import vec
#import md
#import reduce
#import grid
#import activations

struct Params {
    n: u32,              // elements in this dispatch (a multiple of W)
    cols: u32,           // row length = length of pos_weight (a multiple of W)
    off: u32,            // first element of x, t, weight, grad and per-element loss
    col0: u32,           // column of this dispatch's first element
    p_off: u32,          // first partial (reductions sum/mean)
    has_weight: u32,
    has_pos_weight: u32,
    grad: u32,           // 1: write the gradient
    per_element: u32,    // 1: loss per element (none); 0: per workgroup
    scale: f32,          // multiplies the gradient (1 / elements for mean)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> grad: array<V>;
@group(0) @binding(3) var<storage, read> t: array<V>;
@group(0) @binding(4) var<storage, read> weight: array<V>;
@group(0) @binding(5) var<storage, read> pos_weight: array<V>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;

// Stores vector j of per-element losses into the f32 loss array (which also holds partials).
fn store_loss(j: u32, v: V) {
    for (var k = 0u; k < W; k = k + 1u) {
        loss[j * W + k] = elem(v, k);
    }
}

// Vectors per lane. Twin: `ITEMS` in src/gpu/bce.rs.
const ITEMS: u32 = 8u;

@compute @workgroup_size(WG)
fn bce(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       l: Lane) {
    let lane = lane_id(l);
    let group = group_index(wid, nwg);
    let first = group * WG * ITEMS;
    var acc = V(0.0);
    for (var k = 0u; k < ITEMS; k = k + 1u) {
        let i = first + k * WG + lane;
        if (i >= P.n / W) {
            break;
        }
        let j = P.off / W + i;
        let xv = x[j];
        let tv = t[j];
        var pw = V(1.0);
        if (P.has_pos_weight == 1u) {
            pw = pos_weight[(P.col0 / W + i) % (P.cols / W)];
        }
        var w = V(1.0);
        if (P.has_weight == 1u) {
            w = weight[j];
        }
        let lv = -w * (pw * tv * log_sigmoid(xv) + (1.0 - tv) * log_sigmoid(-xv));
        if (P.grad == 1u) {
            grad[j] = w * ((pw * tv + 1.0 - tv) * sigmoid(xv) - pw * tv) * P.scale;
        }
        if (P.per_element == 1u) {
            store_loss(j, lv);
        }
        acc = acc + lv;
    }
    if (P.per_element == 0u) {
        let total = reduce_sum4(vec4<f32>(hsum(acc), 0.0, 0.0, 0.0), lane, WG, l).x;
        if (lane == 0u && first < P.n / W) {
            loss[P.p_off + group] = total;
        }
    }
}
