// Where rows sit in their storage when the elements are half precision (f16 or bf16; the
// width's `#load` and `#store` unpack and pack them, shared/half.wgsl): two to a u32, each row
// padded to a multiple of 4 elements (`Tensor::stride` in src/gpu/tensor.rs), so that vector
// i of a row — its elements 4i .. 4i + 3 — is one 8-byte load from an aligned pair of words,
// and no two rows or lanes ever write the same word. Elements at P.cols and past it are the
// row's padding: `#load` fills them with the caller's pad, `#store` writes whatever the
// vector holds there. An f32 array read under this layout (`#load_f32`: class weights) is
// plain f32, gathered four scalars at a time. Twin: `VecWidth::F16` and `VecWidth::Bf16` in
// src/gpu/kernels.rs; the same names are defined by layout_aligned.wgsl.
#import half
alias XS = vec2<u32>;
alias FS = f32;

fn row_vecs() -> u32 {
    return (P.cols + 3u) / 4u;
}

fn row_start(off: u32, row: u32) -> u32 {
    return off / 4u + row * row_vecs();
}

// Where vector i's four elements sit in the row.
fn vec_elems(i: u32) -> vec4<u32> {
    return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
}

// 1 for the elements of vector i inside the row, 0 for the padding.
fn vec_mask(i: u32) -> V {
    return select(V(0.0), V(1.0), vec_elems(i) < vec4<u32>(P.cols));
}

// The vector holding element e of the row, and its component there.
fn vec_of(e: u32) -> u32 {
    return e / 4u;
}

fn comp_of(e: u32) -> u32 {
    return e % 4u;
}
