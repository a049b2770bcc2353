// Row element type for rows whose length is a multiple of 4: every row then starts on a
// 16-byte boundary and is read with one coalesced 128-bit load per invocation.
// Twin: `VecWidth::Four` in src/gpu/kernels.rs. The same names are defined by vec1.wgsl.
alias V = vec4<f32>;
const W: u32 = 4u;

fn hmax(v: V) -> f32 { return max(max(v.x, v.y), max(v.z, v.w)); }
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }

// Element k of a vector, and the vector with `a` added to element k.
fn elem(v: V, k: u32) -> f32 { return v[k]; }
fn add_at(v: V, k: u32, a: f32) -> V {
    var r = v;
    r[k] = r[k] + a;
    return r;
}
