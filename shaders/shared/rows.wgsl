// Rows spread over workgroups. A row is cut into P.segs segments of P.span vectors (the last
// may be shorter); each segment is a unit of P.g lanes (a power of two ≤ WG), WG / P.g units
// per workgroup. Units past the last row do nothing but join the barriers. Needs grid.wgsl
// and layout_*.wgsl; the including shader provides `P` (rows, cols, in_off, g, segs, span,
// phase), the logits `x` and their `#load x`. Twin: src/gpu/rows.rs, which picks g, segs and span so that no lane
// loops more than `MAX_LANE_ITERS` times.
//
// One segment per row (P.segs = 1): a kernel runs whole in one dispatch. Split rows
// (P.segs > 1): the kernel runs as a chain of dispatches, P.phase = 0, 1, ...; where the
// one-dispatch kernel reduces over the row, the split one publishes each segment's result
// in `part` and returns, and the next phase gathers the row's results in segment order
// (fixed order: bit-identical run to run).

// Where a lane works: its row and segment, its position among the unit's g lanes, the
// vectors it walks (first + pos, first + pos + g, ... < end), and whether the row exists.
struct RowLane {
    lane: u32,
    row: u32,
    seg: u32,
    pos: u32,
    first: u32,
    end: u32,
    valid: bool,
}

fn row_lane(wid: vec3<u32>, nwg: vec3<u32>, l: Lane) -> RowLane {
    let lane = lane_id(l);
    let unit = group_index(wid, nwg) * (WG / P.g) + lane / P.g;
    let row = unit / P.segs;
    let seg = unit % P.segs;
    let first = seg * P.span;
    let end = min(first + P.span, row_vecs());
    return RowLane(lane, row, seg, lane % P.g, first, end, row < P.rows);
}

// Where the lane's row starts (layout_*.wgsl) in an array laid out like x from element `off`
// (the binding's offset of the dispatch's first row).
fn row_at(r: RowLane, off: u32) -> u32 {
    return row_start(off, r.row);
}

// First vector of the lane's row in x.
fn row_base(r: RowLane) -> u32 {
    return row_at(r, P.in_off);
}

// The unit's pair and sums combined over its g lanes (reduce_*.wgsl), the cheapest way the
// device allows: a unit of one lane has nothing to combine and skips the reduction with its
// barriers, which cost much where a device runs a workgroup's lanes as coroutines (llvmpipe:
// a cross-entropy over 1279 × 6 ran 20 % faster without them); a unit inside one subgroup
// combines by shuffles alone (subgroup per row); a wider one goes through workgroup memory.
// P.g is uniform: the whole workgroup takes one branch.
fn unit_md(v: vec2<f32>, s: f32, r: RowLane, l: Lane) -> vec2<f32> {
    if (P.g == 1u) {
        return v;
    }
    if (P.g <= SHUFFLE_UNIT) {
        return shuffle_md(v, s, P.g, l);
    }
    return reduce_md(v, s, r.lane, P.g, l);
}

fn unit_sum4(v: vec4<f32>, r: RowLane, l: Lane) -> vec4<f32> {
    if (P.g == 1u) {
        return v;
    }
    if (P.g <= SHUFFLE_UNIT) {
        return shuffle_sum4(v, P.g, l);
    }
    return reduce_sum4(v, r.lane, P.g, l);
}

// (m, d) of the lane's segment of x at scale s (md.wgsl), combined over its g lanes; the
// identity for rows past the end (or rows the caller marks invalid).
fn row_stats(r: RowLane, l: Lane, s: f32) -> vec2<f32> {
    var md = MD_IDENTITY;
    if (r.valid) {
        let base = row_base(r);
        for (var i = r.first + r.pos; i < r.end; i = i + P.g) {
            md = md_push(md, load_x(base, i, neg_inf()), s);
        }
    }
    return unit_md(md, s, r, l);
}

// Vectors per lane a whole row keeps in registers between its statistics and its write
// (P.keep), so that it is read once: 8 is the GPU tuning's most per lane (rows of up to
// 8 192 f32 on 256 lanes). Loops of this fixed count, masked, can be unrolled into registers.
// Twin: `KEPT_VECS` in src/gpu/rows.rs.
const KEPT: u32 = 8u;

// A kept row (P.keep): the lane's vectors k = 0, 1, ... (vector first + pos + k·g of the
// row) read once into `kept`, and the row's (m, d) at scale s over the unit.
fn kept_stats(r: RowLane, l: Lane, s: f32, kept: ptr<function, array<V, KEPT>>) -> vec2<f32> {
    var acc = MD_IDENTITY;
    let src = row_base(r);
    for (var k = 0u; k < KEPT; k = k + 1u) {
        let i = r.first + r.pos + k * P.g;
        if (r.valid && i < r.end) {
            (*kept)[k] = load_x(src, i, neg_inf());
            acc = md_push(acc, (*kept)[k], s);
        }
    }
    return unit_md(acc, s, r, l);
}

// The row's (m, d) at scale s: over the lane's segment in phase 0 (the whole row when it is
// not split; the caller publishes it when it is), gathered from the segments in later phases.
fn row_md(r: RowLane, l: Lane, s: f32) -> vec2<f32> {
    if (P.phase == 0u) {
        return row_stats(r, l, s);
    }
    return gather_md(r, l, 0u, s);
}

// What a phase of a split row hands on: two (m, d) pairs (md.wgsl) and four plain sums.
struct Partial {
    md: vec4<f32>,
    sums: vec4<f32>,
}

const NO_PARTIAL: Partial = Partial(vec4<f32>(MD_IDENTITY, MD_IDENTITY), vec4<f32>(0.0));

// A Partial holding one (m, d) pair, or only sums.
fn md_partial(md: vec2<f32>) -> Partial {
    return Partial(vec4<f32>(md, MD_IDENTITY), vec4<f32>(0.0));
}

fn sums_partial(sums: vec4<f32>) -> Partial {
    return Partial(NO_PARTIAL.md, sums);
}

// Per unit and phase (0 or 1), one Partial as two vectors: part[((unit·2 + phase)·2 ..][..2],
// unit = row·P.segs + seg counted from the dispatch's first row.
@group(0) @binding(10) var<storage, read_write> part: array<vec4<f32>>;

fn part_at(row: u32, seg: u32, phase: u32) -> u32 {
    return ((row * P.segs + seg) * 2u + phase) * 2u;
}

// When rows are split, lane 0 of the unit stores its result of `phase` and the caller
// returns (true); with one segment per row nothing is stored (false) and the caller goes on.
// The result depends on P only: every lane of a workgroup returns together.
fn publish(r: RowLane, phase: u32, v: Partial) -> bool {
    if (P.segs == 1u) {
        return false;
    }
    if (r.valid && r.pos == 0u) {
        let i = part_at(r.row, r.seg, phase);
        part[i] = v.md;
        part[i + 1u] = v.sums;
    }
    return true;
}

// The row's results of `phase`, gathered by the unit's lanes together: lane pos combines the
// segments pos, pos + g, ... in order, then the unit reduces (reduce_*.wgsl). The order
// depends only on P.segs and P.g: bit-identical run to run. Call in uniform control flow.

// The first (m, d) pair at scale s.
fn gather_md(r: RowLane, l: Lane, phase: u32, s: f32) -> vec2<f32> {
    var acc = MD_IDENTITY;
    if (r.valid) {
        for (var k = r.pos; k < P.segs; k = k + P.g) {
            acc = md_combine(acc, part[part_at(r.row, k, phase)].xy, s);
        }
    }
    return unit_md(acc, s, r, l);
}

// Both (m, d) pairs at scale s.
fn gather_md2(r: RowLane, l: Lane, phase: u32, s: f32) -> vec4<f32> {
    var a = MD_IDENTITY;
    var b = MD_IDENTITY;
    if (r.valid) {
        for (var k = r.pos; k < P.segs; k = k + P.g) {
            let md = part[part_at(r.row, k, phase)];
            a = md_combine(a, md.xy, s);
            b = md_combine(b, md.zw, s);
        }
    }
    return vec4<f32>(unit_md(a, s, r, l), unit_md(b, s, r, l));
}

// The four sums.
fn gather_sums(r: RowLane, l: Lane, phase: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (r.valid) {
        for (var k = r.pos; k < P.segs; k = k + P.g) {
            acc = acc + part[part_at(r.row, k, phase) + 1u];
        }
    }
    return unit_sum4(acc, r, l);
}
