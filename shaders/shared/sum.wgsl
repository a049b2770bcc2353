// Deterministic sum of one block of up to SUM_ITEMS · WG values of a run: lane i adds values
// i, i + WG, ... of the block (coalesced loads) in order, then the workgroup adds the lanes'
// sums in a fixed tree (reduce_*.wgsl). The order depends only on the count, so the same
// input gives the same bits on every run; no atomics. The including shader provides
// `fn sum_value(i: u32) -> f32`, the run's value i. Call in uniform control flow.
// Twin: `SUM_ITEMS` in src/gpu/reduce.rs.

const SUM_ITEMS: u32 = 16u;

// The sum of block `block` of a run of n values.
fn block_sum(block: u32, n: u32, lane: u32, l: Lane) -> f32 {
    let start = block * SUM_ITEMS * WG;
    var acc = 0.0;
    for (var k = 0u; k < SUM_ITEMS; k = k + 1u) {
        let i = start + k * WG + lane;
        if (i < n) {
            acc = acc + sum_value(i);
        }
    }
    return reduce_sum4(vec4<f32>(acc, 0.0, 0.0, 0.0), lane, WG, l).x;
}
