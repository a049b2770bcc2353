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
//  10: storage, read_write  part          split rows' partial results (rows.wgsl)
//
// Dispatch: row kernels take WG / P.g row segments per workgroup, P.g lanes per segment
// (rows.wgsl); split rows run phase 0 ((m, d) per segment), then phase 1 (the outputs).
// Elementwise kernels take WG vectors per workgroup.
//
// The host resolves `#import vec` (vec1 or vec4: V, W, hmax, hsum), `#import layout` (where
// rows sit: aligned vectors, or any length gathered from f32) with `#load x` and `#store y`,
// md.wgsl, one of the reduce_*.wgsl files (WG, Lane, lane_id, reduce_md), rows.wgsl
// (row_lane, row_stats) and activations.wgsl (sigmoid, log_sigmoid).

#import vec
#import md
#import reduce
#import grid
#import layout
#import rows
#import activations

struct Params {
    rows: u32,      // rows in this dispatch
    cols: u32,      // elements per row (a multiple of W unless gathered); elementwise: all
    in_off: u32,    // first element of x, a multiple of W unless gathered (binding offsets
                    // are aligned down)
    out_off: u32,   // first element of y or lse
    g: u32,         // lanes per row: a power of two ≤ WG
    inv_t: f32,     // 1 / temperature
    segs: u32,      // segments per row (rows.wgsl); 1 for elementwise
    span: u32,      // vectors per segment
    phase: u32,     // split rows: which dispatch of the chain this is
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// What the pipeline computes, a constant fixed when it is built (src/gpu/softmax.rs): a switch
// on a uniform in every element cost lavapipe's sigmoid half its time. softmax_rows: 0
// softmax, 1 log-softmax; elementwise: 0 sigmoid, 1 log-sigmoid, 2 logit, else a copy.
override MODE: u32 = 0u;

// MODE. Twin: the `mode` matches in src/gpu/softmax.rs (logit is any other elementwise mode).
const MODE_SOFTMAX: u32 = 0u;
const MODE_LOG_SOFTMAX: u32 = 1u;
const MODE_SIGMOID: u32 = 0u;
const MODE_LOG_SIGMOID: u32 = 1u;
const MODE_LOGIT: u32 = 2u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<XS>;
@group(0) @binding(2) var<storage, read_write> y: array<XS>;
#load x
#store y
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

// Softmax of a kept row (RowPlan::kept: whole, one dispatch, at most KEPT vectors per lane):
// read once, into registers, and written from them. An entry point of its own: the array
// inside softmax_rows, even in a branch never taken, cost its rows 8–10 % on lavapipe.
@compute @workgroup_size(WG)
fn softmax_rows_kept(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     l: Lane) {
    let r = row_lane(wid, nwg, l);
    var kept: array<V, KEPT>;
    let md = kept_stats(r, l, P.inv_t, &kept);
    let dst = row_at(r, P.out_off);
    let shift = select(V(log_denominator(md)), V(0.0), MODE == MODE_SOFTMAX);
    let inv_d = 1.0 / md_d(md);
    for (var k = 0u; k < KEPT; k = k + 1u) {
        let i = r.first + r.pos + k * P.g;
        if (r.valid && i < r.end) {
            let z = (kept[k] - V(md.x)) * P.inv_t - shift;
            store_y(dst, i, select(z, exp(z) * inv_d, MODE == MODE_SOFTMAX));
        }
    }
}

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                l: Lane) {
    let r = row_lane(wid, nwg, l);
    let md = row_md(r, l, P.inv_t);
    if (P.phase == 0u && publish(r, 0u, md_partial(md))) {
        return;
    }
    if (!r.valid) {
        return;
    }
    let src = row_base(r);
    let dst = row_at(r, P.out_off);
    if (MODE == MODE_SOFTMAX) {
        let inv_d = 1.0 / md_d(md);
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            store_y(dst, i, exp((load_x(src, i, 0.0) - V(md.x)) * P.inv_t) * inv_d);
        }
    } else {
        let log_d = log_denominator(md);
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            store_y(dst, i, (load_x(src, i, 0.0) - V(md.x)) * P.inv_t - V(log_d));
        }
    }
}

@compute @workgroup_size(WG)
fn logsumexp_rows(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  l: Lane) {
    let r = row_lane(wid, nwg, l);
    let md = row_md(r, l, P.inv_t);
    if (P.phase == 0u && publish(r, 0u, md_partial(md))) {
        return;
    }
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        lse[P.out_off + r.row] = md.x * P.inv_t + log_denominator(md);
    }
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
    if (i >= row_vecs()) {
        return;
    }
    let v = load_x(row_start(P.in_off, 0u), i, 0.0);
    var r: V;
    switch MODE {
        case MODE_SIGMOID: { r = sigmoid(v); }
        case MODE_LOG_SIGMOID: { r = log_sigmoid(v); }
        case MODE_LOGIT: { r = logit(v); }
        // A plain copy: the bench's reference for what a kernel of this launch can move.
        default: { r = v; }
    }
    store_y(row_start(P.out_off, 0u), i, r);
}
