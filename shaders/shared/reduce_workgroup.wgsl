// Segmented reduction of (m, d) pairs (md.wgsl, at scale s) through workgroup memory: the fallback for devices
// without subgroup operations (GL, some mobile) and the faster path on CPU adapters.
// A workgroup of WG invocations is cut into segments of `g` lanes (g a power of two ≤ WG),
// one segment per row; every lane of a segment gets the segment's combined pair.
// Twin of reduce_subgroup.wgsl: same names, same results.

const WG: u32 = 256u;

// No segment is reduced by shuffles here: `shuffle_*` (reduce_subgroup.wgsl) are never
// called, and stand for the full reductions only so that the callers read the same.
const SHUFFLE_UNIT: u32 = 0u;
var<workgroup> red_md: array<vec2<f32>, WG>;

struct Lane {
    @builtin(local_invocation_index) index: u32,
}

fn lane_id(l: Lane) -> u32 {
    return l.index;
}

fn reduce_md(v: vec2<f32>, s: f32, lane: u32, g: u32, l: Lane) -> vec2<f32> {
    red_md[lane] = v;
    workgroupBarrier();
    for (var off = g / 2u; off > 0u; off = off / 2u) {
        if (lane % g < off) {
            red_md[lane] = md_combine(red_md[lane], red_md[lane + off], s);
        }
        workgroupBarrier();
    }
    let r = red_md[lane - lane % g];
    workgroupBarrier();
    return r;
}

// Segmented sum of vec4 values, same segments as reduce_md; every lane of a segment gets the
// segment's sum, added in a fixed tree order (bit-identical run to run).
var<workgroup> red_sum: array<vec4<f32>, WG>;

fn reduce_sum4(v: vec4<f32>, lane: u32, g: u32, l: Lane) -> vec4<f32> {
    red_sum[lane] = v;
    workgroupBarrier();
    for (var off = g / 2u; off > 0u; off = off / 2u) {
        if (lane % g < off) {
            red_sum[lane] = red_sum[lane] + red_sum[lane + off];
        }
        workgroupBarrier();
    }
    let r = red_sum[lane - lane % g];
    workgroupBarrier();
    return r;
}

fn shuffle_md(v: vec2<f32>, s: f32, g: u32, l: Lane) -> vec2<f32> {
    return reduce_md(v, s, lane_id(l), g, l);
}

fn shuffle_sum4(v: vec4<f32>, g: u32, l: Lane) -> vec4<f32> {
    return reduce_sum4(v, lane_id(l), g, l);
}
