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
//
// Half-precision logits (bce_rows, at the f16 and bf16 widths): x, t and grad of that type in
// padded rows (layout_packed.wgsl) from element P.off, weight and the per-element loss dense
// f32 rows × cols from elements P.w_off and P.l_off, pos_weight f32; the padding counts for
// nothing.

#import vec
#import md
#import reduce
#import grid
#import layout
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
    w_off: u32,          // bce_rows: first element of weight
    l_off: u32,          // bce_rows: first element of the per-element loss
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<XS>;
@group(0) @binding(2) var<storage, read_write> grad: array<XS>;
@group(0) @binding(3) var<storage, read> t: array<XS>;
@group(0) @binding(4) var<storage, read> weight: array<FS>;
@group(0) @binding(5) var<storage, read> pos_weight: array<FS>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
#load x
#load t
#store grad
#load_f32 weight
#load_f32 pos_weight

// Stores vector j of per-element losses into the f32 loss array (which also holds partials).
fn store_loss(j: u32, v: V) {
    for (var k = 0u; k < W; k = k + 1u) {
        loss[j * W + k] = elem(v, k);
    }
}

// Vectors per lane. Twin: `ITEMS` in src/gpu/bce.rs.
const ITEMS: u32 = 8u;

// One vector's losses, and its gradient (scaled), from logits xv, targets tv, positive-class
// weights pw and element weights w.
fn bce_loss(xv: V, tv: V, pw: V, w: V) -> V {
    return -w * (pw * tv * log_sigmoid(xv) + (1.0 - tv) * log_sigmoid(-xv));
}

fn bce_grad(xv: V, tv: V, pw: V, w: V) -> V {
    return w * ((pw * tv + 1.0 - tv) * sigmoid(xv) - pw * tv) * P.scale;
}

// For the reductions sum and mean: the workgroup's lanes' losses `acc` summed (a fixed tree)
// into partial `group`, by lane 0 of a workgroup that had work (`busy`). Uniform control flow.
fn write_partial(acc: V, group: u32, busy: bool, lane: u32, l: Lane) {
    if (P.per_element == 0u) {
        let total = reduce_sum4(vec4<f32>(hsum(acc), 0.0, 0.0, 0.0), lane, WG, l).x;
        if (lane == 0u && busy) {
            loss[P.p_off + group] = total;
        }
    }
}

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
        let xv = load_x(0u, j, 0.0);
        let tv = load_t(0u, j, 0.0);
        var pw = V(1.0);
        if (P.has_pos_weight == 1u) {
            pw = load_pos_weight(0u, (P.col0 / W + i) % (P.cols / W), 0.0);
        }
        var w = V(1.0);
        if (P.has_weight == 1u) {
            w = load_weight(0u, j, 0.0);
        }
        let lv = bce_loss(xv, tv, pw, w);
        if (P.grad == 1u) {
            store_grad(0u, j, bce_grad(xv, tv, pw, w));
        }
        if (P.per_element == 1u) {
            store_loss(j, lv);
        }
        acc = acc + lv;
    }
    write_partial(acc, group, first < P.n / W, lane, l);
}

// bce over rows of a half type: lane vectors i of the dispatch's P.n rows (P.n·row_vecs()
// vectors), each inside one row, so that the padding is masked per row.
@compute @workgroup_size(WG)
fn bce_rows(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            l: Lane) {
    let lane = lane_id(l);
    let group = group_index(wid, nwg);
    let first = group * WG * ITEMS;
    let rv = row_vecs();
    var acc = V(0.0);
    for (var k = 0u; k < ITEMS; k = k + 1u) {
        let i = first + k * WG + lane;
        if (i >= P.n * rv) {
            break;
        }
        let row = i / rv;
        let v = i - row * rv;
        let base = row_start(P.off, row);
        let xv = load_x(base, v, 0.0);
        let tv = load_t(base, v, 0.0);
        var pw = V(1.0);
        if (P.has_pos_weight == 1u) {
            pw = load_pos_weight(0u, v, 1.0);
        }
        var w = V(1.0);
        if (P.has_weight == 1u) {
            w = load_weight(P.w_off + row * P.cols, v, 0.0);
        }
        let lv = bce_loss(xv, tv, pw, w) * vec_mask(v);
        if (P.grad == 1u) {
            store_grad(base, v, bce_grad(xv, tv, pw, w));
        }
        if (P.per_element == 1u) {
            // The elements of vector v of the row (four: bce_rows runs at the half widths).
            let e = vec4<u32>(4u * v) + vec4<u32>(0u, 1u, 2u, 3u);
            for (var c = 0u; c < 4u; c = c + 1u) {
                if (e[c] < P.cols) {
                    loss[P.l_off + row * P.cols + e[c]] = elem(lv, c);
                }
            }
        }
        acc = acc + lv;
    }
    write_partial(acc, group, first < P.n * rv, lane, l);
}
