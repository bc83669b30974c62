//! `t1`: base-3 packing, 5 values per byte (1.6 bits per value).
//!
//! The flat tensor is cut into blocks of 160 values, each stored in 32 bytes; a last block of
//! `r < 160` values takes `B = ceil(r / 5)` bytes, so a tensor of `n` values takes `ceil(n / 5)`.
//! In a block of `B` bytes, byte `m` holds the values `m + B n` for `n = 0..5` as the digits
//! `d = code + 1`, most significant first: `q = d0 81 + d1 27 + d2 9 + d3 3 + d4`, missing values
//! count as code 0 (digit 1). The byte stores `ceil(q * 256 / 243)`, which turns decoding into a
//! multiply and a shift: digit `n` of byte `b` is `((b * 3^n) mod 256) * 3 >> 8`. As in GGUF's
//! TQ1_0, every digit of a 32-byte block is a lane-wise operation on 32 bytes, with no division.
//!
//! Only 243 of the 256 byte values are `ceil(q * 256 / 243)` of some `q`: byte `b` is one iff
//! `(243 b) mod 256 < 243` ([`is_code_byte`]). Unpacking refuses the 13 others, and in a short
//! last block also a byte whose digits of missing values are not 1 (code 0), since packing
//! writes them so.

use super::{PackedLayout, Tile, flat_tiles, require_nonempty};
use crate::error::Result;
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

pub struct T1;

/// Values per full block and its bytes.
pub const BLOCK: usize = 160;
pub const BLOCK_BYTES: usize = 32;

impl PackedLayout for T1 {
    fn name(&self) -> &'static str {
        "t1"
    }

    fn description(&self) -> &'static str {
        "ryzq's 1.6-bit layout: 5 values per byte in base 3, with float32 scales apart"
    }

    fn shape_rule(&self) -> &'static str {
        "any shape"
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        Ok(vec![require_nonempty(shape)?.div_ceil(5)])
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), BLOCK, BLOCK_BYTES)
    }

    fn packed_len(&self, values: usize) -> usize {
        values.div_ceil(5)
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

    fn first_corrupt_byte(&self, data: &[u8], values: usize) -> Option<usize> {
        scalar::first_invalid_byte(data, values)
    }
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Whether `byte` is `ceil(q * 256 / 243)` for some `q` in 0..=242: `b = ceil(256 q / 243)` iff
/// `0 <= 243 b - 256 q < 243`, so iff `q = floor(243 b / 256)` (at most 242 for any byte) and
/// `(243 b) mod 256 < 243`.
#[must_use]
pub const fn is_code_byte(byte: u8) -> bool {
    byte.wrapping_mul(243) < 243
}

/// Digit `n` (most significant first) of a byte that stores `ceil(q * 256 / 243)`.
#[must_use]
pub const fn digit(byte: u8, n: usize) -> u8 {
    ((byte.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as u8
}

pub mod scalar {
    use super::{BLOCK, digit, is_code_byte};

    /// Whether byte `m` of a block of `len` values in `stride` bytes is one that codes pack
    /// to: a code byte whose digits of missing values (`m + stride n >= len`) are 1.
    fn valid_byte(byte: u8, m: usize, stride: usize, len: usize) -> bool {
        is_code_byte(byte) && (0..5).all(|n| m + stride * n < len || digit(byte, n) == 1)
    }

    /// The offset of the first byte of `data` (holding `len` values) that no codes pack to.
    pub fn first_invalid_byte(data: &[u8], len: usize) -> Option<usize> {
        data.chunks(BLOCK / 5)
            .zip((0..len).step_by(BLOCK))
            .enumerate()
            .find_map(|(b, (bytes, start))| {
                let values = (len - start).min(BLOCK);
                bytes
                    .iter()
                    .enumerate()
                    .position(|(m, &byte)| !valid_byte(byte, m, bytes.len(), values))
                    .map(|m| b * (BLOCK / 5) + m)
            })
    }

    /// Packs one block of `codes.len() <= 160` values into `ceil(len / 5)` bytes.
    #[allow(clippy::inline_always)] // as `pack`
    #[inline(always)]
    fn pack_block(codes: &[i8], out: &mut [u8]) -> bool {
        let stride = out.len();
        let mut valid = true;
        for (m, byte) in out.iter_mut().enumerate() {
            let mut q = 0u32;
            for n in 0..5 {
                let d = codes
                    .get(m + stride * n)
                    .map_or(1, |&c| c.wrapping_add(1) as u8);
                valid &= d <= 2;
                q = q * 3 + u32::from(d.min(2));
            }
            *byte = (q * 256).div_ceil(243) as u8;
        }
        valid
    }

    fn unpack_block(data: &[u8], codes: &mut [i8]) -> bool {
        let (stride, len) = (data.len(), codes.len());
        // Only a short block has missing values to check.
        let full = len == 5 * stride;
        let mut valid = true;
        for (m, &byte) in data.iter().enumerate() {
            valid &= if full {
                is_code_byte(byte)
            } else {
                valid_byte(byte, m, stride, len)
            };
            for n in 0..5 {
                if let Some(c) = codes.get_mut(m + stride * n) {
                    *c = digit(byte, n) as i8 - 1;
                }
            }
        }
        valid
    }

    // Inlined with `pack_block` wherever called: TQ1_0 packs t1 blocks of constant sizes, for
    // which the compiler vectorizes them (ten times as fast); its heuristics do not see that.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (block, bytes) in codes.chunks(BLOCK).zip(out.chunks_mut(BLOCK / 5)) {
            valid &= pack_block(block, bytes);
        }
        valid
    }

    /// Whether every byte is one that codes pack to.
    pub fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (bytes, block) in data.chunks(BLOCK / 5).zip(codes.chunks_mut(BLOCK)) {
            valid &= unpack_block(bytes, block);
        }
        valid
    }
}

/// Also the AVX-512 level's kernel: a block is exactly one 256-bit register of bytes.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{BLOCK, BLOCK_BYTES, POW3, scalar};

    /// 32 16-bit lanes (two registers) back to 32 bytes in order.
    #[target_feature(enable = "avx2,f16c")]
    fn narrow(lo: __m256i, hi: __m256i) -> __m256i {
        _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(lo, hi))
    }

    /// All ones in the bytes that no codes pack to ([`super::is_code_byte`]): `b` is one iff
    /// `(243 b) mod 256 >= 243`, i.e. iff `t = (13 b) mod 256` is in 1..=13 (as `243 = -13`
    /// mod 256). `13 b = 8 b + 4 b + b` in byte-wise adds; `t + 114` moves 1..=13 to 115..=127,
    /// exactly the signed bytes above 114.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn invalid_bytes(x: __m256i) -> __m256i {
        let x2 = _mm256_add_epi8(x, x);
        let x4 = _mm256_add_epi8(x2, x2);
        let x13 = _mm256_add_epi8(_mm256_add_epi8(_mm256_add_epi8(x4, x4), x4), x);
        let bound = _mm256_set1_epi8(114);
        _mm256_cmpgt_epi8(_mm256_add_epi8(x13, bound), bound)
    }

    /// [`invalid_bytes`] of 16 bytes.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn invalid_bytes128(x: __m128i) -> __m128i {
        let x2 = _mm_add_epi8(x, x);
        let x4 = _mm_add_epi8(x2, x2);
        let x13 = _mm_add_epi8(_mm_add_epi8(_mm_add_epi8(x4, x4), x4), x);
        let bound = _mm_set1_epi8(114);
        _mm_cmpgt_epi8(_mm_add_epi8(x13, bound), bound)
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let round = _mm256_set1_epi16(242);
        // floor(x / 243) == mulhi(x, 34522) >> 7 for every x = q * 256 + 242 with q < 243.
        let magic = _mm256_set1_epi16(34522u16 as i16);
        let mut bad = _mm256_setzero_si256();
        let blocks = codes.len() / BLOCK;
        for b in 0..blocks {
            // SAFETY: block b's 160 codes and 32 bytes are within bounds.
            unsafe {
                let src = codes.as_ptr().add(b * BLOCK);
                let mut q = _mm256_setzero_si256();
                for n in 0..5 {
                    let d = _mm256_add_epi8(_mm256_loadu_si256(src.add(32 * n).cast()), one);
                    bad = _mm256_or_si256(bad, _mm256_xor_si256(_mm256_max_epu8(d, two), two));
                    // q * 3 + d stays below 243 for valid digits; invalid ones are flagged.
                    q = _mm256_add_epi8(_mm256_add_epi8(_mm256_add_epi8(q, q), q), d);
                }
                let encode = |half: __m128i| {
                    let x =
                        _mm256_add_epi16(_mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(half)), round);
                    _mm256_srli_epi16::<7>(_mm256_mulhi_epu16(x, magic))
                };
                let lo = encode(_mm256_castsi256_si128(q));
                let hi = encode(_mm256_extracti128_si256::<1>(q));
                _mm256_storeu_si256(out.as_mut_ptr().add(b * BLOCK_BYTES).cast(), narrow(lo, hi));
            }
        }
        let (codes, out) = (&codes[blocks * BLOCK..], &mut out[blocks * BLOCK_BYTES..]);
        let tail = if codes.len() == HALF {
            // SAFETY: the features are this function's own.
            unsafe { pack_half(codes, out) }
        } else {
            scalar::pack(codes, out)
        };
        tail && _mm256_testz_si256(bad, bad) == 1
    }

    /// Values of a half block (16 bytes), the last block of GGUF's TQ1_0 code bytes.
    const HALF: usize = BLOCK / 2;

    /// A block of 80 values: 16 bytes, byte `m` holding values `m + 16 n`.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn pack_half(codes: &[i8], out: &mut [u8]) -> bool {
        assert!(codes.len() == HALF && out.len() == HALF / 5, "a half block");
        let one = _mm_set1_epi8(1);
        let two = _mm_set1_epi8(2);
        let mut bad = _mm_setzero_si128();
        let mut q = _mm_setzero_si128();
        for n in 0..5 {
            // SAFETY: 16 codes at 16 n, within the 80 checked above.
            let c = unsafe { _mm_loadu_si128(codes.as_ptr().add(16 * n).cast()) };
            let d = _mm_add_epi8(c, one);
            bad = _mm_or_si128(bad, _mm_xor_si128(_mm_max_epu8(d, two), two));
            q = _mm_add_epi8(_mm_add_epi8(_mm_add_epi8(q, q), q), d);
        }
        let x = _mm256_add_epi16(
            _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(q)),
            _mm256_set1_epi16(242),
        );
        let bytes =
            _mm256_srli_epi16::<7>(_mm256_mulhi_epu16(x, _mm256_set1_epi16(34522u16 as i16)));
        let packed = _mm_packus_epi16(
            _mm256_castsi256_si128(bytes),
            _mm256_extracti128_si256::<1>(bytes),
        );
        // SAFETY: 16 bytes out, checked above.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), packed) };
        _mm_testz_si128(bad, bad) == 1
    }

    /// The inverse of [`pack_half`]; whether every byte is one that codes pack to.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack_half(data: &[u8], codes: &mut [i8]) -> bool {
        assert!(
            codes.len() == HALF && data.len() == HALF / 5,
            "a half block"
        );
        let low_byte = _mm256_set1_epi16(0xFF);
        let one = _mm_set1_epi8(1);
        // SAFETY: 16 bytes in, checked above.
        let bytes = unsafe { _mm_loadu_si128(data.as_ptr().cast()) };
        let bad = invalid_bytes128(bytes);
        let x = _mm256_cvtepu8_epi16(bytes);
        for (n, &p) in POW3.iter().enumerate() {
            let t = _mm256_and_si256(
                _mm256_mullo_epi16(x, _mm256_set1_epi16(i16::from(p))),
                low_byte,
            );
            let digit = _mm256_srli_epi16::<8>(_mm256_add_epi16(_mm256_add_epi16(t, t), t));
            let d = _mm_packus_epi16(
                _mm256_castsi256_si128(digit),
                _mm256_extracti128_si256::<1>(digit),
            );
            // SAFETY: 16 codes at 16 n, within the 80 checked above.
            unsafe {
                _mm_storeu_si128(codes.as_mut_ptr().add(16 * n).cast(), _mm_sub_epi8(d, one));
            };
        }
        _mm_testz_si128(bad, bad) == 1
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let low_byte = _mm256_set1_epi16(0xFF);
        let one = _mm256_set1_epi8(1);
        let mut bad = _mm256_setzero_si256();
        let blocks = codes.len() / BLOCK;
        for b in 0..blocks {
            // SAFETY: block b's 32 bytes and 160 codes are within bounds.
            unsafe {
                let x = _mm256_loadu_si256(data.as_ptr().add(b * BLOCK_BYTES).cast());
                bad = _mm256_or_si256(bad, invalid_bytes(x));
                let lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(x));
                let hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(x));
                let dst = codes.as_mut_ptr().add(b * BLOCK);
                for (n, &p) in POW3.iter().enumerate() {
                    let pow = _mm256_set1_epi16(i16::from(p));
                    let digit = |v: __m256i| {
                        let t = _mm256_and_si256(_mm256_mullo_epi16(v, pow), low_byte);
                        _mm256_srli_epi16::<8>(_mm256_add_epi16(_mm256_add_epi16(t, t), t))
                    };
                    let d = narrow(digit(lo), digit(hi));
                    _mm256_storeu_si256(dst.add(32 * n).cast(), _mm256_sub_epi8(d, one));
                }
            }
        }
        let (data, codes) = (&data[blocks * BLOCK_BYTES..], &mut codes[blocks * BLOCK..]);
        let tail = if codes.len() == HALF {
            // SAFETY: the features are this function's own.
            unsafe { unpack_half(data, codes) }
        } else {
            scalar::unpack(data, codes)
        };
        tail && _mm256_testz_si256(bad, bad) == 1
    }
}
