//! Element types: f32, f16 and bf16 (SPEC.md §4). Arithmetic is f32 whatever the type;
//! half-precision tensors halve the bytes a memory-bound kernel moves.

use std::fmt;

/// The element type of a [`Tensor`](crate::Tensor).
///
/// Row-shaped outputs (softmax, log-softmax, the activations, every gradient) are written in
/// their input's type; per-row and reduced outputs (losses, logsumexp, entropies,
/// divergences) are f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16 ([`half::f16`]).
    F16,
    /// bfloat16, the top half of an f32 ([`half::bf16`]).
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// Whether the type is f16 or bf16.
    pub fn is_half(self) -> bool {
        self != DType::F32
    }

    /// `x` rounded to this type (to nearest, ties to even) and widened back.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }

    /// The bits of `x` rounded to this half type (the low 16 bits for f32 are meaningless:
    /// call on half types only).
    pub(crate) fn half_bits(self, x: f32) -> u16 {
        match self {
            DType::Bf16 => half::bf16::from_f32(x).to_bits(),
            DType::F16 | DType::F32 => half::f16::from_f32(x).to_bits(),
        }
    }

    /// The value of the half-precision `bits` of this type.
    pub(crate) fn value_of_bits(self, bits: u16) -> f32 {
        match self {
            DType::Bf16 => half::bf16::from_bits(bits).to_f32(),
            DType::F16 | DType::F32 => half::f16::from_bits(bits).to_f32(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        })
    }
}

/// A half-precision element type, [`half::f16`] or [`half::bf16`]: what
/// [`Tensor::from_half`](crate::Tensor::from_half) takes. Sealed.
pub trait Half: Copy + sealed::Sealed {
    /// Its [`DType`].
    const DTYPE: DType;
    /// Its bits.
    fn bits(self) -> u16;
}

impl Half for half::f16 {
    const DTYPE: DType = DType::F16;
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

impl Half for half::bf16 {
    const DTYPE: DType = DType::Bf16;
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_bits_round_trip() {
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one, 1.
        assert_eq!(DType::F16.round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(DType::Bf16.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(DType::F16.round(65_520.0), f32::INFINITY);
        for t in [DType::F16, DType::Bf16] {
            let x = t.round(-3.7);
            assert_eq!(t.value_of_bits(t.half_bits(x)), x);
        }
        assert_eq!(DType::Bf16.bytes() + DType::F16.bytes(), DType::F32.bytes());
    }
}
