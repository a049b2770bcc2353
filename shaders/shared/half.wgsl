// Half-precision elements, two to a u32 (the first in the low 16 bits), four to a vector of
// two words. Unpacked to f32 exactly; packed from f32 to nearest, ties to even, NaN kept NaN
// and magnitudes past the type's largest value to ±inf. Written out in integer operations
// rather than through unpack2x16float and pack2x16float: those need a capability not every
// device has (naga: SHADER_FLOAT16_IN_FLOAT32), and WGSL leaves the packing's rounding to the
// implementation. Twin: `DType::round` in src/dtype.rs (the CPU path's and the tests'
// rounding).

// The four halves of a pair of words, low half first.
fn halves(w: vec2<u32>) -> vec4<u32> {
    return vec4<u32>(w.x, w.x >> 16u, w.y, w.y >> 16u) & vec4<u32>(0xffffu);
}

fn unpack_f16(w: vec2<u32>) -> vec4<f32> {
    let h = halves(w);
    let e = (h >> vec4<u32>(10u)) & vec4<u32>(0x1fu);
    let m = h & vec4<u32>(0x3ffu);
    // Normal: the exponent rebiased (15 → 127); subnormal: m·2^-24; inf and NaN keep m.
    var r = ((e + vec4<u32>(112u)) << vec4<u32>(23u)) | (m << vec4<u32>(13u));
    r = select(r, bitcast<vec4<u32>>(vec4<f32>(m) * 5.9604645e-8), e == vec4<u32>(0u));
    r = select(r, vec4<u32>(0x7f800000u) | (m << vec4<u32>(13u)), e == vec4<u32>(31u));
    return bitcast<vec4<f32>>(((h & vec4<u32>(0x8000u)) << vec4<u32>(16u)) | r);
}

fn unpack_bf16(w: vec2<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));
}

// Each component's f16 bits, in the low 16 bits.
fn f16_bits(v: vec4<f32>) -> vec4<u32> {
    let b = bitcast<vec4<u32>>(v);
    let a = b & vec4<u32>(0x7fffffffu);
    // Normal results: the exponent rebiased (127 → 15), the 13 dropped bits rounded.
    let normal = (a - vec4<u32>(0x38000000u) + vec4<u32>(0xfffu) + ((a >> vec4<u32>(13u)) & vec4<u32>(1u))) >> vec4<u32>(13u);
    // Below 2^-14: a multiple of 2^-24 (the scaling is exact; round() ties to even).
    let small = vec4<u32>(round(min(abs(v), vec4<f32>(1.0)) * 16777216.0));
    var h = select(normal, small, a < vec4<u32>(0x38800000u));
    // From 65 520 on, the nearest is past 65 504, the largest f16.
    h = select(h, vec4<u32>(0x7c00u), a >= vec4<u32>(0x477ff000u));
    h = select(h, vec4<u32>(0x7e00u), a > vec4<u32>(0x7f800000u));
    return ((b >> vec4<u32>(16u)) & vec4<u32>(0x8000u)) | h;
}

// Each component's bf16 bits (the top half of the f32, rounded), in the low 16 bits.
fn bf16_bits(v: vec4<f32>) -> vec4<u32> {
    let b = bitcast<vec4<u32>>(v);
    let rounded = (b + vec4<u32>(0x7fffu) + ((b >> vec4<u32>(16u)) & vec4<u32>(1u))) >> vec4<u32>(16u);
    let nan = (b >> vec4<u32>(16u)) | vec4<u32>(0x40u);
    return select(rounded, nan, (b & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u));
}

fn pair(h: vec4<u32>) -> vec2<u32> {
    return vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));
}

fn pack_f16(v: vec4<f32>) -> vec2<u32> {
    return pair(f16_bits(v));
}

fn pack_bf16(v: vec4<f32>) -> vec2<u32> {
    return pair(bf16_bits(v));
}
