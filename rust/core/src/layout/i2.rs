//! `i2`: 2 bits per value, 4 consecutive values (row-major) per byte, the first in the lowest
//! bits; code `c` is stored as `c + 1`. The last byte is padded with zeros' pattern `0b01`.

use super::{PackedLayout, Tile, flat_tiles, require_nonempty};
use crate::error::Result;
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

pub struct I2;

impl PackedLayout for I2 {
    fn name(&self) -> &'static str {
        "i2"
    }

    fn description(&self) -> &'static str {
        "ryzq's 2-bit layout: 4 consecutive values per byte, with float32 scales apart"
    }

    fn shape_rule(&self) -> &'static str {
        "any shape"
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        Ok(vec![require_nonempty(shape)?.div_ceil(4)])
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), 4, 1)
    }

    fn packed_len(&self, values: usize) -> usize {
        values.div_ceil(4)
    }

    unsafe fn pack_codes(&self, level: SimdLevel, _: usize, codes: &[i8], out: &mut [u8]) -> bool {
        dispatch!(level, scalar::pack, avx2::pack, avx2::pack, (codes, out))
    }

    unsafe fn unpack_codes(
        &self,
        level: SimdLevel,
        _: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> bool {
        dispatch!(
            level,
            scalar::unpack,
            avx2::unpack,
            avx2::unpack,
            (data, codes)
        )
    }
}

pub mod scalar {
    pub fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (byte, group) in out.iter_mut().zip(codes.chunks(4)) {
            let mut b = 0b0101_0101u8;
            for (k, &c) in group.iter().enumerate() {
                let v = c.wrapping_add(1) as u8;
                valid &= v <= 2;
                b = (b & !(0b11 << (2 * k))) | ((v & 0b11) << (2 * k));
            }
            *byte = b;
        }
        valid
    }

    pub fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (&byte, group) in data.iter().zip(codes.chunks_mut(4)) {
            for (k, c) in group.iter_mut().enumerate() {
                let v = (byte >> (2 * k)) & 0b11;
                valid &= v != 0b11;
                *c = v as i8 - 1;
            }
        }
        valid
    }
}

/// Also the AVX-512 level's kernel: the work is byte shuffles, which 512-bit registers do not
/// speed up without VBMI.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::scalar;

    /// Packs the 32 codes at `codes` into 8 bytes, the low half of the result; flags in `bad`
    /// the bytes of codes that are not -1, 0 or 1.
    ///
    /// # Safety
    /// The processor must support the target features this function enables, and `codes`
    /// must point to 32 readable codes.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn pack_32(codes: *const i8, bad: &mut __m256i) -> __m128i {
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let weights = _mm256_set1_epi16(0x0401); // bytes 1, 4: c0 + 4 c1
        let weights2 = _mm256_set1_epi32(0x0010_0001); // words 1, 16
        // SAFETY: 32 codes in, as the caller promises.
        let c = _mm256_add_epi8(unsafe { _mm256_loadu_si256(codes.cast()) }, one);
        *bad = _mm256_or_si256(*bad, _mm256_xor_si256(_mm256_max_epu8(c, two), two));
        let pairs = _mm256_maddubs_epi16(c, weights);
        let quads = _mm256_madd_epi16(pairs, weights2);
        let words = _mm256_packus_epi32(quads, quads);
        let bytes = _mm256_packus_epi16(words, words);
        let lo = _mm256_castsi256_si128(bytes);
        let hi = _mm256_extracti128_si256::<1>(bytes);
        _mm_unpacklo_epi32(lo, hi)
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        let blocks = codes.len() / 32;
        for b in 0..blocks {
            // SAFETY: 32 codes in, 8 bytes out, both within bounds (out holds len/4 bytes).
            unsafe {
                let bytes = pack_32(codes.as_ptr().add(b * 32), &mut bad);
                _mm_storel_epi64(out.as_mut_ptr().add(b * 8).cast(), bytes);
            }
        }
        let tail = scalar::pack(&codes[blocks * 32..], &mut out[blocks * 8..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }

    /// Unpacks the 32 bytes `x` into the 128 codes at `codes`; flags in `bad` the fields 0b11.
    ///
    /// # Safety
    /// The processor must support the target features this function enables, and `codes`
    /// must point to 128 writable codes.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn unpack_32(x: __m256i, codes: *mut i8, bad: &mut __m256i) {
        let mask = _mm256_set1_epi8(0b11);
        let one = _mm256_set1_epi8(1);
        let s0 = _mm256_and_si256(x, mask);
        let s1 = _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask);
        let s2 = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
        let s3 = _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask);
        for s in [s0, s1, s2, s3] {
            *bad = _mm256_or_si256(*bad, _mm256_cmpeq_epi8(s, mask));
        }
        // Interleave so that byte j's four fields land at 4j..4j+3.
        let s01_lo = _mm256_unpacklo_epi8(s0, s1);
        let s01_hi = _mm256_unpackhi_epi8(s0, s1);
        let s23_lo = _mm256_unpacklo_epi8(s2, s3);
        let s23_hi = _mm256_unpackhi_epi8(s2, s3);
        let a = _mm256_unpacklo_epi16(s01_lo, s23_lo); // bytes 0-3 | 16-19
        let bq = _mm256_unpackhi_epi16(s01_lo, s23_lo); // 4-7 | 20-23
        let c = _mm256_unpacklo_epi16(s01_hi, s23_hi); // 8-11 | 24-27
        let d = _mm256_unpackhi_epi16(s01_hi, s23_hi); // 12-15 | 28-31
        let parts = [
            _mm256_permute2x128_si256::<0x20>(a, bq),
            _mm256_permute2x128_si256::<0x20>(c, d),
            _mm256_permute2x128_si256::<0x31>(a, bq),
            _mm256_permute2x128_si256::<0x31>(c, d),
        ];
        for (k, p) in parts.into_iter().enumerate() {
            // SAFETY: 128 codes out, as the caller promises.
            unsafe { _mm256_storeu_si256(codes.add(32 * k).cast(), _mm256_sub_epi8(p, one)) };
        }
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        let blocks = codes.len() / 128;
        for b in 0..blocks {
            // SAFETY: 32 bytes in, 128 codes out, both within bounds.
            unsafe {
                let x = _mm256_loadu_si256(data.as_ptr().add(b * 32).cast());
                unpack_32(x, codes.as_mut_ptr().add(b * 128), &mut bad);
            }
        }
        let tail = scalar::unpack(&data[blocks * 32..], &mut codes[blocks * 128..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }
}
