// Fused softmax cross-entropy (SPEC.md §2): the per-row loss and the gradient of the reduced
// loss w.r.t. the logits, in one launch.
//
// Class-index targets y, class weights w (all 1 without a weight tensor), label smoothing ε,
// z-loss z, K classes, W = Σ_c w_c, (m, d) = the row's max and Σ exp(x - m) (md.wgsl):
//   lse = m + log d
//   l   = (1-ε)·w_y·((m - x_y) + log d) + (ε/K)·(W·log d - Σ_c w_c·(x_c - m)) + z·lse²
//   g_c = scale·(p_c·A - (ε/K)·w_c - [c = y]·(1-ε)·w_y),   A = (1-ε)·w_y + ε·W/K + 2z·lse
// The smoothing term (ε/K)·Σ_c w_c·(lse - x_c) is summed around m, so no large terms cancel
// (logits of ±1e4 keep full precision). Ignored rows (y = ignore_index): l = 0, g = 0.
// scale = P.scale, further divided by scalars[0] = Σ w_y over the non-ignored rows for `mean`.
//
// Soft targets q (rows × K), q' = (1-ε)·q + ε/K, S = Σ_c w_c·q'_c:
//   l   = -Σ_c w_c·q'_c·lp_c,   g_c = scale·(S·p_c - w_c·q'_c)
//
// Softcap c (both kinds): every x above is read as c·tanh(x / c), and each g_c then takes the
// factor 1 - tanh²(x_c / c) (the gradient w.r.t. the raw logits; `cap`, `cap_slope`).
//
// Per-row extras, when asked (SPEC.md §2; the override constants Z_OUT and H_OUT): the z-loss
// term z·lse² (0 for an ignored row; the loss still includes it) and the entropy of the
// softmax H = log d - Σ_c e^(x_c - m)·(x_c - m) / d (0 for an ignored row), the sum taken in
// the pass that already reads the row: online beside (m, d) where the row is read once.
//
// Passes over a row: one for (m, d) (and S), and a second for the gradient and the smoothing
// sum only when they are asked for; hard targets without smoothing and without a gradient read
// the row once. Split rows (rows.wgsl) run three phases: (m, d) (and S, and x_y), then the
// gradient with the row's sums, then the loss from the gathered sums.
//
// Entry points:
//   ce_targets    runs first over all rows: a target outside [0, K) that is not ignore_index
//                 puts its row in status[BATCH_BAD_ROW] (atomicMin on a u32: the first bad
//                 row, the same on every run); writes per-workgroup partial sums of w_y (the
//                 mean's denominator).
//   ce_rows       hard targets; when the batch has a bad row, writes nothing but that row's
//                 target into status[BATCH_BAD_VALUE].
//   ce_finish     one invocation, last: keeps the first bad batch (its number, row, target
//                 and K), readies the status for the next batch and counts the batch. The
//                 host never has to know which batch is which: parameters stay the same from
//                 one batch to the next, and so do the bindings.
//   ce_finish_sum ce_finish for a reduced loss, one workgroup: also adds the last P.rows
//                 values (per-row losses, or the host's partial sums of them;
//                 shared/sum.wgsl) into the loss at partial[0], over scalars[0] for `mean`:
//                 the reduction's last level, fused. A bad batch writes no loss.
//   ce_soft_rows  soft targets.
//   ce_shard_stats, ce_shard_loss, ce_shard_grad
//                 a vocabulary split across devices, pass 1 and pass 2 (below, before the
//                 unfused baseline).
//
// Bindings (twin: src/gpu/cross_entropy.rs):
//   0: uniform Params
//   1: x, the logits (logits_read.wgsl: read; logits_inplace.wgsl: read_write, and the gradient)
//   2: grad (logits_read.wgsl only), laid out like x from element P.out_off
//   3: targets: array<i32>, from element P.t_off      (ce_targets, ce_rows)
//   4: weight: K class weights, f32 whatever the logits' type (a dummy when P.has_weight = 0)
//   5: loss: array<f32>, one per row from element P.l_off (ce_finish_sum: the values it adds)
//   6: status: array<atomic<u32>>, STATUS_WORDS words named below (twin: `TargetStatus` in
//      src/gpu/workspace.rs)
//   7: scalars: array<f32>, [Σ w_y over non-ignored rows, W]
//   8: partial: array<f32>, one per ce_targets workgroup from element P.out_off
//      (ce_finish_sum: the reduced loss, a 1 × 1 tensor)
//   9: q: soft targets, of the logits' type and laid out like x from element P.t_off
//      (ce_soft_rows)
//  10: part: split rows' partial results (rows.wgsl)
//  11: z_out: array<f32>, the z-loss terms, one per row from element P.l_off (Z_OUT)
//  12: h_out: array<f32>, the entropies, one per row from element P.l_off (H_OUT)
//  13: stats: the shard kernels' row statistics, two vec4 per row from element P.s_off

#import vec
#import md
#import reduce
#import grid
#import layout
#import rows
#import sum
#import softcap
#import logits
#load_f32 weight
#load q

struct Params {
    rows: u32,          // rows in this dispatch (ce_finish_sum: values to add)
    cols: u32,          // K (a multiple of W unless gathered)
    in_off: u32,        // first element of x (a multiple of W unless gathered)
    out_off: u32,       // first element of grad; ce_targets: first partial
    g: u32,             // lanes per row
    t_off: u32,         // first element of targets (or q)
    l_off: u32,         // first element of loss
    row0: u32,          // index of this dispatch's first row in the whole batch
    ignore_index: i32,
    has_weight: u32,    // 1: weight is bound
    grad: u32,          // 1: write the gradient
    divide: u32,        // 1: divide the gradient by scalars[0] (mean)
    smoothing: f32,     // ε
    z: f32,             // z-loss coefficient
    scale: f32,         // multiplies the gradient
    segs: u32,          // segments per row (rows.wgsl)
    span: u32,          // vectors per segment
    phase: u32,         // split rows: which dispatch of the chain this is
    softcap: f32,       // c > 0: every logit read as c·tanh(x / c); 0: none
    col0: u32,          // shard kernels: the shard's first class in the whole vocabulary
    classes: u32,       // shard kernels: K, the classes of the whole vocabulary
    s_off: u32,         // shard kernels: first element of stats
}

const NO_ERROR: u32 = 0xffffffffu;
// The status words: batches counted so far; this batch's first bad row (or NO_ERROR) and its
// target; the first bad batch since the last check (or NO_ERROR), its row, target and K.
const BATCHES: u32 = 0u;
const BATCH_BAD_ROW: u32 = 1u;
const BATCH_BAD_VALUE: u32 = 2u;
const FIRST_BAD_BATCH: u32 = 3u;
const FIRST_BAD_ROW: u32 = 4u;
const FIRST_BAD_VALUE: u32 = 5u;
const FIRST_BAD_CLASSES: u32 = 6u;
const TARGET_ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read> weight: array<FS>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> scalars: array<f32>;
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;
@group(0) @binding(9) var<storage, read> q: array<XS>;
@group(0) @binding(11) var<storage, read_write> z_out: array<f32>;
@group(0) @binding(12) var<storage, read_write> h_out: array<f32>;
@group(0) @binding(13) var<storage, read_write> stats: array<vec4<f32>>;

// Which per-row extras the pipeline writes: fixed when it is built (src/gpu/cross_entropy.rs).
override Z_OUT: bool = false;
override H_OUT: bool = false;

// An entropy sum S = Σ e^(x - m')·(x - m') taken at the max of the pair md, at a max m ≥ it:
// e^(m' - m)·(S + (m' - m)·d); 0 where the pair holds nothing (d = 0, or e^(m' - m) = 0).
fn at_max(s: f32, md: vec2<f32>, m: f32) -> f32 {
    let f = exp(md.x - m);
    return select(f * (s + (md.x - m) * md_d(md)), 0.0, f == 0.0 || md_d(md) == 0.0);
}

// Vector i's share of the entropy sum, xm = x - m: 0 for the padding and the -inf logits.
fn entropy_vec(i: u32, xm: V) -> f32 {
    return entropy_terms(i, exp(xm), xm);
}

// entropy_vec given e = exp(xm), for callers that have it.
fn entropy_terms(i: u32, e: V, xm: V) -> f32 {
    return hsum(select(e * xm, V(0.0), (e == V(0.0)) | (vec_mask(i) == V(0.0))));
}

// The class weights of vector i of a row: 1 without weights; 0 for the missing elements of
// a gathered row's last vector either way, so that sums over the row skip them.
fn weight_vec(i: u32) -> V {
    if (P.has_weight == 0u) {
        return vec_mask(i);
    }
    return load_weight(0u, i, 0.0);
}

fn weight_at(c: u32) -> f32 {
    if (P.has_weight == 0u) {
        return 1.0;
    }
    return elem(load_weight(0u, vec_of(c), 0.0), comp_of(c));
}

@compute @workgroup_size(WG)
fn ce_targets(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              l: Lane) {
    let lane = lane_id(l);
    let group = group_index(wid, nwg);
    let start = group * TARGET_ITEMS * WG;
    var acc = 0.0;
    for (var k = 0u; k < TARGET_ITEMS; k = k + 1u) {
        let i = start + k * WG + lane;
        if (i < P.rows) {
            let t = targets[P.t_off + i];
            if (t != P.ignore_index) {
                if (t < 0 || u32(t) >= P.cols) {
                    atomicMin(&status[BATCH_BAD_ROW], P.row0 + i);
                } else {
                    acc = acc + weight_at(u32(t));
                }
            }
        }
    }
    let total = reduce_sum4(vec4<f32>(acc, 0.0, 0.0, 0.0), lane, WG, l).x;
    if (lane == 0u && start < P.rows) {
        partial[P.out_off + group] = total;
    }
}

fn sum_value(i: u32) -> f32 {
    return loss[P.l_off + i];
}

// Keeps this batch's check if it is the first bad one, readies the status for the next batch
// and counts the batch; returns whether the batch had a bad target. One invocation.
fn finish_batch() -> bool {
    let bad = atomicLoad(&status[BATCH_BAD_ROW]);
    if (bad != NO_ERROR && atomicLoad(&status[FIRST_BAD_BATCH]) == NO_ERROR) {
        atomicStore(&status[FIRST_BAD_BATCH], atomicLoad(&status[BATCHES]));
        atomicStore(&status[FIRST_BAD_ROW], bad);
        atomicStore(&status[FIRST_BAD_VALUE], atomicLoad(&status[BATCH_BAD_VALUE]));
        atomicStore(&status[FIRST_BAD_CLASSES], P.cols);
    }
    atomicStore(&status[BATCH_BAD_ROW], NO_ERROR);
    atomicAdd(&status[BATCHES], 1u);
    return bad != NO_ERROR;
}

@compute @workgroup_size(1)
fn ce_finish() {
    _ = finish_batch();
}

// The batch's finish and the loss's last level in one launch. A kernel of its own rather than
// ce_finish with nothing to add: lavapipe (Mesa 22.3) specialises a shader on uniforms that
// remove most of its code, and compiled that one afresh on every dispatch (1 ms each).
@compute @workgroup_size(WG)
fn ce_finish_sum(l: Lane) {
    let lane = lane_id(l);
    let total = block_sum(0u, P.rows, lane, l);
    // A bad batch writes no loss.
    if (lane == 0u && !finish_batch()) {
        var v = total * P.scale;
        if (P.divide == 1u) {
            v = v / scalars[0];
        }
        partial[0] = v;
    }
}

// The gradient's scale: P.scale, over the mean's denominator when asked.
fn grad_scale() -> f32 {
    if (P.divide == 1u) {
        return P.scale / scalars[0];
    }
    return P.scale;
}

// What the gradient pass and the loss need of a row, from its (m, d) and target.
struct GradRow {
    a: f32,         // the softmax's coefficient: (1 - ε)·w_y + ε·Σw / K + 2·z·lse
    b: f32,         // (1 - ε)·w_y, taken off at the target
    inv_d: f32,     // 1 / d
    scale: f32,     // grad_scale()
    y_vec: u32,     // the target's vector and its component there
    y_comp: u32,
    ignored: bool,
    smoothing: bool,
    eps_k: f32,     // ε / K
    m: f32,
    log_d: f32,
    z_term: f32,    // z·lse²
    w_sum: f32,     // Σ_c w_c
}

fn grad_row(md: vec2<f32>, y: u32, ignored: bool) -> GradRow {
    let k = f32(P.cols);
    var w_sum = k;
    if (P.has_weight == 1u) {
        w_sum = scalars[1];
    }
    var wy = 0.0;
    if (!ignored) {
        wy = weight_at(y);
    }
    return grad_row_of(md, vec3<f32>(wy, w_sum, k), y, ignored);
}

// grad_row given the target's weight, the weights' sum and K in `w` (w_y, Σ_c w_c, K), and
// the target's column y in the row (outside it: no element is the target).
fn grad_row_of(md: vec2<f32>, w: vec3<f32>, y: u32, ignored: bool) -> GradRow {
    let log_d = log_denominator(md);
    let lse = md.x + log_d;
    let eps = P.smoothing;
    let b = (1.0 - eps) * select(w.x, 0.0, ignored);
    // z·lse, and 0 without z-loss even where lse² overflows (a row at f32::MAX): NVIDIA's
    // driver was seen to form 0·(lse·lse) = NaN from `P.z * lse * lse`.
    let z_lse = select(0.0, P.z * lse, P.z != 0.0);
    let a = b + eps * w.y / w.z + 2.0 * z_lse;
    return GradRow(a, b, 1.0 / md_d(md), grad_scale(), vec_of(y), comp_of(y), ignored,
                   eps > 0.0, eps / w.z, md.x, log_d, z_lse * lse, w.y);
}

// One vector of the gradient pass, xm = x - m: writes its gradient (when asked) and returns
// its share of the smoothing sum Σ w_c (x_c - m).
fn grad_vec(r: RowLane, i: u32, xm: V, g: GradRow) -> f32 {
    var share = 0.0;
    if (g.smoothing && !g.ignored) {
        share = hsum(weight_vec(i) * xm);
    }
    if (P.grad == 1u) {
        var gv = V(0.0);
        if (!g.ignored) {
            gv = exp(xm) * (g.inv_d * g.a) - g.eps_k * weight_vec(i);
            if (i == g.y_vec) {
                gv = add_at(gv, g.y_comp, -g.b);
            }
            gv = gv * g.scale * cap_slope(xm + V(g.m));
        }
        write_grad(r, i, gv);
    }
    return share;
}

// The row's loss, by its first lane: (1 - ε)·w_y·(lse - x_y) + z·lse², plus the smoothing
// term (ε / K)(Σw · log d - Σ w_c (x_c - m)) from sums.x; and the extras asked for, from the
// entropy sum in sums.y.
fn write_loss(r: RowLane, xy: f32, sums: vec2<f32>, g: GradRow) {
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        var v = 0.0;
        if (!g.ignored) {
            v = g.b * ((g.m - xy) + g.log_d) + g.z_term;
            if (g.smoothing) {
                v = v + g.eps_k * (g.w_sum * g.log_d - sums.x);
            }
        }
        loss[P.l_off + r.row] = v;
        write_extras(r, g.ignored, g.z_term, g.log_d - sums.y * g.inv_d);
    }
}

// The extras asked for, by the row's first lane: 0 for an ignored row.
fn write_extras(r: RowLane, ignored: bool, z_term: f32, entropy: f32) {
    if (Z_OUT) {
        z_out[P.l_off + r.row] = select(z_term, 0.0, ignored);
    }
    if (H_OUT) {
        h_out[P.l_off + r.row] = select(entropy, 0.0, ignored);
    }
}

// row_stats (rows.wgsl) with the entropy sum beside the pair, so that a row read once gives
// it too: (m, r) of the row over the unit and S at its m. Each lane pushes S online (as the
// max grows, at_max brings it along), then brings it to the unit's max, and the unit adds.
fn row_stats_entropy(r: RowLane, l: Lane) -> vec3<f32> {
    var md = MD_IDENTITY;
    var s = 0.0;
    if (r.valid) {
        let base = row_base(r);
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            let v = load_x(base, i, neg_inf());
            let m = max(md.x, hmax(v));
            let e = exp(v - V(m));
            s = at_max(s, md, m) + entropy_terms(i, e, v - V(m));
            md = md_push_with(md, v, 1.0, m, e);
        }
    }
    let unit = unit_md(md, 1.0, r, l);
    let total = unit_sum4(vec4<f32>(at_max(s, md, unit.x), 0.0, 0.0, 0.0), r, l).x;
    return vec3<f32>(unit, total);
}

// A split row's entropy sum: each segment's (phase 0's partials, S beside x_y) brought to the
// row's max m and added, in segment order.
fn gather_entropy(r: RowLane, l: Lane, m: f32) -> f32 {
    var acc = 0.0;
    if (r.valid) {
        for (var k = r.pos; k < P.segs; k = k + P.g) {
            let i = part_at(r.row, k, 0u);
            acc = acc + at_max(part[i + 1u].y, part[i].xy, m);
        }
    }
    return unit_sum4(vec4<f32>(acc, 0.0, 0.0, 0.0), r, l).x;
}

// The target's logit, read by the row's first lane before any lane writes (in place, x
// becomes the gradient).
fn target_logit(r: RowLane, src: u32, y: u32, ignored: bool) -> f32 {
    if (!ignored && r.pos == 0u && r.seg == 0u) {
        return elem(load_x(src, vec_of(y), 0.0), comp_of(y));
    }
    return 0.0;
}

// A row's lane with its target: after the bad-row check of ce_targets (a bad batch makes
// every row invalid; the first bad row's lane keeps its target beside it, for the error
// message).
struct TargetLane {
    r: RowLane,
    y: u32,
    ignored: bool,
}

fn target_lane(wid: vec3<u32>, nwg: vec3<u32>, l: Lane) -> TargetLane {
    var r = row_lane(wid, nwg, l);
    let bad = atomicLoad(&status[BATCH_BAD_ROW]);
    if (P.phase == 0u && r.valid && r.pos == 0u && r.seg == 0u && P.row0 + r.row == bad) {
        atomicStore(&status[BATCH_BAD_VALUE], bitcast<u32>(targets[P.t_off + r.row]));
    }
    r.valid = r.valid && bad == NO_ERROR;
    var t = P.ignore_index;
    if (r.valid) {
        t = targets[P.t_off + r.row];
    }
    let ignored = t == P.ignore_index;
    return TargetLane(r, select(u32(t), 0u, ignored), ignored);
}

// Cross-entropy of a kept row (RowPlan::kept: whole, one dispatch, at most KEPT vectors per
// lane): read once, into registers, its gradient made from them. An entry point of its own:
// the array in ce_rows, even in a branch never taken, cost its rows 10 % on lavapipe.
@compute @workgroup_size(WG)
fn ce_rows_kept(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                l: Lane) {
    let tl = target_lane(wid, nwg, l);
    let r = tl.r;
    var kept: array<V, KEPT>;
    let xy = target_logit(r, row_base(r), tl.y, tl.ignored);
    let md = kept_stats(r, l, 1.0, &kept);
    grad_fence();
    let g = grad_row(md, tl.y, tl.ignored);
    var sums = vec2<f32>(0.0);
    if (r.valid && (P.grad == 1u || g.smoothing || H_OUT)) {
        for (var j = 0u; j < KEPT; j = j + 1u) {
            let i = r.first + r.pos + j * P.g;
            if (i < r.end) {
                // A gathered row's missing elements were kept as -inf: x - m = 0 there
                // (their weight is 0 in the smoothing sum, and 0·-inf is NaN).
                let xm = select(V(md.x), kept[j], vec_mask(i) != V(0.0)) - V(md.x);
                sums.x = sums.x + grad_vec(r, i, xm, g);
                if (H_OUT) {
                    sums.y = sums.y + entropy_vec(i, xm);
                }
            }
        }
    }
    if (g.smoothing || H_OUT) {
        sums = unit_sum4(vec4<f32>(sums, 0.0, 0.0), r, l).xy;
    }
    write_loss(r, xy, sums, g);
}

@compute @workgroup_size(WG)
fn ce_rows(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           l: Lane) {
    let tl = target_lane(wid, nwg, l);
    let r = tl.r;
    let y = tl.y;
    let ignored = tl.ignored;
    let src = row_base(r);
    // Phase 0: (m, d), the target's logit and (H_OUT) the entropy sum.
    var st = NO_PARTIAL;
    var ent = 0.0;
    if (P.phase == 0u) {
        let xy = target_logit(r, src, y, ignored);
        var stats = vec3<f32>(MD_IDENTITY, 0.0);
        if (H_OUT) {
            stats = row_stats_entropy(r, l);
        } else {
            stats = vec3<f32>(row_stats(r, l, 1.0), 0.0);
        }
        ent = stats.z;
        st = Partial(vec4<f32>(stats.xy, MD_IDENTITY), vec4<f32>(xy, ent, 0.0, 0.0));
        if (publish(r, 0u, st)) {
            return;
        }
    } else {
        st = Partial(vec4<f32>(gather_md(r, l, 0u, 1.0), MD_IDENTITY), gather_sums(r, l, 0u));
        if (H_OUT) {
            ent = gather_entropy(r, l, st.md.x);
        }
    }
    let md = st.md.xy;
    let xy = st.sums.x;
    grad_fence();
    let g = grad_row(md, y, ignored);
    // Phase 1: the gradient and the smoothing sum.
    var smooth_sum = 0.0;
    if (P.phase <= 1u) {
        if (r.valid && (P.grad == 1u || g.smoothing)) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                smooth_sum = smooth_sum + grad_vec(r, i, load_x(src, i, 0.0) - V(md.x), g);
            }
        }
        if (g.smoothing) {
            smooth_sum = unit_sum4(vec4<f32>(smooth_sum, 0.0, 0.0, 0.0), r, l).x;
        }
        if (publish(r, 1u, sums_partial(vec4<f32>(smooth_sum, 0.0, 0.0, 0.0)))) {
            return;
        }
    } else {
        smooth_sum = gather_sums(r, l, 1u).x;
    }
    write_loss(r, xy, vec2<f32>(smooth_sum, ent), g);
}

@compute @workgroup_size(WG)
fn ce_soft_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                l: Lane) {
    let r = row_lane(wid, nwg, l);
    let src = row_base(r);
    let qb = row_at(r, P.t_off);
    let k = f32(P.cols);
    let eps = P.smoothing;
    let want_grad = P.grad == 1u;
    // Phase 0: (m, d) and S = Σ w_c q'_c, both needed before the first gradient element is
    // written.
    var st = NO_PARTIAL;
    if (P.phase == 0u) {
        var s = 0.0;
        if (r.valid && want_grad) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                s = s + hsum(weight_vec(i) * ((1.0 - eps) * load_q(qb, i, 0.0) + eps / k));
            }
        }
        let md = row_stats(r, l, 1.0);
        if (want_grad) {
            s = unit_sum4(vec4<f32>(s, 0.0, 0.0, 0.0), r, l).x;
        }
        st = Partial(vec4<f32>(md, MD_IDENTITY), vec4<f32>(s, 0.0, 0.0, 0.0));
        if (publish(r, 0u, st)) {
            return;
        }
    } else {
        st = Partial(vec4<f32>(gather_md(r, l, 0u, 1.0), MD_IDENTITY), gather_sums(r, l, 0u));
    }
    let md = st.md.xy;
    let s = st.sums.x;
    grad_fence();

    // Phase 1: the loss terms and the gradient.
    var total = vec2<f32>(0.0);
    if (P.phase <= 1u) {
        let log_d = log_denominator(md);
        let inv_d = 1.0 / md_d(md);
        let scale = grad_scale();
        var acc = vec2<f32>(0.0);
        if (r.valid) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                let xm = load_x(src, i, 0.0) - V(md.x);
                let wq = weight_vec(i) * ((1.0 - eps) * load_q(qb, i, 0.0) + eps / k);
                acc.x = acc.x + hsum(wq * (xm - V(log_d)));
                if (H_OUT) {
                    acc.y = acc.y + entropy_vec(i, xm);
                }
                if (want_grad) {
                    let gv = (exp(xm) * (inv_d * s) - wq) * scale;
                    write_grad(r, i, gv * cap_slope(xm + V(md.x)));
                }
            }
        }
        total = unit_sum4(vec4<f32>(acc, 0.0, 0.0), r, l).xy;
        if (publish(r, 1u, sums_partial(vec4<f32>(total, 0.0, 0.0)))) {
            return;
        }
    } else {
        total = gather_sums(r, l, 1u).xy;
    }
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        loss[P.l_off + r.row] = -total.x;
        write_extras(r, false, 0.0, log_denominator(md) - total.y / md_d(md));
    }
}

// Vocabulary-parallel cross-entropy (SPEC.md §2): a shard holds the columns P.col0 ..
// P.col0 + P.cols of a vocabulary of P.classes; the targets are indices into the whole of it.
// ce_shard_stats gives each row's ShardStats over the shard's columns; the host (or any
// all-reduce) merges the shards' rows with the same combine as stats_combine (twin:
// `merge_shard_stats` in src/shard.rs); ce_shard_loss and ce_shard_grad read the merged rows.

// A row's statistics over some of its columns (one lane's, a segment's, a shard's, or merged):
// (m, r) of the capped logits (md.wgsl); the smoothing sum Σ w_c·(x_c - m) and the entropy sum
// Σ e^(x_c - m)·(x_c - m), both at m; the target's logit and class weight where the target is
// among the columns (else 0: the merge adds them); Σ w_c. Every sum is taken whatever the
// options, so that the statistics depend on the softcap and the targets alone. In memory two
// vec4 per row: (m, r, smooth, ent), (xy, wy, w, 0).
struct ShardStats {
    md: vec2<f32>,
    smoothing_sum: f32,
    ent: f32,
    xy: f32,
    wy: f32,
    w: f32,
}

const SHARD_EMPTY: ShardStats = ShardStats(MD_IDENTITY, 0.0, 0.0, 0.0, 0.0, 0.0);

// Vector index of no element: a row whose target is in another shard.
const NO_VEC: u32 = 0xffffffffu;

fn stats_pack(s: ShardStats) -> Partial {
    return Partial(vec4<f32>(s.md, s.smoothing_sum, s.ent), vec4<f32>(s.xy, s.wy, s.w, 0.0));
}

fn stats_unpack(a: vec4<f32>, b: vec4<f32>) -> ShardStats {
    return ShardStats(a.xy, a.z, a.w, b.x, b.y, b.z);
}

// A smoothing sum s = Σ w_c·(x_c - m') with Σ w_c = w, taken at the max m ≥ m' instead.
fn smooth_at(s: f32, m_from: f32, w: f32, m: f32) -> f32 {
    return select(s + (m_from - m) * w, s, w == 0.0);
}

// The statistics of the columns of a and b together: symmetric in a and b to the last bit
// (each side brought to the common max on its own, then added).
fn stats_combine(a: ShardStats, b: ShardStats) -> ShardStats {
    let md = md_combine(a.md, b.md, 1.0);
    let m = md.x;
    return ShardStats(md,
                      smooth_at(a.smoothing_sum, a.md.x, a.w, m) + smooth_at(b.smoothing_sum, b.md.x, b.w, m),
                      at_max(a.ent, a.md, m) + at_max(b.ent, b.md, m),
                      a.xy + b.xy, a.wy + b.wy, a.w + b.w);
}

// Vector i of the row, v (padding at -inf), added to a lane's running statistics.
fn stats_push(s: ShardStats, i: u32, v: V) -> ShardStats {
    let m = max(s.md.x, hmax(v));
    let e = exp(v - V(m));
    // The padding's x - m is 0 (its weight is 0, and 0·-inf is NaN).
    let w = weight_vec(i);
    let xm = select(V(0.0), v - V(m), vec_mask(i) != V(0.0));
    return ShardStats(md_push_with(s.md, v, 1.0, m, e),
                      smooth_at(s.smoothing_sum, s.md.x, s.w, m) + hsum(w * xm),
                      at_max(s.ent, s.md, m) + entropy_terms(i, e, v - V(m)),
                      s.xy, s.wy, s.w + hsum(w));
}

// The unit's statistics over its g lanes; the target's logit and weight are lane 0's (the
// only lane that reads them). Call in uniform control flow.
fn unit_stats(s: ShardStats, r: RowLane, l: Lane) -> ShardStats {
    let md = unit_md(s.md, 1.0, r, l);
    let m = md.x;
    let sums = unit_sum4(vec4<f32>(smooth_at(s.smoothing_sum, s.md.x, s.w, m), at_max(s.ent, s.md, m),
                                   s.w, 0.0), r, l);
    return ShardStats(md, sums.x, sums.y, s.xy, s.wy, sums.z);
}

fn stats_at(row: u32) -> ShardStats {
    let i = P.s_off / 4u + row * 2u;
    return stats_unpack(stats[i], stats[i + 1u]);
}

// Whether class y of the whole vocabulary is one of the shard's columns.
fn in_shard(y: u32) -> bool {
    return y >= P.col0 && y - P.col0 < P.cols;
}

// What the gradient and the loss need of a row, from its merged statistics: grad_row with
// the vocabulary's K and Σ w, and the target's column in this shard (if there).
fn shard_grad_row(s: ShardStats, y: u32, ignored: bool) -> GradRow {
    let k = f32(P.classes);
    let w_sum = select(k, s.w, P.has_weight == 1u);
    var g = grad_row_of(s.md, vec3<f32>(s.wy, w_sum, k), y - P.col0, ignored);
    if (!in_shard(y)) {
        g.y_vec = NO_VEC;
    }
    return g;
}

// Pass 1: each row's ShardStats over the shard's columns into `stats`. Split rows: phase 0
// publishes each segment's, phase 1 combines them in segment order.
@compute @workgroup_size(WG)
fn ce_shard_stats(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  l: Lane) {
    let tl = target_lane(wid, nwg, l);
    let r = tl.r;
    var st = SHARD_EMPTY;
    if (P.phase == 0u) {
        if (r.valid) {
            let base = row_base(r);
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                st = stats_push(st, i, load_x(base, i, neg_inf()));
            }
            if (r.pos == 0u && r.seg == 0u && !tl.ignored && in_shard(tl.y)) {
                let c = tl.y - P.col0;
                st.xy = elem(load_x(base, vec_of(c), 0.0), comp_of(c));
                st.wy = weight_at(c);
            }
        }
        st = unit_stats(st, r, l);
        if (publish(r, 0u, stats_pack(st))) {
            return;
        }
    } else {
        if (r.valid) {
            for (var k = r.pos; k < P.segs; k = k + P.g) {
                let i = part_at(r.row, k, 0u);
                st = stats_combine(st, stats_unpack(part[i], part[i + 1u]));
            }
        }
        st = unit_stats(st, r, l);
    }
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        let i = P.s_off / 4u + r.row * 2u;
        let packed = stats_pack(st);
        stats[i] = packed.md;
        stats[i + 1u] = packed.sums;
    }
}

// Pass 2's loss, one invocation per row, from the merged statistics: the row's loss (and the
// extras asked for) as ce_rows writes it, and its target's weight into partial (from element
// P.out_off; 0 for an ignored row), whose sum is the mean's denominator.
@compute @workgroup_size(WG)
fn ce_shard_loss(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let row = group_index(wid, nwg) * WG + li;
    if (row >= P.rows || atomicLoad(&status[BATCH_BAD_ROW]) != NO_ERROR) {
        return;
    }
    let t = targets[P.t_off + row];
    let ignored = t == P.ignore_index;
    let s = stats_at(row);
    let g = shard_grad_row(s, select(u32(t), 0u, ignored), ignored);
    write_loss(RowLane(li, row, 0u, 0u, 0u, 0u, true), s.xy, vec2<f32>(s.smoothing_sum, s.ent), g);
    partial[P.out_off + row] = select(s.wy, 0.0, ignored);
}

// Pass 2's gradient: the shard's slice of it, from the merged statistics; no reduction, so a
// split row's segments each write theirs in the one dispatch.
@compute @workgroup_size(WG)
fn ce_shard_grad(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 l: Lane) {
    let tl = target_lane(wid, nwg, l);
    let r = tl.r;
    if (!r.valid) {
        return;
    }
    var g = shard_grad_row(stats_at(r.row), tl.y, tl.ignored);
    // The smoothing sum is the merged statistics' already.
    g.smoothing = false;
    let src = row_base(r);
    for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
        _ = grad_vec(r, i, load_x(src, i, 0.0) - V(g.m), g);
    }
}

// The unfused baseline the benchmarks compare the fused kernel with (bench::unfused): from
// log-probabilities lp in x (written by softmax.wgsl's softmax_rows), the loss -lp[y] per row
// (unfused_gather) and the gradient exp(lp) - one_hot(y) (unfused_grad), each its own launch
// and its own pass over memory. Class-index targets, no options, reduction none.
@compute @workgroup_size(WG)
fn unfused_gather(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let row = group_index(wid, nwg) * WG + li;
    if (row >= P.rows) {
        return;
    }
    let t = targets[P.t_off + row];
    var v = 0.0;
    if (t != P.ignore_index) {
        let y = u32(t);
        v = -elem(load_x(row_start(P.in_off, row), vec_of(y), 0.0), comp_of(y));
    }
    loss[P.l_off + row] = v;
}

@compute @workgroup_size(WG)
fn unfused_grad(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = group_index(wid, nwg) * WG + li;
    let n = row_vecs();
    if (i >= P.rows * n) {
        return;
    }
    let t = targets[P.t_off + i / n];
    var gv = V(0.0);
    if (t != P.ignore_index) {
        let y = u32(t);
        gv = exp(load_x(row_start(P.in_off, i / n), i % n, 0.0));
        if (i % n == vec_of(y)) {
            gv = add_at(gv, comp_of(y), -1.0);
        }
    }
    let row = i / n;
    write_grad(RowLane(li, row, 0u, 0u, 0u, 0u, true), i - row * n, gv);
}
