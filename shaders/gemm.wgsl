// Matrix products for linear cross-entropy (SPEC.md §2): logits = h·Wᵀ + b, ∂L/∂h = G·W,
// ∂L/∂W = Gᵀ·h, and ∂L/∂b = Σ_n G[n].
//
// gemm: C (+)= A·B (+ bias), C of M × N, K terms per output, every operand given by its
// strides, so one kernel serves the three products (A or B read transposed or not); A and B
// f32, f16 or bf16 (A_TYPE, B_TYPE: their elements are read as 32-bit words, a half one
// unpacked from its word, shared/half.wgsl), C and the bias f32; products and sums in f32:
//   A(i, k) = a[P.a_off + i·P.a_si + k·P.a_sk]      B(k, j) = b[P.b_off + k·P.b_sk + j·P.b_sj]
//   C(i, j) = c[P.c_off + i·P.ldc + j]              bias(j) = bias[P.bias_off + j]
//   C(i, j) = [ACCUMULATE] C(i, j) + Σ_{k < K} A(i, k)·B(k, j) + [BIAS] bias(j)
// Each workgroup computes a TM × TN tile of C, each invocation a 4 × 4 block of it kept in
// registers. Two ways (src/gpu/kernels.rs, `Tuning::tiled_products`):
//   gemm        for GPUs: the K terms go through workgroup memory in steps of TK (A's TM × TK
//               block and B's TK × TN block, each loaded by all 256 invocations with
//               consecutive invocations on consecutive addresses: along k where A_K / B_K say
//               k is the operand's contiguous dimension, else along i / j); invocation
//               (tx, ty) holds outputs (ty + 16r, tx + 16q), so each value loaded into the
//               tile is used 16 times, and a row of C is written by consecutive invocations.
//   gemm_direct for CPU adapters (llvmpipe: workgroup memory and barriers there are plain
//               memory and coroutine switches; 2.2× faster, measured): invocation (tx, ty)
//               holds outputs (4ty + r, 4tx + q) and reads its 4 + 4 operands of each k
//               straight from the buffers.
// Every sum runs over k in order (the same bits on every run); edge tiles read 0 outside the
// matrices (gemm) or clamp (gemm_direct) and write nothing there.
// Slices (split-K, for products with too few tiles to fill the GPU, such as ∂L/∂h = G·W over a
// long vocabulary): the dispatch's groups are P.tiles tiles per slice, and slice s sums terms
// s·P.slice_k .. min((s + 1)·P.slice_k, K) into its own C from P.c_off + s·P.slice_c; the
// host then adds the slices in order with col_sums. One slice (P.tiles every tile,
// P.slice_k = K) is the plain product.
//
// col_sums: one invocation per column j < N: C(0, j) = [ACCUMULATE] C(0, j) + Σ_{i < M} A(i, j),
// i in order (A(i, j) = a[P.a_off + i·P.a_si + j·P.a_sk]).
//
// to_half: one invocation per 32-bit word of a half tensor's rows (OUT_TYPE 1: f16, 2: bf16;
// rows of P.out_ld words, the padding past P.n elements 0): word q of row r packs C(r, 2q) and
// C(r, 2q + 1), C = c from P.c_off with rows of P.ldc, into out16[P.out_off + r·P.out_ld + q].
//
// None of them writes while status[1] (cross-entropy's BATCH_BAD_ROW,
// shaders/cross_entropy.wgsl) holds a bad row: a batch with a bad target writes no gradient.
//
// Loops: gemm's busiest invocation runs P.slice_k / TK steps of 4 + 4 + TK iterations,
// gemm_direct P.slice_k, col_sums M: the host splits K and M so that none passes
// MAX_LANE_ITERS (src/gpu/linear.rs).
//
// Bindings (twin: src/gpu/linear.rs): 0 uniform Params; 1 a (read); 2 b (read); 3 c
// (read_write); 4 bias (read; a dummy without BIAS); 5 status (read); 6 out16 (read_write).
// Dispatch: gemm and gemm_direct one workgroup per tile and slice, group s·P.tiles + g of the
// flattened grid (grid.wgsl) tile (ti, tj) = (g / P.tiles_n, g % P.tiles_n) of slice s;
// col_sums and to_half WG invocations per workgroup.

#import grid
#import half

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    a_si: u32,
    a_sk: u32,
    b_off: u32,
    b_sk: u32,
    b_sj: u32,
    c_off: u32,
    ldc: u32,
    bias_off: u32,
    tiles_n: u32,
    out_off: u32,
    out_ld: u32,
    tiles: u32,
    slice_k: u32,
    slice_c: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Whether k is A's (B's) contiguous dimension: the loads then run along k.
override A_K: bool = true;
override B_K: bool = true;
override ACCUMULATE: bool = false;
override BIAS: bool = false;
// Element types of A, B and to_half's output: 0 f32, 1 f16, 2 bf16. Twin: `type_code` in
// src/gpu/linear.rs.
override A_TYPE: u32 = 0u;
override B_TYPE: u32 = 0u;
override OUT_TYPE: u32 = 1u;

// Tile sizes. Twins: `TILE` and `TILE_K` in src/gpu/linear.rs.
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
const WG: u32 = 256u;
// A block's row length in workgroup memory (one more than TM: fewer bank conflicts).
const S: u32 = 65u;
const NO_ERROR: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> status: array<u32>;
@group(0) @binding(6) var<storage, read_write> out16: array<u32>;

// A group's slice: its tile g among the slice's P.tiles, the slice's count of terms, and where
// its terms of A and B and its C begin.
struct Slice {
    g: u32,
    k: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
}

fn slice_of(group: u32) -> Slice {
    let s = group / P.tiles;
    let k0 = s * P.slice_k;
    return Slice(group % P.tiles, min(P.slice_k, P.k - k0), P.a_off + k0 * P.a_sk,
                 P.b_off + k0 * P.b_sk, P.c_off + s * P.slice_c);
}

// Element i of an operand of type t whose words are w (the word holding it): an f32's bits,
// or the low or high half of the word.
fn element(w: u32, i: u32, t: u32) -> f32 {
    if (t == 0u) {
        return bitcast<f32>(w);
    }
    let pair = vec2<u32>(select(w, w >> 16u, (i & 1u) == 1u), 0u);
    if (t == 1u) {
        return unpack_f16(pair).x;
    }
    return unpack_bf16(pair).x;
}

fn load_a(i: u32) -> f32 {
    return element(a[select(i, i >> 1u, A_TYPE != 0u)], i, A_TYPE);
}

fn load_b(i: u32) -> f32 {
    return element(b[select(i, i >> 1u, B_TYPE != 0u)], i, B_TYPE);
}

// The blocks, k-major: a_tile[kk·S + ii] = A(i0 + ii, k0 + kk), b_tile[kk·S + jj] = B(k0 + kk, j0 + jj).
var<workgroup> a_tile: array<f32, 1040>;
var<workgroup> b_tile: array<f32, 1040>;

// Element e < TM·TK of a block, as (row or column in the tile, kk): along k when k is the
// contiguous dimension, else along the other.
fn block_place(e: u32, along_k: bool) -> vec2<u32> {
    if (along_k) {
        return vec2<u32>(e / TK, e % TK);
    }
    return vec2<u32>(e % TM, e / TM);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let sl = slice_of(group_index(wid, nwg));
    let i0 = (sl.g / P.tiles_n) * TM;
    let j0 = (sl.g % P.tiles_n) * TN;
    let tx = li % 16u;
    let ty = li / 16u;
    let busy = i0 + ty < P.m && j0 + tx < P.n;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < sl.k; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * WG;
            let pa = block_place(e, A_K);
            let i = i0 + pa.x;
            let ka = k0 + pa.y;
            let ia = sl.a_off + min(i, P.m - 1u) * P.a_si + min(ka, sl.k - 1u) * P.a_sk;
            a_tile[pa.y * S + pa.x] = select(0.0, load_a(ia), i < P.m && ka < sl.k);
        }
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * WG;
            let pb = block_place(e, B_K);
            let j = j0 + pb.x;
            let kb = k0 + pb.y;
            let ib = sl.b_off + min(kb, sl.k - 1u) * P.b_sk + min(j, P.n - 1u) * P.b_sj;
            b_tile[pb.y * S + pb.x] = select(0.0, load_b(ib), j < P.n && kb < sl.k);
        }
        workgroupBarrier();
        // An invocation whose first row or column is outside C has nothing to compute (a
        // chunk of a few rows leaves most of a tile so).
        if (busy) {
            for (var kk = 0u; kk < TK; kk++) {
                let row = kk * S;
                let av = vec4<f32>(a_tile[row + ty], a_tile[row + ty + 16u],
                                   a_tile[row + ty + 32u], a_tile[row + ty + 48u]);
                let bv = vec4<f32>(b_tile[row + tx], b_tile[row + tx + 16u],
                                   b_tile[row + tx + 32u], b_tile[row + tx + 48u]);
                acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
                acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
                acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
                acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
            }
        }
        workgroupBarrier();
    }
    write_block(sl.c_off, vec4<u32>(i0 + ty) + vec4<u32>(0u, 16u, 32u, 48u),
                vec4<u32>(j0 + tx) + vec4<u32>(0u, 16u, 32u, 48u), acc);
}

@compute @workgroup_size(WG)
fn gemm_direct(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let sl = slice_of(group_index(wid, nwg));
    let rows = vec4<u32>((sl.g / P.tiles_n) * TM + (li / 16u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let cols = vec4<u32>((sl.g % P.tiles_n) * TN + (li % 16u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    if (rows.x >= P.m || cols.x >= P.n) {
        return;
    }
    let ai = sl.a_off + min(rows, vec4<u32>(P.m - 1u)) * P.a_si;
    let bj = sl.b_off + min(cols, vec4<u32>(P.n - 1u)) * P.b_sj;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k = 0u; k < sl.k; k++) {
        let ak = ai + k * P.a_sk;
        let bk = bj + k * P.b_sk;
        let av = vec4<f32>(load_a(ak.x), load_a(ak.y), load_a(ak.z), load_a(ak.w));
        let bv = vec4<f32>(load_b(bk.x), load_b(bk.y), load_b(bk.z), load_b(bk.w));
        acc0 = fma(vec4<f32>(av.x), bv, acc0);
        acc1 = fma(vec4<f32>(av.y), bv, acc1);
        acc2 = fma(vec4<f32>(av.z), bv, acc2);
        acc3 = fma(vec4<f32>(av.w), bv, acc3);
    }
    write_block(sl.c_off, rows, cols, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

// Writes acc[r][q] as C(rows[r], cols[q]) of the C from c_off (with the bias, onto C when
// accumulating), inside the matrix; nothing while the batch has a bad target.
fn write_block(c_off: u32, rows: vec4<u32>, cols: vec4<u32>, acc: array<vec4<f32>, 4>) {
    if (status[1] != NO_ERROR) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        for (var q = 0u; q < 4u; q++) {
            let i = rows[r];
            let j = cols[q];
            if (i < P.m && j < P.n) {
                let at = c_off + i * P.ldc + j;
                var v = acc[r][q];
                if (BIAS) {
                    v += bias[P.bias_off + j];
                }
                if (ACCUMULATE) {
                    v += c[at];
                }
                c[at] = v;
            }
        }
    }
}

@compute @workgroup_size(WG)
fn col_sums(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let j = group_index(wid, nwg) * WG + li;
    if (j >= P.n || status[1] != NO_ERROR) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < P.m; i++) {
        s += load_a(P.a_off + i * P.a_si + j * P.a_sk);
    }
    if (ACCUMULATE) {
        s += c[P.c_off + j];
    }
    c[P.c_off + j] = s;
}

@compute @workgroup_size(WG)
fn to_half(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let q = group_index(wid, nwg) * WG + li;
    if (q >= P.m * P.out_ld || status[1] != NO_ERROR) {
        return;
    }
    let r = q / P.out_ld;
    let e = 2u * (q % P.out_ld);
    let row = P.c_off + r * P.ldc;
    let v0 = select(0.0, c[row + min(e, P.n - 1u)], e < P.n);
    let v1 = select(0.0, c[row + min(e + 1u, P.n - 1u)], e + 1u < P.n);
    let v = vec4<f32>(v0, v1, 0.0, 0.0);
    var bits: vec4<u32>;
    if (OUT_TYPE == 1u) {
        bits = f16_bits(v);
    } else {
        bits = bf16_bits(v);
    }
    out16[P.out_off + q] = bits.x | (bits.y << 16u);
}
