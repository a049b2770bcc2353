// The activation family: row-wise softmax, log-softmax and logsumexp; elementwise sigmoid,
// log-sigmoid and logit. The math (SPEC.md section 1), at temperature T, s = 1/T:
//   softmax_i     = exp((x_i - m)·s) / d       m = max_j x_j,  d = Σ_j exp((x_j - m)·s)
//   log_softmax_i = (x_i - m)·s - log d        never log(softmax): finite far below exp underflow
//   logsumexp     = m·s + log d                (= logsumexp(x / T))
//   sigmoid(x)    = 1 / (1 + e^-x) for x ≥ 0,  e^x / (1 + e^x) for x < 0   (no overflow)
//   log_sigmoid(x) = min(x, 0) - log1p(e^-|x|)
//   logit(p)      = log(p / (1 - p)),  as log1p((2p - 1) / (1 - p)) near p = 1/2
//
// Bindings (twin: the layouts in src/gpu/kernels.rs):
//   0: uniform Params                     the twin of `RowParams` in src/gpu/kernels.rs
//   1: storage, read        x             rows × cols, row-major, from element P.in_off
//   2: storage, read_write  y             rows × cols (softmax_rows, elementwise), from P.out_off
//   3: storage, read_write  lse           rows (logsumexp_rows), from P.out_off
//
// Dispatch: row kernels take WG / P.g rows per workgroup, P.g lanes per row; elementwise
// kernels take WG vectors per workgroup. The grid is 2-D (x up to the per-dimension limit,
// then y) and the workgroup index is wid.y · nwg.x + wid.x; workgroups past the end do nothing.
//
// The host prepends `#import vec` (vec1 or vec4: V, W, hmax, hsum), md.wgsl and one of the
// reduce_*.wgsl files (WG, Lane, lane_id, reduce_md).

#import vec
#import md
#import reduce

struct Params {
    rows: u32,      // rows in this dispatch
    cols: u32,      // elements per row (a multiple of W); for elementwise: total elements
    in_off: u32,    // first element of x, a multiple of W (binding offsets are aligned down)
    out_off: u32,   // first element of y or lse
    g: u32,         // lanes per row: a power of two ≤ WG
    mode: u32,      // softmax_rows: 0 softmax, 1 log-softmax; elementwise: 0 sigmoid, 1 log-sigmoid, 2 logit
    inv_t: f32,     // 1 / temperature
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Where a lane works: its row, its position among the row's g lanes, and whether the row
// exists (lanes past the last row still take part in the reduction's barriers).
struct RowLane {
    lane: u32,
    row: u32,
    pos: u32,
    valid: bool,
}

fn row_lane(wid: vec3<u32>, nwg: vec3<u32>, l: Lane) -> RowLane {
    let lane = lane_id(l);
    let row = group_index(wid, nwg) * (WG / P.g) + lane / P.g;
    return RowLane(lane, row, lane % P.g, row < P.rows);
}

// (m, d) of the lane's row, combined over its g lanes; the identity for rows past the end.
fn row_stats(r: RowLane, l: Lane) -> vec2<f32> {
    var md = MD_IDENTITY;
    if (r.valid) {
        let n = P.cols / W;
        let base = P.in_off / W + r.row * n;
        for (var i = r.pos; i < n; i = i + P.g) {
            md = md_push(md, x[base + i], P.inv_t);
        }
    }
    return reduce_md(md, P.inv_t, r.lane, P.g, l);
}

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                l: Lane) {
    let r = row_lane(wid, nwg, l);
    let md = row_stats(r, l);
    if (!r.valid) {
        return;
    }
    let n = P.cols / W;
    let src = P.in_off / W + r.row * n;
    let dst = P.out_off / W + r.row * n;
    let pos = r.pos;
    if (P.mode == 0u) {
        let inv_d = 1.0 / md.y;
        for (var i = pos; i < n; i = i + P.g) {
            y[dst + i] = exp((x[src + i] - V(md.x)) * P.inv_t) * inv_d;
        }
    } else {
        let log_d = log(md.y);
        for (var i = pos; i < n; i = i + P.g) {
            y[dst + i] = (x[src + i] - V(md.x)) * P.inv_t - V(log_d);
        }
    }
}

@compute @workgroup_size(WG)
fn logsumexp_rows(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  l: Lane) {
    let r = row_lane(wid, nwg, l);
    let md = row_stats(r, l);
    if (r.valid && r.pos == 0u) {
        lse[P.out_off + r.row] = md.x * P.inv_t + log(md.y);
    }
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

fn sigmoid(v: V) -> V {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= V(0.0));
}

fn log_sigmoid(v: V) -> V {
    return min(v, V(0.0)) - log1p_small(exp(-abs(v)));
}

fn logit(p: V) -> V {
    let near_half = abs(p - 0.5) <= V(1.0 / 6.0);
    let q = 1.0 - p;
    // Clamp the argument of log1p_small into its range in the lanes that do not use it.
    let z = select(V(0.0), (2.0 * p - 1.0) / q, near_half);
    return select(log(p / q), log1p_small(z), near_half);
}

@compute @workgroup_size(WG)
fn elementwise(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = group_index(wid, nwg) * WG + li;
    if (i >= P.cols / W) {
        return;
    }
    let v = x[P.in_off / W + i];
    var r: V;
    switch P.mode {
        case 0u: { r = sigmoid(v); }
        case 1u: { r = log_sigmoid(v); }
        default: { r = logit(v); }
    }
    y[P.out_off / W + i] = r;
}
