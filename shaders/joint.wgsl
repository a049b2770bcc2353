// Joint-table statistics (SPEC.md §3). Each table J[b] holds X × Y counts or probabilities
// (row-major), normalised by its total T; with h(p) = -p log p (0 at p = 0):
//   px[b, i] = Σ_j J[b, i, j]     py[b, j] = Σ_i J[b, i, j]     T[b] = Σ_i px[b, i]
//   H(X,Y) = Σ_ij h(J / T)        H(X) = Σ_i h(px / T)          H(Y) = Σ_j h(py / T)
//   H(Y|X) = H(X,Y) - H(X)        I(X;Y) = H(X) + H(Y) - H(X,Y)      (all divided by ln b)
// Every sum is taken by `axis_sum` in levels of at most CHUNK terms per invocation, in a
// fixed order (bit-identical run to run), so no invocation loops more than CHUNK times
// however lopsided the table (src/gpu/rows.rs: `MAX_LANE_ITERS`); `joint_finish` then
// combines the three entropies of each table.
//
// axis_sum: src viewed as [tables, L, K] with element (b, l, k) at
//   P.in_off + b·P.t_stride + l·P.l_stride + k·P.k_stride,
// one invocation per output (b, c, k), c < L' = ceil(L / CHUNK):
//   dst[P.out_off + (b·L' + c)·K + k] = Σ_{l = c·CHUNK ..< min((c+1)·CHUNK, L)} f(src[b, l, k])
// with f = identity (P.mode 0) or h(v / T[b]), T[b] = tot[P.t_off + b] (P.mode 1).
// joint_finish: one invocation per table b < P.count; src holds [H(X,Y) | H(X) | H(Y)], each
// P.count long from P.in_off; dst[P.out_off + 5b ..][..5] = H(X), H(Y), H(X,Y), H(Y|X), I(X;Y).
//
// Bindings (twin: src/gpu/info.rs): 0 uniform Params; 1 src (read); 2 dst (read_write);
// 3 tot (read; a dummy for P.mode 0). Dispatch: WG invocations per workgroup (grid.wgsl).

#import vec
#import grid
#import logs

struct Params {
    count: u32,     // outputs (invocations) in this dispatch
    len: u32,       // L: terms summed per output row, before chunking
    keep: u32,      // K
    t_stride: u32,
    l_stride: u32,
    k_stride: u32,
    in_off: u32,
    out_off: u32,
    t_off: u32,
    mode: u32,      // 0: sum v; 1: sum h(v / T)
    inv_ln_b: f32,  // joint_finish: 1 / ln(base)
    _pad: u32,
}

// P.mode. Twin: `Terms` in src/gpu/info.rs.
const MODE_VALUES: u32 = 0u;
const MODE_ENTROPY: u32 = 1u;

// Terms one invocation adds. Twin: `JOINT_CHUNK` in src/gpu/info.rs.
const CHUNK: u32 = 64u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> tot: array<f32>;

@compute @workgroup_size(WG)
fn axis_sum(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let o = group_index(wid, nwg) * WG + li;
    if (o >= P.count) {
        return;
    }
    let chunks = (P.len + CHUNK - 1u) / CHUNK;
    let b = o / (chunks * P.keep);
    let c = (o / P.keep) % chunks;
    let k = o % P.keep;
    var inv_t = 0.0;
    if (P.mode == MODE_ENTROPY) {
        inv_t = 1.0 / tot[P.t_off + b];
    }
    let first = c * CHUNK;
    let n = min(CHUNK, P.len - first);
    var at = P.in_off + b * P.t_stride + first * P.l_stride + k * P.k_stride;
    var acc = 0.0;
    for (var t = 0u; t < n; t = t + 1u) {
        let v = src[at];
        if (P.mode == MODE_ENTROPY) {
            let p = v * inv_t;
            acc = acc - weighted(p, log0(p));
        } else {
            acc = acc + v;
        }
        at = at + P.l_stride;
    }
    dst[P.out_off + o] = acc;
}

@compute @workgroup_size(WG)
fn joint_finish(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let b = group_index(wid, nwg) * WG + li;
    if (b >= P.count) {
        return;
    }
    let hxy = src[P.in_off + b] * P.inv_ln_b;
    let hx = src[P.in_off + P.count + b] * P.inv_ln_b;
    let hy = src[P.in_off + 2u * P.count + b] * P.inv_ln_b;
    let o = P.out_off + b * 5u;
    dst[o] = hx;
    dst[o + 1u] = hy;
    dst[o + 2u] = hxy;
    dst[o + 3u] = hxy - hx;
    dst[o + 4u] = hx + hy - hxy;
}
