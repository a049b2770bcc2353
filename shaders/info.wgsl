// Information theory (SPEC.md §3), batched over rows, in nats divided by ln b:
//   self-information  h = -log P                     (elementwise)
//   entropy           H(P)   = -Σ P log P            0·log 0 = 0
//   cross-entropy     H(P,Q) = -Σ P log Q            P = 0 terms are 0; P > 0, Q = 0 → +inf
//   KL divergence     D(P‖Q) = Σ P (log P - log Q)
//   JS divergence     ½ D(P‖M) + ½ D(Q‖M),  M = ½ (P + Q)
// Each side arrives as probabilities, log-probabilities or logits (FORM: 0, 1, 2); from logits
// at temperature T the stable log-softmax of x / T happens here, from the row's online
// (max, Σ exp) (md.wgsl), never as a separate launch.
//
// Gradient w.r.t. Q's logits z (distillation: teacher P, student Q = softmax(z / T)), of the
// row's value in base b, times P.scale:
//   cross-entropy, KL:  (q_c·Σ_j p_j - p_c) / T
//   JS:                 q_c·(h_c - Σ_j q_j h_j) / T,   h_c = ½ (log q_c - log m_c)
// Under a softcap (logits only) both sides' logits are read capped and the gradient w.r.t.
// the raw z takes the factor cap_slope (softcap.wgsl).
//
// Passes over a row (`info_rows`): one for the (max, Σ exp) of each logits side (only then),
// one for the value (and the sums the gradient needs), one writing the gradient (only when
// asked). Split rows (rows.wgsl) run them as phases 0, 1 and 2 (self-information: 0 and 1).
// Entropy, cross-entropy and KL with every side from logits (`info_logits_rows`) take their
// value in the statistics pass itself: one pass, two with the gradient (phases 0 and 1).
//
// Bindings (twin: src/gpu/info.rs):
//   0: uniform Params
//   1: x = P, rows × K from element P.in_off (rows.wgsl reads it)
//   2: out_elems, rows × K from element P.out_off: the gradient, or the self-information
//   5: out_rows, one value per row from element P.l_off
//   9: q = Q, rows × K from element P.q_off
//  10: part: split rows' partial results (rows.wgsl)

#import vec
#import md
#import reduce
#import grid
#import layout
#import rows
#import logs
#import softcap

struct Params {
    rows: u32,
    cols: u32,          // K
    in_off: u32,
    out_off: u32,
    g: u32,             // lanes per row
    q_off: u32,
    l_off: u32,
    grad: u32,          // 1: write the gradient w.r.t. Q's logits
    inv_t: f32,         // 1 / temperature (logits sides)
    inv_ln_b: f32,      // 1 / ln(base)
    scale: f32,         // multiplies the gradient (the reduction's factor)
    segs: u32,          // segments per row (rows.wgsl)
    span: u32,          // vectors per segment
    phase: u32,         // split rows: which dispatch of the chain this is
    softcap: f32,       // c > 0: every logit read as c·tanh(x / c) (softcap.wgsl); 0: none
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<XS>;
@group(0) @binding(2) var<storage, read_write> out_elems: array<XS>;
@group(0) @binding(5) var<storage, read_write> out_rows: array<f32>;
@group(0) @binding(9) var<storage, read> q: array<XS>;
#load x cap
#load q cap
#store out_elems

// What the pipeline computes (0 entropy, 1 cross-entropy, 2 KL, 3 JS, 4 self-information) and
// how both sides are given (0 probabilities, 1 log-probabilities, 2 logits): constants fixed
// when it is built (src/gpu/info.rs), so that the branches on them leave the loops (JS over
// 4096 × 4096 on lavapipe: 103–109 ms as uniforms, 79–83 as constants).
override KIND: u32 = 0u;
override FORM: u32 = 0u;

// KIND. Twin: `Kind` in src/gpu/info.rs.
const KIND_ENTROPY: u32 = 0u;
const KIND_CROSS_ENTROPY: u32 = 1u;
const KIND_KL: u32 = 2u;
const KIND_JS: u32 = 3u;
const KIND_SELF: u32 = 4u;
const FROM_PROBS: u32 = 0u;
const FROM_LOGPROBS: u32 = 1u;
const FROM_LOGITS: u32 = 2u;

// What stands for the missing elements of a gathered row's last vector in a side given as
// `form`: probability 0 (0 for probabilities, -inf for their logs and for logits), which
// every sum below counts as nothing.
fn pad(form: u32) -> f32 {
    return select(neg_inf(), 0.0, form == FROM_PROBS);
}

// A side's probabilities and their logs.
struct Side {
    p: V,
    lp: V,
}

// Probabilities and logs of one vector `v` of a side given as `form`, with the row's
// (m, log d) when from logits.
fn side(v: V, form: u32, shift: vec2<f32>) -> Side {
    if (form == FROM_PROBS) {
        return Side(v, log0(v));
    }
    if (form == FROM_LOGPROBS) {
        return Side(exp(v), v);
    }
    let lp = (v - V(shift.x)) * P.inv_t - V(shift.y);
    return Side(exp(lp), lp);
}

// (m, log d) of a row's (m, d).
fn log_shift(md: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(md.x, log_denominator(md));
}

// The row's value terms of one vector (nats).
fn terms(a: Side, b: Side) -> V {
    switch KIND {
        case KIND_ENTROPY: { return -weighted(a.p, a.lp); }
        case KIND_CROSS_ENTROPY: { return -weighted(a.p, b.lp); }
        case KIND_KL: { return weighted(a.p, a.lp - b.lp); }
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
    let pb = row_base(r);
    let qb = row_at(r, P.q_off);
    let ob = row_at(r, P.out_off);
    let two_sided = KIND != KIND_ENTROPY && KIND != KIND_SELF;

    // Phase 0: (m, d) of each logits side.
    var st = NO_PARTIAL;
    if (P.phase == 0u) {
        var md_p = MD_IDENTITY;
        if (FORM == FROM_LOGITS) {
            md_p = row_stats(r, l, P.inv_t);
        }
        var md_q = MD_IDENTITY;
        if (two_sided && FORM == FROM_LOGITS) {
            var acc = MD_IDENTITY;
            if (r.valid) {
                for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                    acc = md_push(acc, load_q(qb, i, neg_inf()), P.inv_t);
                }
            }
            md_q = unit_md(acc, P.inv_t, r, l);
        }
        st = Partial(vec4<f32>(md_p, md_q), vec4<f32>(0.0));
        if (publish(r, 0u, st)) {
            return;
        }
    } else {
        st = Partial(gather_md2(r, l, 0u, P.inv_t), vec4<f32>(0.0));
    }
    let shift_p = log_shift(st.md.xy);
    let shift_q = log_shift(st.md.zw);

    if (KIND == KIND_SELF) {
        if (r.valid) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                let a = side(load_x(pb, i, pad(FORM)), FORM, shift_p);
                store_out_elems(ob, i, -a.lp * P.inv_ln_b);
            }
        }
        return;
    }

    // Phase 1: the value, Σ p and (JS) Σ q·h.
    var sums = vec4<f32>(0.0);
    if (P.phase <= 1u) {
        if (r.valid) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                let a = side(load_x(pb, i, pad(FORM)), FORM, shift_p);
                var b = a;
                if (two_sided) {
                    b = side(load_q(qb, i, pad(FORM)), FORM, shift_q);
                }
                sums.x = sums.x + hsum(terms(a, b));
                if (P.grad == 1u) {
                    sums.y = sums.y + hsum(a.p);
                    if (KIND == KIND_JS) {
                        sums.z = sums.z + hsum(b.p * js_h(a, b));
                    }
                }
            }
        }
        sums = unit_sum4(sums, r, l);
        if (publish(r, 1u, sums_partial(sums))) {
            return;
        }
    } else {
        sums = gather_sums(r, l, 1u);
    }
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        out_rows[P.l_off + r.row] = sums.x * P.inv_ln_b;
    }

    // Phase 2 (with the others when the row is not split): the gradient w.r.t. Q's logits.
    if (P.grad == 1u && r.valid) {
        let f = P.scale * P.inv_t * P.inv_ln_b;
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            let a = side(load_x(pb, i, pad(FORM)), FORM, shift_p);
            let zv = load_q(qb, i, pad(FORM));
            let b = side(zv, FORM, shift_q);
            var gv: V;
            if (KIND == KIND_JS) {
                gv = b.p * (js_h(a, b) - V(sums.z));
            } else {
                gv = b.p * sums.y - a.p;
            }
            store_out_elems(ob, i, gv * f * cap_slope(zv));
        }
    }
}

// From logits on every side, entropy, cross-entropy and KL need one pass for their value:
// beside each side's online pair (md.wgsl) one running sum, kept relative to the running
// maxima m_p, m_q and moved when either moves,
//   u = Σ e·(A·(x - m_p) - B·(y - m_q))·s,   e = exp((x - m_p)·s),  s = 1/T,
// with (A, B) = (1, 0) for entropy, (0, 1) cross-entropy, (1, 1) KL, gives (Σ p = 1)
//   H(P) = log d_p - u/d_p,   H(P,Q) = u/d_p + log d_q,   D(P‖Q) = u/d_p - log d_p + log d_q.
// Terms where e = 0 are 0 (P = 0 terms are 0), so a -inf logit of Q under P's mass gives +inf.
struct LogitsAcc {
    p: vec2<f32>,
    q: vec2<f32>,
    u: f32,
}

// (A, B) of KIND.
fn logits_ab() -> vec2<f32> {
    switch KIND {
        case KIND_ENTROPY: { return vec2<f32>(1.0, 0.0); }
        case KIND_CROSS_ENTROPY: { return vec2<f32>(0.0, 1.0); }
        default: { return vec2<f32>(1.0, 1.0); }
    }
}

// acc's u moved to the maxima (mp, mq): P's weights rescale by exp((m_p' - mp)·s) and every
// term's differences shift by the maxima's moves. 0 while P has no mass.
fn u_moved(acc: LogitsAcc, mp: f32, mq: f32, ab: vec2<f32>) -> f32 {
    let alpha = exp((acc.p.x - mp) * P.inv_t);
    let dp = md_d(acc.p) * alpha;
    let shift = ab.x * (acc.p.x - mp) - ab.y * (acc.q.x - mq);
    return select(alpha * acc.u + dp * shift * P.inv_t, 0.0, dp == 0.0);
}

// Adds one vector of P (xv) and, for two sides, of Q (yv).
fn logits_push(acc: LogitsAcc, xv: V, yv: V, ab: vec2<f32>, two: bool) -> LogitsAcc {
    let s = P.inv_t;
    let mp = max(acc.p.x, hmax(xv));
    let ep = exp((xv - V(mp)) * s);
    var q = acc.q;
    if (two) {
        let mq = max(acc.q.x, hmax(yv));
        q = md_push_with(acc.q, yv, s, mq, exp((yv - V(mq)) * s));
    }
    let t = (ab.x * (xv - V(mp)) - ab.y * (yv - V(q.x))) * s;
    let u = u_moved(acc, mp, q.x, ab) + hsum(select(ep * t, V(0.0), ep == V(0.0)));
    return LogitsAcc(md_push_with(acc.p, xv, s, mp, ep), q, u);
}

@compute @workgroup_size(WG)
fn info_logits_rows(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    l: Lane) {
    let r = row_lane(wid, nwg, l);
    let pb = row_base(r);
    let qb = row_at(r, P.q_off);
    let ob = row_at(r, P.out_off);
    let two = KIND != KIND_ENTROPY;
    let ab = logits_ab();

    // Phase 0: both pairs and u over the lane's vectors, then over the unit: the pairs
    // reduced, each lane's u moved to the unit's maxima and summed.
    var st = NO_PARTIAL;
    if (P.phase == 0u) {
        var acc = LogitsAcc(MD_IDENTITY, MD_IDENTITY, 0.0);
        if (r.valid) {
            for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
                // A gathered row's missing elements are -inf on both sides: e = 0, no term.
                let xv = load_x(pb, i, neg_inf());
                var yv = xv;
                if (two) {
                    yv = load_q(qb, i, neg_inf());
                }
                acc = logits_push(acc, xv, yv, ab, two);
            }
        }
        let mdp = unit_md(acc.p, P.inv_t, r, l);
        var mdq = MD_IDENTITY;
        if (two) {
            mdq = unit_md(acc.q, P.inv_t, r, l);
        }
        let u = unit_sum4(vec4<f32>(u_moved(acc, mdp.x, mdq.x, ab), 0.0, 0.0, 0.0), r, l).x;
        st = Partial(vec4<f32>(mdp, mdq), vec4<f32>(u, 0.0, 0.0, 0.0));
        if (publish(r, 0u, st)) {
            return;
        }
    } else {
        // Split rows: the segments' pairs, then their u moved to the row's maxima.
        let md = gather_md2(r, l, 0u, P.inv_t);
        var acc_u = 0.0;
        if (r.valid) {
            for (var k = r.pos; k < P.segs; k = k + P.g) {
                let i = part_at(r.row, k, 0u);
                let seg = LogitsAcc(part[i].xy, part[i].zw, part[i + 1u].x);
                acc_u = acc_u + u_moved(seg, md.x, md.z, ab);
            }
        }
        let u = unit_sum4(vec4<f32>(acc_u, 0.0, 0.0, 0.0), r, l).x;
        st = Partial(md, vec4<f32>(u, 0.0, 0.0, 0.0));
    }
    let log_dp = log_denominator(st.md.xy);
    let log_dq = log_denominator(st.md.zw);
    if (r.valid && r.pos == 0u && r.seg == 0u) {
        let v = st.sums.x / md_d(st.md.xy);
        var value: f32;
        switch KIND {
            case KIND_ENTROPY: { value = log_dp - v; }
            case KIND_CROSS_ENTROPY: { value = v + log_dq; }
            default: { value = v - log_dp + log_dq; }
        }
        out_rows[P.l_off + r.row] = value * P.inv_ln_b;
    }

    // The gradient w.r.t. Q's logits (phase 1 of split rows): (q_c - p_c)·scale/T.
    if (P.grad == 1u && r.valid) {
        let f = P.scale * P.inv_t * P.inv_ln_b;
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            let p = exp((load_x(pb, i, 0.0) - V(st.md.x)) * P.inv_t - V(log_dp));
            let zv = load_q(qb, i, 0.0);
            let qv = exp((zv - V(st.md.z)) * P.inv_t - V(log_dq));
            store_out_elems(ob, i, (qv - p) * f * cap_slope(zv));
        }
    }
}
