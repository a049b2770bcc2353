// Row element type for rows of any length: one f32 per load.
// Twin: `VecWidth::One` in src/gpu/kernels.rs. The same names are defined by vec4.wgsl.
alias V = f32;
const W: u32 = 1u;

fn hmax(v: V) -> f32 { return v; }
fn hsum(v: V) -> f32 { return v; }

// Element k of a vector, and the vector with `a` added to element k.
fn elem(v: V, k: u32) -> f32 { return v; }
fn add_at(v: V, k: u32, a: f32) -> V { return v + a; }
