// Where rows sit in their storage when a row's length is not a multiple of 4 (a 50 257-word
// vocabulary): stored as plain f32, a row starts at any element, and vector i of a row is its
// elements 4i .. 4i + 3, gathered by four scalar loads so that the arithmetic still runs on
// vec4. The last vector of a row is partial: `#load` fills its missing elements with the
// caller's pad and `#store` skips them (src/gpu/kernels.rs writes both). Twin:
// `VecWidth::Gathered`; the same names are defined by layout_aligned.wgsl.
alias XS = f32;

fn row_vecs() -> u32 {
    return (P.cols + 3u) / 4u;
}

fn row_start(off: u32, row: u32) -> u32 {
    return off + row * P.cols;
}

// Elements of vector i inside the row: 4 but in the last vector.
fn vec_len(i: u32) -> u32 {
    return min(P.cols - 4u * i, 4u);
}

// 1 for the elements of vector i inside the row, 0 for the missing ones of the last.
fn vec_mask(i: u32) -> V {
    return select(V(0.0), V(1.0), vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(vec_len(i)));
}
