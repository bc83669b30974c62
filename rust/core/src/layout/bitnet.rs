//! transformers' BitNet layout: a `[out, in]` tensor packs to `[out / 4, in]` bytes where, with
//! `R = out / 4`, `byte[r, k] = c[r, k] | c[R + r, k] << 2 | c[2R + r, k] << 4 | c[3R + r, k] << 6`
//! and `c = code + 1`. A 1-D tensor of length `out` is treated as `[out, 1]`.

use super::{PackedLayout, TILE_VALUES, Tile, require_nonempty};
use crate::error::{Error, Result};
use crate::kernels::dispatch;
use crate::simd::SimdLevel;

pub struct Bitnet;

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

    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        require_nonempty(shape)?;
        if shape.len() > 2 {
            return Err(Error::Shape(format!(
                "the bitnet layout packs 1-D or 2-D tensors, got shape {shape:?}; \
                 use layout i2 or t1 for other shapes"
            )));
        }
        if !shape[0].is_multiple_of(4) {
            return Err(Error::Shape(format!(
                "the bitnet layout needs dim 0 to be a multiple of 4 (it packs 4 rows per byte \
                 row), got shape {shape:?}; use layout i2 or t1 for this tensor"
            )));
        }
        let mut packed = shape.to_vec();
        packed[0] /= 4;
        Ok(packed)
    }

    fn tiles(&self, shape: &[usize]) -> Vec<Tile> {
        let (out, cols) = rows_cols(shape);
        let stripe = out / 4;
        let mut tiles = Vec::new();
        if 4 * cols <= TILE_VALUES {
            // Several whole byte rows per tile: each stripe's rows are contiguous.
            let rows = (TILE_VALUES / (4 * cols)).max(1);
            for r0 in (0..stripe).step_by(rows) {
                let r1 = (r0 + rows).min(stripe);
                tiles.push(Tile {
                    segments: (0..4)
                        .map(|k| (k * stripe + r0) * cols..(k * stripe + r1) * cols)
                        .collect(),
                    packed: r0 * cols..r1 * cols,
                });
            }
        } else {
            let width = TILE_VALUES / 4;
            for r in 0..stripe {
                for c0 in (0..cols).step_by(width) {
                    let c1 = (c0 + width).min(cols);
                    tiles.push(Tile {
                        segments: (0..4)
                            .map(|k| (k * stripe + r) * cols + c0..(k * stripe + r) * cols + c1)
                            .collect(),
                        packed: r * cols + c0..r * cols + c1,
                    });
                }
            }
        }
        tiles
    }

    fn pack(&self, level: SimdLevel, codes: &[i8], out: &mut [u8]) -> bool {
        assert_eq!(codes.len(), 4 * out.len(), "four stripes of codes per byte");
        dispatch!(level, scalar::pack, avx2::pack, avx2::pack, (codes, out))
    }

    fn unpack(&self, level: SimdLevel, data: &[u8], codes: &mut [i8]) -> bool {
        assert_eq!(
            codes.len(),
            4 * data.len(),
            "four stripes of codes per byte"
        );
        dispatch!(
            level,
            scalar::unpack,
            avx2::unpack,
            avx2::unpack,
            (data, codes)
        )
    }
}

/// `codes` holds four stripes of `out.len()` codes end to end.
pub mod scalar {
    pub fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let n = out.len();
        let mut valid = true;
        for (j, byte) in out.iter_mut().enumerate() {
            let mut b = 0u8;
            for k in 0..4 {
                let v = codes[k * n + j].wrapping_add(1) as u8;
                valid &= v <= 2;
                b |= (v & 0b11) << (2 * k);
            }
            *byte = b;
        }
        valid
    }

    pub fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let n = data.len();
        let mut valid = true;
        for (j, &byte) in data.iter().enumerate() {
            for k in 0..4 {
                let v = (byte >> (2 * k)) & 0b11;
                valid &= v != 0b11;
                codes[k * n + j] = v as i8 - 1;
            }
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
    pub unsafe fn pack(codes: &[i8], out: &mut [u8]) -> bool {
        let n = out.len();
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let mut bad = _mm256_setzero_si256();
        let blocks = n / 32;
        for b in 0..blocks {
            // SAFETY: stripe k's codes b*32..b*32+32 lie in codes[k*n..(k+1)*n]; 32 bytes out.
            unsafe {
                let load = |k: usize| {
                    let c = _mm256_loadu_si256(codes.as_ptr().add(k * n + b * 32).cast());
                    _mm256_add_epi8(c, one)
                };
                let (c0, c1, c2, c3) = (load(0), load(1), load(2), load(3));
                for c in [c0, c1, c2, c3] {
                    bad = _mm256_or_si256(bad, _mm256_xor_si256(_mm256_max_epu8(c, two), two));
                }
                // Values are at most 2 (or flagged), so 16-bit shifts keep each byte's bits in
                // its own byte.
                let byte = _mm256_or_si256(
                    _mm256_or_si256(c0, _mm256_slli_epi16::<2>(c1)),
                    _mm256_or_si256(_mm256_slli_epi16::<4>(c2), _mm256_slli_epi16::<6>(c3)),
                );
                _mm256_storeu_si256(out.as_mut_ptr().add(b * 32).cast(), byte);
            }
        }
        let done = blocks * 32;
        let mut valid = _mm256_testz_si256(bad, bad) == 1;
        // The tail columns of each stripe, through the reference on a gathered copy.
        if done < n {
            let rest = n - done;
            let mut tail = vec![0i8; 4 * rest];
            for k in 0..4 {
                tail[k * rest..(k + 1) * rest].copy_from_slice(&codes[k * n + done..(k + 1) * n]);
            }
            valid &= scalar::pack(&tail, &mut out[done..]);
        }
        valid
    }

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn unpack(data: &[u8], codes: &mut [i8]) -> bool {
        let n = data.len();
        let mask = _mm256_set1_epi8(0b11);
        let one = _mm256_set1_epi8(1);
        let mut bad = _mm256_setzero_si256();
        let blocks = n / 32;
        for b in 0..blocks {
            // SAFETY: 32 bytes in; stripe k's codes b*32..b*32+32 lie in codes[k*n..(k+1)*n].
            unsafe {
                let x = _mm256_loadu_si256(data.as_ptr().add(b * 32).cast());
                let fields = [
                    _mm256_and_si256(x, mask),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(x), mask),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(x), mask),
                ];
                for (k, f) in fields.into_iter().enumerate() {
                    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(f, mask));
                    let dst = codes.as_mut_ptr().add(k * n + b * 32);
                    _mm256_storeu_si256(dst.cast(), _mm256_sub_epi8(f, one));
                }
            }
        }
        let done = blocks * 32;
        let mut valid = _mm256_testz_si256(bad, bad) == 1;
        if done < n {
            let rest = n - done;
            let mut tail = vec![0i8; 4 * rest];
            valid &= scalar::unpack(&data[done..], &mut tail);
            for k in 0..4 {
                codes[k * n + done..(k + 1) * n].copy_from_slice(&tail[k * rest..(k + 1) * rest]);
            }
        }
        valid
    }
}
