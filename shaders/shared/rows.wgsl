// Rows spread over workgroups: WG / P.g rows per workgroup, P.g lanes per row (a power of two
// ≤ WG); workgroups past the end do nothing but join the barriers. Needs grid.wgsl; the
// including shader provides `P` (rows, cols, in_off, g) and the logits `x: array<V>`.

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

// First vector of the lane's row in an array laid out like x from element `off` (the
// binding's offset of the dispatch's first row).
fn row_at(r: RowLane, off: u32) -> u32 {
    return off / W + r.row * (P.cols / W);
}

// First vector of the lane's row in x.
fn row_base(r: RowLane) -> u32 {
    return row_at(r, P.in_off);
}

// (m, d) of the lane's row at scale s (md.wgsl), combined over its g lanes; the identity for
// rows past the end (or rows the caller marks invalid).
fn row_stats(r: RowLane, l: Lane, s: f32) -> vec2<f32> {
    var md = MD_IDENTITY;
    if (r.valid) {
        let n = P.cols / W;
        let base = row_base(r);
        for (var i = r.pos; i < n; i = i + P.g) {
            md = md_push(md, x[base + i], s);
        }
    }
    return reduce_md(md, s, r.lane, P.g, l);
}
