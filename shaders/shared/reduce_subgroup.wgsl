// Segmented reduction of (m, d) pairs (md.wgsl, at scale s) with subgroup shuffles.
// A workgroup of WG invocations is cut into segments of `g` lanes (g a power of two ≤ WG),
// one segment per row; every lane of a segment gets the segment's combined pair.
// Lanes are numbered subgroup by subgroup (`lane_id`), so a segment never straddles part of
// a subgroup whatever the device's subgroup size. Twin of reduce_workgroup.wgsl: same names,
// same results; the host picks one per device (`CrossLane` in src/gpu/kernels.rs) and
// appends `SHUFFLE_UNIT`, the device's smallest subgroup size: a segment of at most that many
// lanes lies inside one subgroup and is reduced by shuffles alone (`shuffle_*`, no workgroup
// memory, no barrier), with the same bits as `reduce_*` (each butterfly leaves every lane of
// the segment the same value).

const WG: u32 = 256u;
var<workgroup> red_md: array<vec2<f32>, WG>;

struct Lane {
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
}

fn lane_id(l: Lane) -> u32 {
    return l.sg_id * l.sg_size + l.sg_lane;
}

// Butterfly inside the subgroup over blocks of min(g, subgroup size) lanes.
fn shuffle_md(v: vec2<f32>, s: f32, g: u32, l: Lane) -> vec2<f32> {
    var r = v;
    for (var off = min(g, l.sg_size) / 2u; off > 0u; off = off / 2u) {
        r = md_combine(r, vec2<f32>(subgroupShuffleXor(r.x, off), subgroupShuffleXor(r.y, off)), s);
    }
    return r;
}

fn reduce_md(v: vec2<f32>, s: f32, lane: u32, g: u32, l: Lane) -> vec2<f32> {
    let inner = min(g, l.sg_size);
    var r = shuffle_md(v, s, g, l);
    // Across the subgroups of a segment (a single read when g fits in one subgroup).
    red_md[lane] = r;
    workgroupBarrier();
    let first = lane - lane % g;
    r = MD_IDENTITY;
    for (var k = 0u; k < g; k = k + inner) {
        r = md_combine(r, red_md[first + k], s);
    }
    workgroupBarrier();
    return r;
}

// Segmented sum of vec4 values, same segments as reduce_md; every lane of a segment gets the
// segment's sum. The order of additions depends only on g and the subgroup size, so results
// are bit-identical run to run (a + b == b + a exactly, so both lanes of a butterfly agree).
var<workgroup> red_sum: array<vec4<f32>, WG>;

fn shuffle_sum4(v: vec4<f32>, g: u32, l: Lane) -> vec4<f32> {
    var r = v;
    for (var off = min(g, l.sg_size) / 2u; off > 0u; off = off / 2u) {
        r = r + subgroupShuffleXor(r, off);
    }
    return r;
}

fn reduce_sum4(v: vec4<f32>, lane: u32, g: u32, l: Lane) -> vec4<f32> {
    let inner = min(g, l.sg_size);
    var r = shuffle_sum4(v, g, l);
    red_sum[lane] = r;
    workgroupBarrier();
    let first = lane - lane % g;
    r = vec4<f32>(0.0);
    for (var k = 0u; k < g; k = k + inner) {
        r = r + red_sum[first + k];
    }
    workgroupBarrier();
    return r;
}
