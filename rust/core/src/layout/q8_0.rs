//! GGUF's Q8_0 (GGML type 8) holding ternary codes. Rows are cut into blocks of 32 values,
//! 34 bytes each: the scale `d` first, as a little-endian float16, then `qs[32]`, one int8 per
//! value, which readers multiply by `d`.
//!
//! ggml's own quantizer would store `d = max|x| / 127` and codes of ±127; this layout stores
//! the codes themselves (-1, 0, 1) and `d` the ternary scale, so a block dequantizes to exactly
//! `code * f16(scale)`, as TQ1_0, TQ2_0 and Q2_0 do, where ±127 codes over `f16(scale / 127)`
//! lose up to 2% of the scale once `scale / 127` is a float16 subnormal. Every GGUF runtime
//! runs Q8_0, and its blocks of 32 take rows that TQ's 256 and Q2_0's 64 do not.
//!
//! An int8 that is not -1, 0 or 1 is refused as corrupt data: it holds no ternary code.

use super::{
    PackedLayout, Tile, block_shape, first_in_blocks, flat_tiles, put_f16_scales, read_f16_scales,
    round_to_f16,
};
use crate::error::Result;
use crate::simd::SimdLevel;

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: `d` (2) and `qs` (32).
pub const BLOCK_BYTES: usize = 34;
/// Offset of `qs` in a block.
const QS: usize = 2;

pub struct Q8_0;

impl PackedLayout for Q8_0 {
    fn name(&self) -> &'static str {
        "q8_0"
    }

    fn description(&self) -> &'static str {
        "GGUF's Q8_0 holding the ternary codes exactly: 32 values in 34 bytes, a float16 \
         scale first and one byte each; every GGUF runtime runs it"
    }

    fn shape_rule(&self) -> &'static str {
        "rows (the last dimension) a multiple of 32 values"
    }

    fn gguf_type(&self) -> Option<u32> {
        Some(8)
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

    // A byte copy, which the compiler vectorizes at every level: no kernel of its own.
    unsafe fn pack_codes(&self, _: SimdLevel, _: usize, codes: &[i8], out: &mut [u8]) -> bool {
        codes
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(BLOCK_BYTES))
            .fold(true, |valid, (c, o)| {
                let mut block_valid = true;
                for (&code, q) in c.iter().zip(&mut o[QS..]) {
                    block_valid &= (-1..=1).contains(&code);
                    *q = code as u8;
                }
                valid & block_valid
            })
    }

    unsafe fn unpack_codes(&self, _: SimdLevel, _: usize, data: &[u8], codes: &mut [i8]) -> bool {
        data.chunks_exact(BLOCK_BYTES)
            .zip(codes.chunks_exact_mut(BLOCK))
            .fold(true, |valid, (d, c)| {
                let mut block_valid = true;
                for (&q, code) in d[QS..].iter().zip(c) {
                    *code = q as i8;
                    block_valid &= (-1..=1).contains(code);
                }
                valid & block_valid
            })
    }

    fn first_corrupt_byte(&self, data: &[u8], _: usize) -> Option<usize> {
        first_in_blocks(data, BLOCK_BYTES, |block| {
            block[QS..]
                .iter()
                .position(|&q| !(-1..=1).contains(&(q as i8)))
                .map(|m| QS + m)
        })
    }

    fn put_scales(&self, scales: &[f32], out: &mut [u8]) {
        put_f16_scales(scales, out, BLOCK_BYTES, 0);
    }
}
