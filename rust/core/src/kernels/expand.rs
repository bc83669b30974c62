//! Dequantization: ternary codes to the values `-scale`, `0`, `+scale` in the output dtype.
//! The three values are rounded to the output dtype once, so `code * scale` in float32 and then
//! rounded (what the reference frameworks do) gives the same bits.

use super::dispatch;
use crate::simd::SimdLevel;

/// The bit patterns of `-scale` and `+scale` in a 32-bit or 16-bit output type (zero is `+0`).
#[derive(Debug, Clone, Copy)]
pub struct Values<T> {
    pub negative: T,
    pub positive: T,
}

/// Writes one little-endian 32-bit value per code (`out.len() == codes.len() * 4`).
pub fn expand32(level: SimdLevel, codes: &[i8], values: Values<u32>, out: &mut [u8]) {
    assert_eq!(out.len(), codes.len() * 4, "four bytes per code");
    dispatch!(
        level,
        scalar::expand32,
        avx2::expand32,
        avx512::expand32,
        (codes, values, out)
    );
}

/// Writes one little-endian 16-bit value per code (`out.len() == codes.len() * 2`).
pub fn expand16(level: SimdLevel, codes: &[i8], values: Values<u16>, out: &mut [u8]) {
    assert_eq!(out.len(), codes.len() * 2, "two bytes per code");
    dispatch!(
        level,
        scalar::expand16,
        avx2::expand16,
        avx512::expand16,
        (codes, values, out)
    );
}

/// [`expand32`] of consecutive groups of `group_len` codes, group `g` with `values[g]` (the
/// last group may be shorter), in one call: a call per small group costs about a fifth of its
/// work.
pub fn expand32_groups(
    level: SimdLevel,
    codes: &[i8],
    group_len: usize,
    values: &[Values<u32>],
    out: &mut [u8],
) {
    assert_eq!(out.len(), codes.len() * 4, "four bytes per code");
    assert_eq!(
        codes.len().div_ceil(group_len),
        values.len(),
        "values per group"
    );
    dispatch!(
        level,
        scalar::expand32_groups,
        avx2::expand32_groups,
        avx512::expand32_groups,
        (codes, group_len, values, out)
    );
}

/// [`expand16`] of consecutive groups, as [`expand32_groups`].
pub fn expand16_groups(
    level: SimdLevel,
    codes: &[i8],
    group_len: usize,
    values: &[Values<u16>],
    out: &mut [u8],
) {
    assert_eq!(out.len(), codes.len() * 2, "two bytes per code");
    assert_eq!(
        codes.len().div_ceil(group_len),
        values.len(),
        "values per group"
    );
    dispatch!(
        level,
        scalar::expand16_groups,
        avx2::expand16_groups,
        avx512::expand16_groups,
        (codes, group_len, values, out)
    );
}

/// A level's `*_groups` function: its kernel on each group in turn, inlined where the level's
/// features allow.
macro_rules! by_groups {
    ($name:ident, $kernel:ident, $t:ty, $bytes:literal) => {
        pub fn $name(codes: &[i8], group_len: usize, values: &[Values<$t>], out: &mut [u8]) {
            for ((c, &v), o) in codes
                .chunks(group_len)
                .zip(values)
                .zip(out.chunks_mut(group_len * $bytes))
            {
                $kernel(c, v, o);
            }
        }
    };
    ($name:ident, $kernel:ident, $t:ty, $bytes:literal, $features:literal) => {
        /// # Safety
        /// The processor must support the target features this function enables.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(codes: &[i8], group_len: usize, values: &[Values<$t>], out: &mut [u8]) {
            for ((c, &v), o) in codes
                .chunks(group_len)
                .zip(values)
                .zip(out.chunks_mut(group_len * $bytes))
            {
                // SAFETY: the kernel needs this function's features.
                unsafe { $kernel(c, v, o) };
            }
        }
    };
}

pub mod scalar {
    use super::Values;

    by_groups!(expand32_groups, expand32, u32, 4);
    by_groups!(expand16_groups, expand16, u16, 2);

    fn pick<T: Default>(code: i8, values: Values<T>) -> T {
        match code {
            1 => values.positive,
            -1 => values.negative,
            _ => T::default(),
        }
    }

    pub fn expand32(codes: &[i8], values: Values<u32>, out: &mut [u8]) {
        for (&c, o) in codes.iter().zip(out.chunks_exact_mut(4)) {
            o.copy_from_slice(&pick(c, values).to_le_bytes());
        }
    }

    pub fn expand16(codes: &[i8], values: Values<u16>, out: &mut [u8]) {
        for (&c, o) in codes.iter().zip(out.chunks_exact_mut(2)) {
            o.copy_from_slice(&pick(c, values).to_le_bytes());
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{Values, scalar};

    by_groups!(expand32_groups, expand32, u32, 4, "avx2,f16c");
    by_groups!(expand16_groups, expand16, u16, 2, "avx2,f16c");

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn expand32(codes: &[i8], values: Values<u32>, out: &mut [u8]) {
        let pos = _mm256_set1_epi32(values.positive as i32);
        let neg = _mm256_set1_epi32(values.negative as i32);
        let zero = _mm256_setzero_si256();
        let blocks = codes.len() / 8;
        for b in 0..blocks {
            // SAFETY: 8 codes in, 32 bytes out, both within bounds.
            unsafe {
                let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(codes.as_ptr().add(b * 8).cast()));
                let r = _mm256_or_si256(
                    _mm256_and_si256(_mm256_cmpgt_epi32(c, zero), pos),
                    _mm256_and_si256(_mm256_cmpgt_epi32(zero, c), neg),
                );
                _mm256_storeu_si256(out.as_mut_ptr().add(b * 32).cast(), r);
            }
        }
        scalar::expand32(&codes[blocks * 8..], values, &mut out[blocks * 32..]);
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn expand16(codes: &[i8], values: Values<u16>, out: &mut [u8]) {
        let pos = _mm256_set1_epi16(values.positive as i16);
        let neg = _mm256_set1_epi16(values.negative as i16);
        let zero = _mm256_setzero_si256();
        let blocks = codes.len() / 16;
        for b in 0..blocks {
            // SAFETY: 16 codes in, 32 bytes out, both within bounds.
            unsafe {
                let c = _mm256_cvtepi8_epi16(_mm_loadu_si128(codes.as_ptr().add(b * 16).cast()));
                let r = _mm256_or_si256(
                    _mm256_and_si256(_mm256_cmpgt_epi16(c, zero), pos),
                    _mm256_and_si256(_mm256_cmpgt_epi16(zero, c), neg),
                );
                _mm256_storeu_si256(out.as_mut_ptr().add(b * 32).cast(), r);
            }
        }
        scalar::expand16(&codes[blocks * 16..], values, &mut out[blocks * 32..]);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{Values, scalar};

    by_groups!(
        expand32_groups,
        expand32,
        u32,
        4,
        "avx2,f16c,avx512f,avx512bw,avx512vl"
    );
    by_groups!(
        expand16_groups,
        expand16,
        u16,
        2,
        "avx2,f16c,avx512f,avx512bw,avx512vl"
    );

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn expand32(codes: &[i8], values: Values<u32>, out: &mut [u8]) {
        let pos = _mm512_set1_epi32(values.positive as i32);
        let neg = _mm512_set1_epi32(values.negative as i32);
        let zero = _mm_setzero_si128();
        let blocks = codes.len() / 16;
        for b in 0..blocks {
            // SAFETY: 16 codes in, 64 bytes out, both within bounds.
            unsafe {
                let c = _mm_loadu_si128(codes.as_ptr().add(b * 16).cast());
                let p = _mm_cmpgt_epi8_mask(c, zero);
                let n = _mm_cmplt_epi8_mask(c, zero);
                let r = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(p, pos), n, neg);
                _mm512_storeu_si512(out.as_mut_ptr().add(b * 64).cast(), r);
            }
        }
        scalar::expand32(&codes[blocks * 16..], values, &mut out[blocks * 64..]);
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn expand16(codes: &[i8], values: Values<u16>, out: &mut [u8]) {
        let pos = _mm512_set1_epi16(values.positive as i16);
        let neg = _mm512_set1_epi16(values.negative as i16);
        let zero = _mm256_setzero_si256();
        let blocks = codes.len() / 32;
        for b in 0..blocks {
            // SAFETY: 32 codes in, 64 bytes out, both within bounds.
            unsafe {
                let c = _mm256_loadu_si256(codes.as_ptr().add(b * 32).cast());
                let p = _mm256_cmpgt_epi8_mask(c, zero);
                let n = _mm256_cmplt_epi8_mask(c, zero);
                let r = _mm512_mask_mov_epi16(_mm512_maskz_mov_epi16(p, pos), n, neg);
                _mm512_storeu_si512(out.as_mut_ptr().add(b * 64).cast(), r);
            }
        }
        scalar::expand16(&codes[blocks * 32..], values, &mut out[blocks * 64..]);
    }
}
