//! transformers' BitNet layout: a `[out, in]` tensor packs to `[out / 4, in]` bytes where, with
//! `R = out / 4`, `byte[r, k] = c[r, k] | c[R + r, k] << 2 | c[2R + r, k] << 4 | c[3R + r, k] << 6`
//! and `c = code + 1`. A 1-D tensor of length `out` is treated as `[out, 1]`.
//!
//! Each byte gathers four rows a quarter of the tensor apart. Reading those four places at once
//! is slow (the streams conflict in the caches and in memory), so the bytes are packed in four
//! parts: part `k` reads the rows `kR .. (k+1)R` in order and adds its bits `2k, 2k+1` to
//! every byte. The input is then read once from start to end, like the other layouts, while
//! the packed bytes (a sixteenth of a float32 tensor) stay in cache between parts.

use super::{PackedLayout, TILE_VALUES, Tile, require_nonempty};
use crate::error::{Error, Result};
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

pub struct Bitnet;

/// Rows per byte row, and the number of parts.
const STRIPES: usize = 4;

/// `(out, in)` of a 1-D or 2-D shape.
fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape {
        [out] => (*out, 1),
        [out, cols] => (*out, *cols),
        _ => unreachable!("checked by packed_shape"),
    }
}

impl PackedLayout for Bitnet {
    fn name(&self) -> &'static str {
        "bitnet"
    }

    fn description(&self) -> &'static str {
        "transformers' BitNet layout: 2 bits per value striped along dim 0, with a \
         weight_scale tensor; transformers loads it"
    }

    fn shape_rule(&self) -> &'static str {
        "1-D or 2-D, dim 0 a multiple of 4"
    }

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        require_nonempty(shape)?;
        if shape.len() > 2 {
            return Err(Error::Shape(format!(
                "the bitnet layout packs 1-D or 2-D tensors, got shape {shape:?}; \
                 use layout i2 or t1 for other shapes"
            )));
        }
        if !shape[0].is_multiple_of(STRIPES) {
            return Err(Error::Shape(format!(
                "the bitnet layout needs dim 0 to be a multiple of 4 (it packs 4 rows per byte \
                 row), got shape {shape:?}; use layout i2 or t1 for this tensor"
            )));
        }
        let mut packed = shape.to_vec();
        packed[0] /= STRIPES;
        Ok(packed)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        let (out, cols) = rows_cols(shape);
        let stripe = out / STRIPES;
        let mut tiles = Vec::new();
        for part in 0..STRIPES {
            let first = part * stripe * cols;
            if cols <= TILE_VALUES {
                // Whole rows, several per tile.
                let rows = (TILE_VALUES / cols).max(1);
                for r0 in (0..stripe).step_by(rows) {
                    let r1 = (r0 + rows).min(stripe);
                    tiles.push(Tile {
                        values: first + r0 * cols..first + r1 * cols,
                        packed: r0 * cols..r1 * cols,
                        part,
                    });
                }
            } else {
                for r in 0..stripe {
                    for c0 in (0..cols).step_by(TILE_VALUES) {
                        let c1 = (c0 + TILE_VALUES).min(cols);
                        tiles.push(Tile {
                            values: first + r * cols + c0..first + r * cols + c1,
                            packed: r * cols + c0..r * cols + c1,
                            part,
                        });
                    }
                }
            }
        }
        tiles
    }

    fn packed_len(&self, values: usize) -> usize {
        values // one code per byte and part
    }

    unsafe fn pack_codes(
        &self,
        level: SimdLevel,
        part: usize,
        codes: &[i8],
        out: &mut [u8],
    ) -> bool {
        assert!(part < STRIPES, "four parts");
        dispatch!(
            level,
            scalar::pack,
            avx2::pack,
            avx2::pack,
            (part, codes, out)
        )
    }

    unsafe fn unpack_codes(
        &self,
        level: SimdLevel,
        part: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> bool {
        assert!(part < STRIPES, "four parts");
        dispatch!(
            level,
            scalar::unpack,
            avx2::unpack,
            avx2::unpack,
            (part, data, codes)
        )
    }
}

/// Part `part` of a byte is its bits `2 part` and `2 part + 1`.
pub mod scalar {
    pub fn pack(part: usize, codes: &[i8], out: &mut [u8]) -> bool {
        let mut valid = true;
        for (byte, &c) in out.iter_mut().zip(codes) {
            let v = c.wrapping_add(1) as u8;
            valid &= v <= 2;
            *byte |= (v & 0b11) << (2 * part);
        }
        valid
    }

    pub fn unpack(part: usize, data: &[u8], codes: &mut [i8]) -> bool {
        let mut valid = true;
        for (&byte, c) in data.iter().zip(codes) {
            let v = (byte >> (2 * part)) & 0b11;
            valid &= v != 0b11;
            *c = v as i8 - 1;
        }
        valid
    }
}

/// Also the AVX-512 level's kernel: it is bound by memory, not by register width.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::scalar;

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn pack(part: usize, codes: &[i8], out: &mut [u8]) -> bool {
        let shift = _mm_cvtsi32_si128(2 * part as i32);
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let mut bad = _mm256_setzero_si256();
        let blocks = out.len() / 32;
        for b in 0..blocks {
            // SAFETY: codes and bytes b*32 .. b*32+32 are within bounds.
            unsafe {
                let c = _mm256_add_epi8(_mm256_loadu_si256(codes.as_ptr().add(b * 32).cast()), one);
                bad = _mm256_or_si256(bad, _mm256_xor_si256(_mm256_max_epu8(c, two), two));
                // Values are at most 2 (or flagged), so a 16-bit shift keeps each byte's bits
                // in its own byte.
                let dst = out.as_mut_ptr().add(b * 32).cast::<__m256i>();
                let byte = _mm256_or_si256(_mm256_loadu_si256(dst), _mm256_sll_epi16(c, shift));
                _mm256_storeu_si256(dst, byte);
            }
        }
        let done = blocks * 32;
        let tail = scalar::pack(part, &codes[done..], &mut out[done..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack(part: usize, data: &[u8], codes: &mut [i8]) -> bool {
        let shift = _mm_cvtsi32_si128(2 * part as i32);
        let mask = _mm256_set1_epi8(0b11);
        let one = _mm256_set1_epi8(1);
        let mut bad = _mm256_setzero_si256();
        let blocks = data.len() / 32;
        for b in 0..blocks {
            // SAFETY: bytes and codes b*32 .. b*32+32 are within bounds.
            unsafe {
                let x = _mm256_loadu_si256(data.as_ptr().add(b * 32).cast());
                let f = _mm256_and_si256(_mm256_srl_epi16(x, shift), mask);
                bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(f, mask));
                _mm256_storeu_si256(
                    codes.as_mut_ptr().add(b * 32).cast(),
                    _mm256_sub_epi8(f, one),
                );
            }
        }
        let done = blocks * 32;
        let tail = scalar::unpack(part, &data[done..], &mut codes[done..]);
        tail && _mm256_testz_si256(bad, bad) == 1
    }
}
