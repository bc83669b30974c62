//! Widening of stored weights to float32: the one place where float16 and bfloat16 become f32.
//! Sources are raw little-endian bytes, so they may sit at any alignment (memory-mapped files).

use super::dispatch;
use crate::dtype::FloatDType;
use crate::simd::SimdLevel;

/// Fills `dst` with the values stored in `src` as `dtype` (`src.len() == dst.len() * size`).
pub fn widen(level: SimdLevel, dtype: FloatDType, src: &[u8], dst: &mut [f32]) {
    assert_eq!(
        src.len(),
        dst.len() * dtype.size(),
        "source and destination lengths"
    );
    match dtype {
        FloatDType::F32 => scalar::copy_f32(src, dst),
        FloatDType::BF16 => dispatch!(level, scalar::bf16, avx2::bf16, avx512::bf16, (src, dst)),
        FloatDType::F16 => dispatch!(level, scalar::f16, avx2::f16, avx512::f16, (src, dst)),
    }
}

pub mod scalar {
    pub fn copy_f32(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
            *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        }
    }

    pub fn bf16(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = f32::from_bits(u32::from(u16::from_le_bytes([s[0], s[1]])) << 16);
        }
    }

    pub fn f16(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm256_castsi256_ps, _mm256_cvtepu16_epi32, _mm256_cvtph_ps,
        _mm256_slli_epi32, _mm256_storeu_ps,
    };

    use super::scalar;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 8;
        for b in 0..blocks {
            // SAFETY: 8 values of 2 bytes in, 8 floats out, both within bounds.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(b * 16).cast::<__m128i>());
                let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                _mm256_storeu_ps(dst.as_mut_ptr().add(b * 8), _mm256_castsi256_ps(w));
            }
        }
        scalar::bf16(&src[blocks * 16..], &mut dst[blocks * 8..]);
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 8;
        for b in 0..blocks {
            // SAFETY: 8 values of 2 bytes in, 8 floats out, both within bounds.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(b * 16).cast::<__m128i>());
                _mm256_storeu_ps(dst.as_mut_ptr().add(b * 8), _mm256_cvtph_ps(h));
            }
        }
        scalar::f16(&src[blocks * 16..], &mut dst[blocks * 8..]);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::{
        __m256i, _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32, _mm512_cvtph_ps,
        _mm512_slli_epi32, _mm512_storeu_ps,
    };

    use super::scalar;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 16;
        for b in 0..blocks {
            // SAFETY: 16 values of 2 bytes in, 16 floats out, both within bounds.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(b * 32).cast::<__m256i>());
                let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                _mm512_storeu_ps(dst.as_mut_ptr().add(b * 16), _mm512_castsi512_ps(w));
            }
        }
        scalar::bf16(&src[blocks * 32..], &mut dst[blocks * 16..]);
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn f16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 16;
        for b in 0..blocks {
            // SAFETY: 16 values of 2 bytes in, 16 floats out, both within bounds.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(b * 32).cast::<__m256i>());
                _mm512_storeu_ps(dst.as_mut_ptr().add(b * 16), _mm512_cvtph_ps(h));
            }
        }
        scalar::f16(&src[blocks * 32..], &mut dst[blocks * 16..]);
    }
}
