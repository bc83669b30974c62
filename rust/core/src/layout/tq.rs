//! GGUF's ternary blocks, byte for byte as ggml and gguf-py write them. Rows are cut into
//! blocks of 256 values; each block ends with its scale `d` as a little-endian float16, and a
//! code `c` is stored as the digit `c + 1`.
//!
//! - TQ2_0, 66 bytes: `qs[64]`, `d`. Byte `32 j + m` (`j` in 0..2, `m` in 0..32) holds values
//!   `128 j + m + 32 n` at bits `2n`, `n` = 0..3.
//! - TQ1_0, 54 bytes: `qs[48]`, `qh[4]`, `d`, base 3 with each byte storing
//!   `ceil(q * 256 / 243)` of its digits `q` (most significant first). `qs[m]`, `m` < 32: values
//!   `m + 32 n`, `n` = 0..4 (exactly a `t1` block of 160); `qs[32 + m]`, `m` < 16: values
//!   `160 + m + 16 n` (a `t1` block of 80); `qh[j]`: values `240 + j + 4 n`, `n` = 0..3, then a
//!   fifth digit 0.
//!
//! A TQ1_0 block's `qs` bytes are refused unless [`t1::is_code_byte`], its `qh` bytes unless
//! one of the 81 values some four digits and a fifth digit 0 pack to ([`is_qh_byte`]).

use super::{
    PackedLayout, Tile, block_shape, first_0b11_byte, first_in_blocks, flat_tiles, put_f16_scales,
    read_f16_scales, round_to_f16, t1,
};
use crate::error::Result;
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

/// Values per block.
pub const BLOCK: usize = 256;

/// The two block formats: the same block of 256 values and trailing scale, different codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codes {
    TwoBit,
    Base3,
}

/// A GGUF ternary block layout.
pub struct Blocks {
    name: &'static str,
    description: &'static str,
    gguf_type: u32,
    block_bytes: usize,
    codes: Codes,
}

/// Bytes of a TQ2_0 block.
const TQ2_BLOCK_BYTES: usize = 66;
/// Bytes of a TQ1_0 block.
const TQ1_BLOCK_BYTES: usize = 54;

pub const TQ2_0: Blocks = Blocks {
    name: "tq2_0",
    description: "GGUF's TQ2_0: 256 values in 66 bytes, 2 bits each and a float16 scale; \
                  llama.cpp runs it",
    gguf_type: 35,
    block_bytes: TQ2_BLOCK_BYTES,
    codes: Codes::TwoBit,
};

pub const TQ1_0: Blocks = Blocks {
    name: "tq1_0",
    description: "GGUF's TQ1_0: 256 values in 54 bytes, base 3 and a float16 scale; \
                  llama.cpp runs it",
    gguf_type: 34,
    block_bytes: TQ1_BLOCK_BYTES,
    codes: Codes::Base3,
};

impl Blocks {
    /// Bytes of a block before its scale.
    fn code_bytes(&self) -> usize {
        self.block_bytes - 2
    }
}

impl PackedLayout for Blocks {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn shape_rule(&self) -> &'static str {
        "rows (the last dimension) a multiple of 256 values"
    }

    fn gguf_type(&self) -> Option<u32> {
        Some(self.gguf_type)
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        block_shape(self.name, BLOCK, self.block_bytes, shape)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), BLOCK, self.block_bytes)
    }

    fn block(&self) -> Option<usize> {
        Some(BLOCK)
    }

    fn store_scales(&self, scales: &mut [f32]) {
        round_to_f16(scales);
    }

    fn block_scales(&self, packed: &[u8]) -> Vec<f32> {
        read_f16_scales(packed, self.block_bytes, self.block_bytes - 2)
    }

    fn packed_len(&self, values: usize) -> usize {
        values / BLOCK * self.block_bytes
    }

    unsafe fn pack_codes(&self, level: SimdLevel, _: usize, codes: &[i8], out: &mut [u8]) -> bool {
        match self.codes {
            // The codes of all blocks in one call: a call per block would cost about as much
            // as its packing.
            Codes::TwoBit => dispatch!(
                level,
                scalar::pack_tq2_codes,
                avx2::pack_tq2_codes,
                avx2::pack_tq2_codes,
                (codes, out)
            ),
            Codes::Base3 => dispatch!(
                level,
                scalar::pack_tq1_codes,
                avx2::pack_tq1_codes,
                avx2::pack_tq1_codes,
                (codes, out)
            ),
        }
    }

    unsafe fn unpack_codes(
        &self,
        level: SimdLevel,
        _: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> bool {
        match self.codes {
            Codes::TwoBit => dispatch!(
                level,
                scalar::unpack_tq2_codes,
                avx2::unpack_tq2_codes,
                avx2::unpack_tq2_codes,
                (data, codes)
            ),
            Codes::Base3 => dispatch!(
                level,
                scalar::unpack_tq1_codes,
                avx2::unpack_tq1_codes,
                avx2::unpack_tq1_codes,
                (data, codes)
            ),
        }
    }

    fn first_corrupt_byte(&self, data: &[u8], _: usize) -> Option<usize> {
        let codes = ..self.code_bytes();
        first_in_blocks(data, self.block_bytes, |block| match self.codes {
            Codes::TwoBit => first_0b11_byte(&block[codes]),
            Codes::Base3 => scalar::first_invalid_tq1_byte(&block[codes]),
        })
    }

    fn put_scales(&self, scales: &[f32], out: &mut [u8]) {
        put_f16_scales(scales, out, self.block_bytes, self.code_bytes());
    }
}

/// Whether `byte` is a TQ1_0 `qh` byte, `ceil(3 q * 256 / 243) = ceil(256 q / 81)` for some
/// four digits `q` in 0..=80: as for [`t1::is_code_byte`], iff `(81 b) mod 256 < 81`.
#[must_use]
pub const fn is_qh_byte(byte: u8) -> bool {
    byte.wrapping_mul(81) < 81
}

pub mod scalar {
    use crate::layout::t1;

    /// The codes of whole TQ2_0 blocks; whether every field was valid.
    pub fn unpack_tq2_codes(data: &[u8], codes: &mut [i8]) -> bool {
        data.chunks_exact(super::TQ2_BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(super::BLOCK))
            .fold(true, |valid, (d, c)| {
                let (head, tail) = c.split_at_mut(128);
                valid & unpack_quarters(&d[..32], head) & unpack_quarters(&d[32..64], tail)
            })
    }

    /// The code bytes of whole TQ2_0 blocks (their scales are left alone).
    pub fn pack_tq2_codes(codes: &[i8], out: &mut [u8]) -> bool {
        codes
            .chunks_exact(super::BLOCK)
            .zip(out.chunks_exact_mut(super::TQ2_BLOCK_BYTES))
            .fold(true, |valid, (c, o)| {
                valid
                    & pack_quarters(&c[..128], &mut o[..32])
                    & pack_quarters(&c[128..], &mut o[32..64])
            })
    }

    /// 128 codes to 32 bytes: byte `m` holds codes `m + 32 n` at bits `2n`.
    pub fn pack_quarters(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (m, byte) in out.iter_mut().enumerate() {
            let mut b = 0u8;
            for n in 0..4 {
                let v = codes[m + 32 * n].wrapping_add(1) as u8;
                valid &= v <= 2;
                b |= (v & 0b11) << (2 * n);
            }
            *byte = b;
        }
        valid
    }

    pub fn unpack_quarters(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (m, &byte) in data.iter().enumerate() {
            for n in 0..4 {
                let v = (byte >> (2 * n)) & 0b11;
                valid &= v != 0b11;
                codes[m + 32 * n] = v as i8 - 1;
            }
        }
        valid
    }

    /// The code bytes of whole TQ1_0 blocks (their scales are left alone): the first 240
    /// values are t1 blocks of 160 and 80 (32 and 16 bytes).
    pub fn pack_tq1_codes(codes: &[i8], out: &mut [u8]) -> bool {
        codes
            .chunks_exact(super::BLOCK)
            .zip(out.chunks_exact_mut(super::TQ1_BLOCK_BYTES))
            .fold(true, |valid, (c, o)| {
                valid
                    & t1::scalar::pack(&c[..160], &mut o[..32])
                    & t1::scalar::pack(&c[160..240], &mut o[32..48])
                    & pack_tq1_tail(&c[240..], &mut o[48..52])
            })
    }

    /// The codes of whole TQ1_0 blocks; whether every byte is one that codes pack to.
    pub fn unpack_tq1_codes(data: &[u8], codes: &mut [i8]) -> bool {
        data.chunks_exact(super::TQ1_BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(super::BLOCK))
            .fold(true, |valid, (d, c)| {
                valid
                    & t1::scalar::unpack(&d[..32], &mut c[..160])
                    & t1::scalar::unpack(&d[32..48], &mut c[160..240])
                    & unpack_tq1_tail(&d[48..52], &mut c[240..])
            })
    }

    /// The last 16 values of a TQ1_0 block: byte `j` holds values `j + 4n`, `n` = 0..3, and a
    /// fifth digit 0.
    pub fn pack_tq1_tail(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (j, byte) in out.iter_mut().enumerate() {
            let mut q = 0u32;
            for n in 0..4 {
                let d = codes[j + 4 * n].wrapping_add(1) as u8;
                valid &= d <= 2;
                q = q * 3 + u32::from(d.min(2));
            }
            *byte = (q * 3 * 256).div_ceil(243) as u8;
        }
        valid
    }

    /// Whether every byte is one that codes pack to ([`super::is_qh_byte`]).
    pub fn unpack_tq1_tail(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (j, &byte) in data.iter().enumerate() {
            valid &= super::is_qh_byte(byte);
            for n in 0..4 {
                codes[j + 4 * n] = t1::digit(byte, n) as i8 - 1;
            }
        }
        valid
    }

    /// The offset of the first of a TQ1_0 block's 52 code bytes that no codes pack to.
    pub fn first_invalid_tq1_byte(data: &[u8]) -> Option<usize> {
        let (qs, qh) = data.split_at(48);
        qs.iter().position(|&b| !t1::is_code_byte(b)).or_else(|| {
            qh.iter()
                .position(|&b| !super::is_qh_byte(b))
                .map(|j| 48 + j)
        })
    }
}

/// Also the AVX-512 level's kernel: a half block is one 256-bit register of bytes.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{scalar, t1};

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack_tq2_codes(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (c, o) in codes
            .chunks_exact(super::BLOCK)
            .zip(out.chunks_exact_mut(super::TQ2_BLOCK_BYTES))
        {
            // SAFETY: the processor supports this function's features, which these have.
            unsafe {
                valid &= pack_quarters(&c[..128], &mut o[..32]);
                valid &= pack_quarters(&c[128..], &mut o[32..64]);
            }
        }
        valid
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn pack_quarters(codes: &[i8], out: &mut [u8]) -> bool {
        assert!(codes.len() >= 128 && out.len() >= 32, "a half block");
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        // SAFETY: 128 codes in and 32 bytes out, checked above.
        unsafe {
            let load = |n: usize| {
                _mm256_add_epi8(_mm256_loadu_si256(codes.as_ptr().add(32 * n).cast()), one)
            };
            let (c0, c1, c2, c3) = (load(0), load(1), load(2), load(3));
            let mut bad = _mm256_setzero_si256();
            for c in [c0, c1, c2, c3] {
                bad = _mm256_or_si256(bad, _mm256_xor_si256(_mm256_max_epu8(c, two), two));
            }
            // Values are at most 2 (or flagged), so 16-bit shifts keep each byte's bits in
            // its own byte.
            let byte = _mm256_or_si256(
                _mm256_or_si256(c0, _mm256_slli_epi16::<2>(c1)),
                _mm256_or_si256(_mm256_slli_epi16::<4>(c2), _mm256_slli_epi16::<6>(c3)),
            );
            _mm256_storeu_si256(out.as_mut_ptr().cast(), byte);
            _mm256_testz_si256(bad, bad) == 1
        }
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack_tq2_codes(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (d, c) in data
            .chunks_exact(super::TQ2_BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(super::BLOCK))
        {
            let (head, tail) = c.split_at_mut(128);
            // SAFETY: the processor supports this function's features, which these have.
            unsafe {
                valid &= unpack_quarters(&d[..32], head);
                valid &= unpack_quarters(&d[32..64], tail);
            }
        }
        valid
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    pub unsafe fn unpack_quarters(data: &[u8], codes: &mut [i8]) -> bool {
        assert!(codes.len() >= 128 && data.len() >= 32, "a half block");
        let mask = _mm256_set1_epi8(0b11);
        let one = _mm256_set1_epi8(1);
        // SAFETY: 32 bytes in and 128 codes out, checked above.
        unsafe {
            let x = _mm256_loadu_si256(data.as_ptr().cast());
            let fields = [
                _mm256_and_si256(x, mask),
                _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask),
                _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask),
                _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask),
            ];
            let mut bad = _mm256_setzero_si256();
            for (n, f) in fields.into_iter().enumerate() {
                bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(f, mask));
                let dst = codes.as_mut_ptr().add(32 * n).cast();
                _mm256_storeu_si256(dst, _mm256_sub_epi8(f, one));
            }
            _mm256_testz_si256(bad, bad) == 1
        }
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack_tq1_codes(codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (c, o) in codes
            .chunks_exact(super::BLOCK)
            .zip(out.chunks_exact_mut(super::TQ1_BLOCK_BYTES))
        {
            // SAFETY: the processor supports this function's features, which these have; each
            // t1 block's bytes are a fifth of its values.
            unsafe {
                valid &= t1::avx2::pack(&c[..160], &mut o[..32]);
                valid &= t1::avx2::pack(&c[160..240], &mut o[32..48]);
            }
            valid &= scalar::pack_tq1_tail(&c[240..], &mut o[48..52]);
        }
        valid
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack_tq1_codes(data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (d, c) in data
            .chunks_exact(super::TQ1_BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(super::BLOCK))
        {
            // SAFETY: as in `pack_tq1_codes`.
            unsafe {
                valid &= t1::avx2::unpack(&d[..32], &mut c[..160]);
                valid &= t1::avx2::unpack(&d[32..48], &mut c[160..240]);
            }
            valid &= scalar::unpack_tq1_tail(&d[48..52], &mut c[240..]);
        }
        valid
    }
}
