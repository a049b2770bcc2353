// Where rows sit in their storage when every row is a multiple of W long (vec1, vec4): the
// storage element is V itself, a row of P.cols elements is P.cols / W of them, and row `row`
// of an array laid out from element `off` (a multiple of W) starts at storage element
// row_start(off, row). Twin: `VecWidth::One` and `VecWidth::Four` in src/gpu/kernels.rs; the
// same names are defined by layout_gathered.wgsl.
alias XS = V;
// An f32 array under this layout (`#load_f32`): the same storage.
alias FS = XS;

fn row_vecs() -> u32 {
    return P.cols / W;
}

fn row_start(off: u32, row: u32) -> u32 {
    return off / W + row * (P.cols / W);
}

// 1 for the elements of vector i inside the row: all of them.
fn vec_mask(i: u32) -> V {
    return V(1.0);
}

// The vector holding element e of the row, and its component there.
fn vec_of(e: u32) -> u32 {
    return e / W;
}

fn comp_of(e: u32) -> u32 {
    return e % W;
}
