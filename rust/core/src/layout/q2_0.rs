//! GGUF's Q2_0 (GGML type 42), byte for byte as ggml's `quantize_row_q2_0_ref` writes it.
//! Rows are cut into blocks of 64 values, 18 bytes each: the scale `d` FIRST, as a
//! little-endian float16, then `qs[16]`, where byte `m` holds values `4m..4m+3`, the first in
//! the lowest bit pair, code `c` stored as `c + 1`. The 16 `qs` bytes are exactly the [`i2`]
//! layout of the block's 64 values, so they are packed and unpacked by i2's kernels.
//!
//! llama.cpp reads the field `0b11` as +2, but no ternary code packs to it: unpack refuses it
//! as corrupt data, as it does in ryzq's other 2-bit layouts.

use super::{
    PackedLayout, Tile, block_shape, first_0b11_byte, first_in_blocks, flat_tiles, i2,
    put_f16_scales, read_f16_scales, round_to_f16,
};
use crate::error::Result;
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

/// Values per block.
pub const BLOCK: usize = 64;
/// Bytes per block: `d` (2) and `qs` (16).
pub const BLOCK_BYTES: usize = 18;
/// Offset of `qs` in a block.
const QS: usize = 2;

pub struct Q2_0;

impl PackedLayout for Q2_0 {
    fn name(&self) -> &'static str {
        "q2_0"
    }

    fn description(&self) -> &'static str {
        "GGUF's Q2_0: 64 values in 18 bytes, a float16 scale first and 2 bits each; \
         llama.cpp runs it on CPU, CUDA, Metal and Vulkan"
    }

    fn shape_rule(&self) -> &'static str {
        "rows (the last dimension) a multiple of 64 values"
    }

    fn gguf_type(&self) -> Option<u32> {
        Some(42)
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        block_shape(self.name(), BLOCK, BLOCK_BYTES, shape)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        flat_tiles(shape.iter().product(), BLOCK, BLOCK_BYTES)
    }

    fn block(&self) -> Option<usize> {
        Some(BLOCK)
    }

    fn store_scales(&self, scales: &mut [f32]) {
        round_to_f16(scales);
    }

    fn block_scales(&self, packed: &[u8]) -> Vec<f32> {
        read_f16_scales(packed, BLOCK_BYTES, 0)
    }

    fn packed_len(&self, values: usize) -> usize {
        values / BLOCK * BLOCK_BYTES
    }

    unsafe fn pack_codes(&self, level: SimdLevel, _: usize, codes: &[i8], out: &mut [u8]) -> bool {
        // The codes of all blocks in one call: a call per block would cost about as much as
        // its packing.
        dispatch!(
            level,
            scalar::pack_blocks,
            avx2::pack_blocks,
            avx2::pack_blocks,
            (codes, out)
        )
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
            scalar::unpack_blocks,
            avx2::unpack_blocks,
            avx2::unpack_blocks,
            (data, codes)
        )
    }

    // The first `qs` byte holding a 0b11 field.
    fn first_corrupt_byte(&self, data: &[u8], _: usize) -> Option<usize> {
        first_in_blocks(data, BLOCK_BYTES, |block| {
            first_0b11_byte(&block[QS..]).map(|m| QS + m)
        })
    }

    fn put_scales(&self, scales: &[f32], out: &mut [u8]) {
        put_f16_scales(scales, out, BLOCK_BYTES, 0);
    }
}

pub mod scalar {
    use super::{BLOCK, BLOCK_BYTES, QS, i2};

    /// The `qs` bytes of whole blocks (their scales are left alone); whether every code was
    /// -1, 0 or 1.
    pub fn pack_blocks(codes: &[i8], out: &mut [u8]) -> bool {
        codes
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(BLOCK_BYTES))
            .fold(true, |valid, (c, o)| {
                valid & i2::scalar::pack(c, &mut o[QS..])
            })
    }

    /// The codes of whole blocks; whether no field was 0b11.
    pub fn unpack_blocks(data: &[u8], codes: &mut [i8]) -> bool {
        data.chunks_exact(BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(BLOCK))
            .fold(true, |valid, (d, c)| {
                valid & i2::scalar::unpack(&d[QS..], c)
            })
    }
}

/// Also the AVX-512 level's kernel, as for i2. i2's kernels work on 32 codes to 8 bytes
/// (pack) and 32 bytes to 128 codes (unpack), so a block is two packing steps, and two blocks'
/// `qs` fill one unpacking register: i2's whole-slice kernels, called per block, would leave
/// its 16 bytes to their scalar tail.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{BLOCK, BLOCK_BYTES, QS, i2};

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack_blocks(codes: &[i8], out: &mut [u8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        for (c, o) in codes
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(BLOCK_BYTES))
        {
            // SAFETY: 64 codes in and 16 bytes out after the scale, within the block.
            unsafe {
                let lo = i2::avx2::pack_32(c.as_ptr(), &mut bad);
                let hi = i2::avx2::pack_32(c.as_ptr().add(32), &mut bad);
                let qs = o[QS..].as_mut_ptr().cast();
                _mm_storeu_si128(qs, _mm_unpacklo_epi64(lo, hi));
            }
        }
        _mm256_testz_si256(bad, bad) == 1
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack_blocks(data: &[u8], codes: &mut [i8]) -> bool {
        let mut bad = _mm256_setzero_si256();
        let blocks = codes.len() / BLOCK;
        assert!(data.len() >= blocks * BLOCK_BYTES, "whole blocks");
        for pair in 0..blocks / 2 {
            // SAFETY: the `qs` of blocks 2 pair and 2 pair + 1 in, their 128 codes out, within
            // bounds (checked above).
            unsafe {
                let first = data.as_ptr().add(2 * pair * BLOCK_BYTES + QS);
                let x = _mm256_loadu2_m128i(first.add(BLOCK_BYTES).cast(), first.cast());
                i2::avx2::unpack_32(x, codes.as_mut_ptr().add(2 * pair * BLOCK), &mut bad);
            }
        }
        let mut valid = true;
        if blocks % 2 == 1 {
            let last = (blocks - 1) * BLOCK_BYTES;
            let qs = &data[last + QS..last + BLOCK_BYTES];
            valid = i2::scalar::unpack(qs, &mut codes[(blocks - 1) * BLOCK..]);
        }
        valid && _mm256_testz_si256(bad, bad) == 1
    }
}
