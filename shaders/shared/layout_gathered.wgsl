// Where rows sit in their storage when a row's length is not a multiple of 4 (a 50 257-word
// vocabulary): stored as plain f32, a row starts at any element, and its vectors gather four
// scalar loads each so that the arithmetic still runs on vec4. The row's vectors go in blocks
// of GATHER (the last block may be narrower, w vectors): block b covers the row's elements
// from 4·GATHER·b on, and its vector p holds the elements p, p + w, p + 2w, p + 3w of them,
// so that consecutive lanes (walking consecutive vectors) load consecutive scalars, one
// coalesced piece per load. The elements past the row's end (of the last block's last
// vectors) are missing: `#load` fills them with the caller's pad and `#store` leaves them
// (src/gpu/kernels.rs writes both). Twin: `VecWidth::Gathered`; the same names are defined by
// layout_aligned.wgsl.
alias XS = f32;
// An f32 array under this layout (`#load_f32`): the same storage.
alias FS = XS;

// Vectors per block: a 32-lane subgroup's loads, 128 bytes each.
const GATHER: u32 = 32u;

fn row_vecs() -> u32 {
    return (P.cols + 3u) / 4u;
}

fn row_start(off: u32, row: u32) -> u32 {
    return off + row * P.cols;
}

// Vectors in the block that starts at vector b0.
fn block_width(b0: u32) -> u32 {
    return min(GATHER, row_vecs() - b0);
}

// Where vector i's four elements sit in the row (those at P.cols or past it are missing).
fn vec_elems(i: u32) -> vec4<u32> {
    let p = i % GATHER;
    let w = block_width(i - p);
    return vec4<u32>(4u * (i - p) + p) + vec4<u32>(0u, 1u, 2u, 3u) * w;
}

// 1 for the elements of vector i inside the row, 0 for the missing ones.
fn vec_mask(i: u32) -> V {
    return select(V(0.0), V(1.0), vec_elems(i) < vec4<u32>(P.cols));
}

// The vector holding element e of the row, and its component there.
fn vec_of(e: u32) -> u32 {
    let b0 = (e - e % (4u * GATHER)) / 4u;
    return b0 + (e - 4u * b0) % block_width(b0);
}

fn comp_of(e: u32) -> u32 {
    let b0 = (e - e % (4u * GATHER)) / 4u;
    return (e - 4u * b0) / block_width(b0);
}
