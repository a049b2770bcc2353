// Information theory (SPEC.md §3), batched over rows, in nats divided by ln b:
//   self-information  h = -log P                     (elementwise)
//   entropy           H(P)   = -Σ P log P            0·log 0 = 0
//   cross-entropy     H(P,Q) = -Σ P log Q            P = 0 terms are 0; P > 0, Q = 0 → +inf
//   KL divergence     D(P‖Q) = Σ P (log P - log Q)
//   JS divergence     ½ D(P‖M) + ½ D(Q‖M),  M = ½ (P + Q)
// Each side arrives as probabilities, log-probabilities or logits (P.from_p, P.from_q: 0, 1,
// 2); from logits at temperature T the stable log-softmax of x / T happens here, from the
// row's online (max, Σ exp) (md.wgsl), never as a separate launch.
//
// Gradient w.r.t. Q's logits z (distillation: teacher P, student Q = softmax(z / T)), of the
// row's value in base b, times P.scale:
//   cross-entropy, KL:  (q_c·Σ_j p_j - p_c) / T
//   JS:                 q_c·(h_c - Σ_j q_j h_j) / T,   h_c = ½ (log q_c - log m_c)
//
// Passes over a row: one for the (max, Σ exp) of each logits side (only then), one for the
// value (and the sums the gradient needs), one writing the gradient (only when asked).
//
// Joint tables (`joint`): P.g lanes per table J of X × Y counts or probabilities,
// normalised by its total; writes H(X), H(Y), H(X,Y), H(Y|X), I(X;Y) per table.
//
// Bindings (twin: src/gpu/info.rs):
//   0: uniform Params
//   1: x = P, rows × K from element P.in_off (rows.wgsl reads it); joint: the tables
//   2: out_elems, rows × K from element P.out_off: the gradient, or the self-information
//   5: out_rows, one value per row from element P.l_off (joint: 5 per table)
//   9: q = Q, rows × K from element P.q_off

#import vec
#import md
#import reduce
#import grid
#import rows

struct Params {
    rows: u32,
    cols: u32,          // K (joint: X · Y)
    in_off: u32,
    out_off: u32,
    g: u32,             // lanes per row
    q_off: u32,
    l_off: u32,
    kind: u32,          // 0 entropy, 1 cross-entropy, 2 KL, 3 JS, 4 self-information
    from_p: u32,        // 0 probabilities, 1 log-probabilities, 2 logits
    from_q: u32,
    grad: u32,          // 1: write the gradient w.r.t. Q's logits
    x_len: u32,         // joint: X (rows of a table); Y = cols / x_len
    inv_t: f32,         // 1 / temperature (logits sides)
    inv_ln_b: f32,      // 1 / ln(base)
    scale: f32,         // multiplies the gradient (the reduction's factor)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> out_elems: array<V>;
@group(0) @binding(5) var<storage, read_write> out_rows: array<f32>;
@group(0) @binding(9) var<storage, read> q: array<V>;

const KIND_ENTROPY: u32 = 0u;
const KIND_JS: u32 = 3u;
const KIND_SELF: u32 = 4u;
const FROM_PROBS: u32 = 0u;
const FROM_LOGPROBS: u32 = 1u;
const FROM_LOGITS: u32 = 2u;

// A side's probabilities and their logs.
struct Side {
    p: V,
    lp: V,
}

// log that is -inf at 0 on every device (SPIR-V leaves log(0) to the implementation).
fn log0(v: V) -> V {
    return select(log(v), V(bitcast<f32>(0xff800000u)), v == V(0.0));
}

// Probabilities and logs of one vector `v` of a side given as `form`, with the row's
// (m, d) when from logits.
fn side(v: V, form: u32, md: vec2<f32>) -> Side {
    if (form == FROM_PROBS) {
        return Side(v, log0(v));
    }
    if (form == FROM_LOGPROBS) {
        return Side(exp(v), v);
    }
    let lp = (v - V(md.x)) * P.inv_t - V(log(md.y));
    return Side(exp(lp), lp);
}

// p·(a) with 0·anything = 0 where p = 0 (NaN in p stays NaN).
fn weighted(p: V, a: V) -> V {
    return select(p * a, V(0.0), p == V(0.0));
}

// The row's value terms of one vector (nats).
fn terms(a: Side, b: Side) -> V {
    switch P.kind {
        case 0u: { return -weighted(a.p, a.lp); }
        case 1u: { return -weighted(a.p, b.lp); }
        case 2u: { return weighted(a.p, a.lp - b.lp); }
        default: {
            let lm = log0(0.5 * (a.p + b.p));
            return 0.5 * (weighted(a.p, a.lp - lm) + weighted(b.p, b.lp - lm));
        }
    }
}

// JS gradient's h_c = ½ (log q_c - log m_c), 0 where q_c = 0.
fn js_h(a: Side, b: Side) -> V {
    let lm = log0(0.5 * (a.p + b.p));
    return select(0.5 * (b.lp - lm), V(0.0), b.p == V(0.0));
}

@compute @workgroup_size(WG)
fn info_rows(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             l: Lane) {
    let r = row_lane(wid, nwg, l);
    let n = P.cols / W;
    let pb = row_base(r);
    let qb = row_at(r, P.q_off);
    let ob = row_at(r, P.out_off);
    let two_sided = P.kind != KIND_ENTROPY && P.kind != KIND_SELF;

    // Pass 1: (m, d) of each logits side.
    var md_p = MD_IDENTITY;
    if (P.from_p == FROM_LOGITS) {
        md_p = row_stats(r, l, P.inv_t);
    }
    var md_q = MD_IDENTITY;
    if (two_sided && P.from_q == FROM_LOGITS) {
        var acc = MD_IDENTITY;
        if (r.valid) {
            for (var i = r.pos; i < n; i = i + P.g) {
                acc = md_push(acc, q[qb + i], P.inv_t);
            }
        }
        md_q = reduce_md(acc, P.inv_t, r.lane, P.g, l);
    }

    if (P.kind == KIND_SELF) {
        if (r.valid) {
            for (var i = r.pos; i < n; i = i + P.g) {
                out_elems[ob + i] = -side(x[pb + i], P.from_p, md_p).lp * P.inv_ln_b;
            }
        }
        return;
    }

    // Pass 2: the value, Σ p and (JS) Σ q·h.
    var sums = vec4<f32>(0.0);
    if (r.valid) {
        for (var i = r.pos; i < n; i = i + P.g) {
            let a = side(x[pb + i], P.from_p, md_p);
            var b = a;
            if (two_sided) {
                b = side(q[qb + i], P.from_q, md_q);
            }
            sums.x = sums.x + hsum(terms(a, b));
            if (P.grad == 1u) {
                sums.y = sums.y + hsum(a.p);
                if (P.kind == KIND_JS) {
                    sums.z = sums.z + hsum(b.p * js_h(a, b));
                }
            }
        }
    }
    sums = reduce_sum4(sums, r.lane, P.g, l);
    if (r.valid && r.pos == 0u) {
        out_rows[P.l_off + r.row] = sums.x * P.inv_ln_b;
    }

    // Pass 3: the gradient w.r.t. Q's logits.
    if (P.grad == 1u && r.valid) {
        let f = P.scale * P.inv_t * P.inv_ln_b;
        for (var i = r.pos; i < n; i = i + P.g) {
            let a = side(x[pb + i], P.from_p, md_p);
            let b = side(q[qb + i], P.from_q, md_q);
            var gv: V;
            if (P.kind == KIND_JS) {
                gv = b.p * (js_h(a, b) - V(sums.z));
            } else {
                gv = b.p * sums.y - a.p;
            }
            out_elems[ob + i] = gv * f;
        }
    }
}

// Joint tables: x holds tables of X × Y (P.cols = X·Y, P.x_len = X), P.g lanes per table
// (several small tables share a workgroup, as rows do); out_rows gets [H(X), H(Y), H(X,Y),
// H(Y|X), I(X;Y)] per table, in base b. Read as f32 (W = 1): the columns are strided.
@compute @workgroup_size(WG)
fn joint(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         l: Lane) {
    let r = row_lane(wid, nwg, l);
    let xs = P.x_len;
    let ys = P.cols / max(xs, 1u);
    let base = row_base(r);
    // Pass 1: the table's total.
    var total = 0.0;
    if (r.valid) {
        for (var i = r.pos; i < P.cols; i = i + P.g) {
            total = total + elem(x[base + i], 0u);
        }
    }
    total = reduce_sum4(vec4<f32>(total, 0.0, 0.0, 0.0), r.lane, P.g, l).x;
    let inv_total = 1.0 / total;
    // Pass 2: -Σ p log p over the cells, and over the row marginals p(x).
    var h = vec4<f32>(0.0);
    if (r.valid) {
        for (var i = r.pos; i < xs; i = i + P.g) {
            var px = 0.0;
            for (var j = 0u; j < ys; j = j + 1u) {
                let p = elem(x[base + i * ys + j], 0u) * inv_total;
                px = px + p;
                h.z = h.z - elem(weighted(V(p), log0(V(p))), 0u);
            }
            h.x = h.x - elem(weighted(V(px), log0(V(px))), 0u);
        }
        // Pass 3: the column marginals p(y) (consecutive lanes read consecutive columns).
        for (var j = r.pos; j < ys; j = j + P.g) {
            var py = 0.0;
            for (var i = 0u; i < xs; i = i + 1u) {
                py = py + elem(x[base + i * ys + j], 0u) * inv_total;
            }
            h.y = h.y - elem(weighted(V(py), log0(V(py))), 0u);
        }
    }
    h = reduce_sum4(h, r.lane, P.g, l) * P.inv_ln_b;
    if (r.valid && r.pos == 0u) {
        let o = P.l_off + r.row * 5u;
        out_rows[o] = h.x;
        out_rows[o + 1u] = h.y;
        out_rows[o + 2u] = h.z;
        out_rows[o + 3u] = h.z - h.x;
        out_rows[o + 4u] = h.x + h.y - h.z;
    }
}
