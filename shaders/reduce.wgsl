// Deterministic sum of a run of f32 values: each workgroup adds one block of SUM_ITEMS · WG
// consecutive values (shared/sum.wgsl) and writes one partial; the host repeats the kernel on
// the partials until one value is left. The same input gives the same bits on every run.
//
//   dst[out_off + group] = (Σ src[in_off + group·SUM_ITEMS·WG ..][..SUM_ITEMS·WG]) · scale / den
//   den = den_buf[0] when P.divide = 1 (the mean's denominator, computed on the GPU), else 1.
//
// Bindings (twin: `SumParams` and `SUM` in src/gpu/reduce.rs):
//   0: uniform Params   1: storage, read src   2: storage, read_write dst   3: storage, read den_buf

#import vec
#import md
#import reduce
#import grid
#import sum

struct Params {
    n: u32,         // values in this dispatch
    in_off: u32,    // first value in src
    out_off: u32,   // where the first group's partial goes in dst
    divide: u32,    // 1: divide by den_buf[0]
    scale: f32,     // multiplies the sum
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> den_buf: array<f32>;

fn sum_value(i: u32) -> f32 {
    return src[P.in_off + i];
}

@compute @workgroup_size(WG)
fn sum(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       l: Lane) {
    let lane = lane_id(l);
    let group = group_index(wid, nwg);
    let total = block_sum(group, P.n, lane, l);
    if (lane == 0u && group * SUM_ITEMS * WG < P.n) {
        var v = total * P.scale;
        if (P.divide == 1u) {
            v = v / den_buf[0];
        }
        dst[P.out_off + group] = v;
    }
}
