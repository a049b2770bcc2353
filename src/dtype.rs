//! Element types: f32, f16 and bf16 (SPEC.md §4). Arithmetic is f32 whatever the type;
//! half-precision tensors halve the bytes a memory-bound kernel moves.

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use multiversion::multiversion;
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

    /// Every element of `x` rounded to this type in place: the values of [`DType::round`],
    /// by the bits for bf16 and through the processor's conversion instructions for f16
    /// where it has them (half's slice conversions). Sequential: callers split large slices.
    pub(crate) fn round_in_place(self, x: &mut [f32]) {
        match self {
            DType::F32 => {}
            DType::Bf16 => {
                for v in x {
                    *v = f32::from_bits(u32::from(bf16_bits(*v)) << 16);
                }
            }
            DType::F16 => {
                let mut buf = [half::f16::ZERO; CONVERT_BLOCK];
                for part in x.chunks_mut(CONVERT_BLOCK) {
                    let b = &mut buf[..part.len()];
                    b.convert_from_f32_slice(part);
                    b.convert_to_f32_slice(part);
                }
            }
        }
    }

    /// The bits of `src` rounded to this half type, into `dst` of the same length (f32 is
    /// not a half type: f16 is taken for it). Sequential.
    pub(crate) fn bits_of(self, src: &[f32], dst: &mut [u16]) {
        match self {
            DType::Bf16 => bf16_bits_of(src, dst),
            DType::F16 | DType::F32 => dst
                .reinterpret_cast_mut::<half::f16>()
                .convert_from_f32_slice(src),
        }
    }

    /// The values of this half type's bits `src`, widened exactly into `dst` of the same
    /// length (f16 for f32). Sequential.
    pub(crate) fn values_of(self, src: &[u16], dst: &mut [f32]) {
        match self {
            DType::Bf16 => bf16_values_of(src, dst),
            DType::F16 | DType::F32 => src
                .reinterpret_cast::<half::f16>()
                .convert_to_f32_slice(dst),
        }
    }
}

/// Elements per parallel task of the host's conversions of whole tensors.
pub(crate) const CONVERT_CHUNK: usize = 1 << 16;

/// Elements converted through one stack buffer.
const CONVERT_BLOCK: usize = 1024;

/// `x` rounded to bf16 (to nearest, ties to even: the carry of the dropped half into bit 16,
/// which takes the largest finite values to infinity), as bits; a NaN keeps its sign and top
/// payload and is made quiet. The bits of `half::bf16::from_f32`.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let r = if x.is_nan() {
        b | 0x0040_0000
    } else {
        b.wrapping_add(0x7fff + ((b >> 16) & 1))
    };
    (r >> 16) as u16
}

/// [`DType::bits_of`] for bf16, in the widest vectors the CPU has.
#[multiversion(targets = "simd")]
fn bf16_bits_of(src: &[f32], dst: &mut [u16]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = bf16_bits(v);
    }
}

/// [`DType::values_of`] for bf16, in the widest vectors the CPU has.
#[multiversion(targets = "simd")]
fn bf16_values_of(src: &[u16], dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(b) << 16);
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

/// An element type of the CPU path's rows: f32, [`half::f16`] or [`half::bf16`]. Sealed.
/// The ops compute in f32 whatever the type (SPEC.md §4); their row-shaped results are of
/// it, read and written two bytes an element for the half types.
///
/// ```
/// use half::bf16;
/// use xent::{SoftmaxKind, SoftmaxOptions};
/// let x: Vec<bf16> = [1.0f32, 2.0, 3.0].iter().map(|&v| bf16::from_f32(v)).collect();
/// let p: Vec<bf16> = xent::cpu::softmax(&x, 3, SoftmaxKind::Softmax, &SoftmaxOptions::default())?;
/// assert_eq!(p[2], bf16::from_f32(0.665_240_9));
/// # Ok::<(), xent::Error>(())
/// ```
pub trait Element: Copy + Send + Sync + sealed::Elements {
    /// Its [`DType`].
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}

impl Element for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}

pub(crate) mod sealed {
    use half::slice::HalfFloatSliceExt;
    use half::vec::HalfBitsVecExt;

    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}

    /// How the CPU reads and writes slices of an element type as f32.
    pub trait Elements: Sized {
        /// `x` as f32 values: `x` itself for f32, else widened into `buf` (grown to fit).
        fn widen<'a>(x: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32];
        /// `f` of `out` as f32 values: of `out` itself for f32, else of a part of `buf`
        /// (grown to fit), rounded into `out` after.
        fn narrow<R>(out: &mut [Self], buf: &mut Vec<f32>, f: impl FnOnce(&mut [f32]) -> R) -> R;
        /// `n` zeros, from zeroed memory.
        fn zeros(n: usize) -> Vec<Self>;
        /// `x` rounded to this type.
        fn from_f32s(x: &[f32]) -> Vec<Self> {
            let mut v = Self::zeros(x.len());
            Self::narrow(&mut v, &mut Vec::new(), |o| o.copy_from_slice(x));
            v
        }
    }

    impl Elements for f32 {
        fn widen<'a>(x: &'a [f32], _: &'a mut Vec<f32>) -> &'a [f32] {
            x
        }
        fn narrow<R>(out: &mut [f32], _: &mut Vec<f32>, f: impl FnOnce(&mut [f32]) -> R) -> R {
            f(out)
        }
        fn zeros(n: usize) -> Vec<f32> {
            vec![0.0; n]
        }
    }

    /// `buf`'s first `n` values, grown to hold them.
    fn part(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
        &mut buf[..n]
    }

    macro_rules! half_elements {
        ($t:ty) => {
            impl Elements for $t {
                fn widen<'a>(x: &'a [$t], buf: &'a mut Vec<f32>) -> &'a [f32] {
                    let part = part(buf, x.len());
                    <$t as super::Element>::DTYPE.values_of(x.reinterpret_cast(), part);
                    part
                }
                fn narrow<R>(
                    out: &mut [$t],
                    buf: &mut Vec<f32>,
                    f: impl FnOnce(&mut [f32]) -> R,
                ) -> R {
                    let part = part(buf, out.len());
                    let r = f(part);
                    <$t as super::Element>::DTYPE.bits_of(part, out.reinterpret_cast_mut());
                    r
                }
                fn zeros(n: usize) -> Vec<$t> {
                    vec![0u16; n].reinterpret_into()
                }
            }
        };
    }
    half_elements!(half::f16);
    half_elements!(half::bf16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_conversions_match_half_on_every_kind_of_f32() {
        // Specials, both signs of each, the largest finite values, subnormals of every
        // size, ties, then a million pseudo-random bit patterns (every exponent, NaNs too).
        let mut x: Vec<f32> = [
            0.0,
            1.0,
            f32::INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            65_504.0,
            65_520.0,
            6e-8,
            3e-8,
            1.0 + 2f32.powi(-11),
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
        ]
        .iter()
        .flat_map(|&v| [v, -v])
        .collect();
        x.push(f32::from_bits(0x7fc1_2345));
        x.push(f32::from_bits(0xff80_0001));
        let mut s = 0x2545_f491u32;
        x.extend((0..1_000_000).map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            f32::from_bits(s)
        }));
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for t in [DType::F16, DType::Bf16] {
            let mut rounded = x.clone();
            t.round_in_place(&mut rounded);
            let mut bits = vec![0u16; x.len()];
            t.bits_of(&x, &mut bits);
            let mut back = vec![0f32; x.len()];
            t.values_of(&bits, &mut back);
            for (i, &v) in x.iter().enumerate() {
                let (want_bits, want) = match t {
                    DType::F16 => (
                        half::f16::from_f32(v).to_bits(),
                        half::f16::from_f32(v).to_f32(),
                    ),
                    _ => (
                        half::bf16::from_f32(v).to_bits(),
                        half::bf16::from_f32(v).to_f32(),
                    ),
                };
                assert!(
                    same(rounded[i], want),
                    "{t} {v:e}: {} against {want}",
                    rounded[i]
                );
                assert!(
                    same(back[i], want),
                    "{t} {v:e}: widened {} against {want}",
                    back[i]
                );
                assert!(
                    bits[i] == want_bits || (v.is_nan() && same(back[i], want)),
                    "{t} {v:e}: bits {:#06x} against {want_bits:#06x}",
                    bits[i]
                );
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_and_bits_round_trip() {
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one, 1.
        assert_eq!(DType::F16.round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(DType::Bf16.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(DType::F16.round(65_520.0), f32::INFINITY);
        for t in [DType::F16, DType::Bf16] {
            let x = [t.round(-3.7)];
            let mut bits = [0u16];
            let mut back = [0f32];
            t.bits_of(&x, &mut bits);
            t.values_of(&bits, &mut back);
            assert_eq!(back, x);
        }
        assert_eq!(DType::Bf16.bytes() + DType::F16.bytes(), DType::F32.bytes());
    }
}
