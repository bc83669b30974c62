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

use super::{PackedLayout, Tile, flat_tiles, require_nonempty, t1};
use crate::error::{Error, Result};
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

/// Values per block.
pub const BLOCK: usize = 256;

fn block_shape(name: &str, block_bytes: usize, shape: &[usize]) -> Result<Vec<usize>> {
    require_nonempty(shape)?;
    let last = *shape.last().expect("at least one dimension");
    if !last.is_multiple_of(BLOCK) {
        return Err(Error::Shape(format!(
            "the {name} layout packs rows in blocks of {BLOCK} values, but the rows of shape \
             {shape:?} hold {last}"
        )));
    }
    let mut packed = shape.to_vec();
    *packed.last_mut().expect("at least one dimension") = last / BLOCK * block_bytes;
    Ok(packed)
}

fn write_scale(scale: f32, out: &mut [u8]) {
    out.copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
}

/// The float16 `d` that ends every block.
fn read_scales(packed: &[u8], block_bytes: usize) -> Vec<f32> {
    packed
        .chunks_exact(block_bytes)
        .map(|b| half::f16::from_le_bytes([b[block_bytes - 2], b[block_bytes - 1]]).to_f32())
        .collect()
}

pub struct Tq2_0;
pub struct Tq1_0;

const TQ2_BYTES: usize = 66;
const TQ1_BYTES: usize = 54;

impl PackedLayout for Tq2_0 {
    fn name(&self) -> &'static str {
        "tq2_0"
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        block_shape(self.name(), TQ2_BYTES, shape)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), BLOCK, TQ2_BYTES)
    }

    fn block(&self) -> Option<usize> {
        Some(BLOCK)
    }

    fn stored_scale(&self, scale: f32) -> f32 {
        half::f16::from_f32(scale).to_f32()
    }

    fn block_scales(&self, packed: &[u8]) -> Vec<f32> {
        read_scales(packed, TQ2_BYTES)
    }

    fn pack(
        &self,
        level: SimdLevel,
        _part: usize,
        codes: &[i8],
        scales: &[f32],
        out: &mut [u8],
    ) -> bool {
        assert_eq!(codes.len(), scales.len() * BLOCK, "one scale per block");
        let mut valid = true;
        for ((c, &d), o) in codes
            .chunks_exact(BLOCK)
            .zip(scales)
            .zip(out.chunks_exact_mut(TQ2_BYTES))
        {
            for (half, q) in c.chunks_exact(128).zip(o[..64].chunks_exact_mut(32)) {
                valid &= dispatch!(
                    level,
                    scalar::pack_quarters,
                    avx2::pack_quarters,
                    avx2::pack_quarters,
                    (half, q)
                );
            }
            write_scale(d, &mut o[64..]);
        }
        valid
    }

    fn unpack(
        &self,
        level: SimdLevel,
        _part: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> std::result::Result<(), usize> {
        for (b, (o, c)) in data
            .chunks_exact(TQ2_BYTES)
            .zip(codes.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            for (q, half) in o[..64].chunks_exact(32).zip(c.chunks_exact_mut(128)) {
                let valid = dispatch!(
                    level,
                    scalar::unpack_quarters,
                    avx2::unpack_quarters,
                    avx2::unpack_quarters,
                    (q, half)
                );
                if !valid {
                    return Err(b * TQ2_BYTES + super::first_corrupt_byte(&o[..64]));
                }
            }
        }
        Ok(())
    }
}

impl PackedLayout for Tq1_0 {
    fn name(&self) -> &'static str {
        "tq1_0"
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        block_shape(self.name(), TQ1_BYTES, shape)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), BLOCK, TQ1_BYTES)
    }

    fn block(&self) -> Option<usize> {
        Some(BLOCK)
    }

    fn stored_scale(&self, scale: f32) -> f32 {
        half::f16::from_f32(scale).to_f32()
    }

    fn block_scales(&self, packed: &[u8]) -> Vec<f32> {
        read_scales(packed, TQ1_BYTES)
    }

    fn pack(
        &self,
        level: SimdLevel,
        _part: usize,
        codes: &[i8],
        scales: &[f32],
        out: &mut [u8],
    ) -> bool {
        assert_eq!(codes.len(), scales.len() * BLOCK, "one scale per block");
        let mut valid = true;
        for ((c, &d), o) in codes
            .chunks_exact(BLOCK)
            .zip(scales)
            .zip(out.chunks_exact_mut(TQ1_BYTES))
        {
            // The first 240 values are t1 blocks of 160 and 80: 32 and 16 bytes.
            valid &= t1::T1.pack(level, 0, &c[..160], &[], &mut o[..32]);
            valid &= t1::T1.pack(level, 0, &c[160..240], &[], &mut o[32..48]);
            valid &= scalar::pack_tq1_tail(&c[240..], &mut o[48..52]);
            write_scale(d, &mut o[52..]);
        }
        valid
    }

    fn unpack(
        &self,
        level: SimdLevel,
        _part: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> std::result::Result<(), usize> {
        for (o, c) in data
            .chunks_exact(TQ1_BYTES)
            .zip(codes.chunks_exact_mut(BLOCK))
        {
            t1::T1.unpack(level, 0, &o[..32], &mut c[..160])?;
            t1::T1.unpack(level, 0, &o[32..48], &mut c[160..240])?;
            scalar::unpack_tq1_tail(&o[48..52], &mut c[240..]);
        }
        Ok(())
    }
}

pub mod scalar {
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

    pub fn unpack_tq1_tail(data: &[u8], codes: &mut [i8]) {
        for (j, &byte) in data.iter().enumerate() {
            for (n, p) in [1u8, 3, 9, 27].into_iter().enumerate() {
                let digit = (u16::from(byte.wrapping_mul(p)) * 3) >> 8;
                codes[j + 4 * n] = digit as i8 - 1;
            }
        }
    }
}

/// Also the AVX-512 level's kernel: a half block is one 256-bit register of bytes.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
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
}
