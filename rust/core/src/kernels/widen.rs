//! Widening of stored weights to float32: the one place where float16 and bfloat16 become f32.
//! Sources are raw little-endian bytes, so they may sit at any alignment (memory-mapped files).
//! The SIMD kernels of the other files widen in registers with the same conversions: bfloat16
//! is the upper half of a float32, float16 converts exactly (F16C / AVX-512 `vcvtph2ps`).

use super::{Raw, dispatch};
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

/// Values per chunk of [`for_each_chunk`]: a multiple of 16, so that a kernel's reduction
/// lanes line up across chunks.
pub const CHUNK: usize = 256;

/// Calls `f` with the values of `src` as float32, `CHUNK` at a time, in order (scalar widening:
/// the reference path, and the tails of the SIMD kernels).
pub fn for_each_chunk(src: Raw<'_>, mut f: impl FnMut(&[f32])) {
    // Most calls are a SIMD kernel's empty tail: skip clearing the buffer for them.
    if src.is_empty() {
        return;
    }
    let mut buf = [0f32; CHUNK];
    let size = src.dtype.size();
    for bytes in src.bytes.chunks(CHUNK * size) {
        let out = &mut buf[..bytes.len() / size];
        widen(SimdLevel::SCALAR, src.dtype, bytes, out);
        f(out);
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

/// Loads 8 (AVX2) or 16 (AVX-512) values of a dtype as float32 from a byte pointer.
#[cfg(target_arch = "x86_64")]
macro_rules! load_f32x8 {
    (F32, $p:expr) => {
        _mm256_loadu_ps($p.cast::<f32>())
    };
    (BF16, $p:expr) => {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
            _mm_loadu_si128($p.cast()),
        )))
    };
    (F16, $p:expr) => {
        _mm256_cvtph_ps(_mm_loadu_si128($p.cast()))
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use load_f32x8;

#[cfg(target_arch = "x86_64")]
macro_rules! load_f32x16 {
    (F32, $p:expr) => {
        _mm512_loadu_ps($p.cast::<f32>())
    };
    (BF16, $p:expr) => {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
            _mm256_loadu_si256($p.cast()),
        )))
    };
    (F16, $p:expr) => {
        _mm512_cvtph_ps(_mm256_loadu_si256($p.cast()))
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use load_f32x16;

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::scalar;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 8;
        for b in 0..blocks {
            // SAFETY: 8 values of 2 bytes in, 8 floats out, both within bounds.
            unsafe {
                let v = load_f32x8!(BF16, src.as_ptr().add(b * 16));
                _mm256_storeu_ps(dst.as_mut_ptr().add(b * 8), v);
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
                let v = load_f32x8!(F16, src.as_ptr().add(b * 16));
                _mm256_storeu_ps(dst.as_mut_ptr().add(b * 8), v);
            }
        }
        scalar::f16(&src[blocks * 16..], &mut dst[blocks * 8..]);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::scalar;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
        let blocks = dst.len() / 16;
        for b in 0..blocks {
            // SAFETY: 16 values of 2 bytes in, 16 floats out, both within bounds.
            unsafe {
                let v = load_f32x16!(BF16, src.as_ptr().add(b * 32));
                _mm512_storeu_ps(dst.as_mut_ptr().add(b * 16), v);
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
                let v = load_f32x16!(F16, src.as_ptr().add(b * 32));
                _mm512_storeu_ps(dst.as_mut_ptr().add(b * 16), v);
            }
        }
        scalar::f16(&src[blocks * 32..], &mut dst[blocks * 16..]);
    }
}
