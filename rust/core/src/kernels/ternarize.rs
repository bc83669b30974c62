//! Ternarization with its error statistics fused in the same pass.
//!
//! With `y = x * inv`, the code is `clamp(round(y), -1, 1)`, which is exactly `+1 if y > 0.5`,
//! `-1 if y < -0.5`, else `0` when ties round to even (a tie at 0.5 rounds to the even 0), and
//! `+1 if y >= 0.5`, `-1 if y <= -0.5`, else `0` when ties round away from zero. The
//! dequantized value is `code * scale`, i.e. `-scale`, `0` or `scale`.

use super::{LANES, Raw, dispatch, sum_lanes};
use crate::dtype::FloatDType;
use crate::method::Ties;
use crate::simd::SimdLevel;
use crate::stats::ErrorStats;

/// Per-lane accumulators of one ternarize call.
#[derive(Debug, Clone)]
pub struct ErrorLanes {
    pub sse: [f64; LANES],
    pub sum_sq: [f64; LANES],
    pub max_abs_error: f32,
    pub positive: u64,
    pub negative: u64,
}

impl Default for ErrorLanes {
    fn default() -> Self {
        Self {
            sse: [0.0; LANES],
            sum_sq: [0.0; LANES],
            max_abs_error: 0.0,
            positive: 0,
            negative: 0,
        }
    }
}

impl ErrorLanes {
    fn finish(&self, numel: usize) -> ErrorStats {
        let numel = numel as u64;
        ErrorStats {
            numel,
            sse: sum_lanes(&self.sse),
            sum_sq: sum_lanes(&self.sum_sq),
            max_abs_error: self.max_abs_error,
            counts: [
                self.negative,
                numel - self.positive - self.negative,
                self.positive,
            ],
        }
    }
}

/// Writes the codes of `x` into `codes` (same length) and returns the error statistics.
#[must_use]
pub fn ternarize(
    level: SimdLevel,
    x: Raw<'_>,
    inv: f32,
    scale: f32,
    ties: Ties,
    codes: &mut [i8],
) -> ErrorStats {
    ternarize_groups(level, x, x.len(), &[(inv, scale)], ties, codes)
}

/// [`ternarize`] of consecutive groups of `group_len` values, group `g` with the quantizer
/// `groups[g] = (inv, scale)`, in one call. With several groups, `group_len` must be a
/// multiple of 16 (so that each group starts a reduction lane anew) and `x` exactly the groups.
///
/// The SIMD versions also pull the `x.len()` values that follow `x` in memory toward the L2
/// cache as they go. The drivers walk a tensor forward one tile per call, so those are the next
/// call's values, and reading them from memory overlaps this call's arithmetic instead of
/// following it.
#[must_use]
pub fn ternarize_groups(
    level: SimdLevel,
    x: Raw<'_>,
    group_len: usize,
    groups: &[(f32, f32)],
    ties: Ties,
    codes: &mut [i8],
) -> ErrorStats {
    assert_eq!(x.len(), codes.len(), "one code per value");
    assert!(
        groups.len() == 1
            || (group_len.is_multiple_of(LANES) && x.len() == groups.len() * group_len),
        "whole groups of a multiple of 16 values"
    );
    let away = ties == Ties::Away;
    // The rounding of ties is a compile-time choice in the SIMD loops.
    macro_rules! by_ties {
        ($avx2:ident, $avx512:ident) => {
            if away {
                dispatch!(
                    level,
                    scalar_groups::<true>,
                    avx2::$avx2::<true>,
                    avx512::$avx512::<true>,
                    (x, group_len, groups, codes)
                )
            } else {
                dispatch!(
                    level,
                    scalar_groups::<false>,
                    avx2::$avx2::<false>,
                    avx512::$avx512::<false>,
                    (x, group_len, groups, codes)
                )
            }
        };
    }
    match x.dtype {
        FloatDType::F32 => by_ties!(ternarize_f32, ternarize_f32),
        FloatDType::BF16 => by_ties!(ternarize_bf16, ternarize_bf16),
        FloatDType::F16 => by_ties!(ternarize_f16, ternarize_f16),
    }
}

/// The scalar reference with the signature of the SIMD versions.
fn scalar_groups<const AWAY: bool>(
    x: Raw<'_>,
    group_len: usize,
    groups: &[(f32, f32)],
    codes: &mut [i8],
) -> ErrorStats {
    scalar::ternarize_groups(x, group_len, groups, AWAY, codes)
}

pub mod scalar {
    use super::{ErrorLanes, ErrorStats, LANES, Raw};
    use crate::kernels::widen::{CHUNK, for_each_chunk};

    /// The reference: element `i` goes to lane `i % 16`.
    pub fn ternarize_into(
        x: &[f32],
        inv: f32,
        scale: f32,
        away: bool,
        codes: &mut [i8],
        acc: &mut ErrorLanes,
    ) {
        for (i, (&v, code)) in x.iter().zip(codes.iter_mut()).enumerate() {
            let y = v * inv;
            let (q, d) = if y > 0.5 || (away && y >= 0.5) {
                (1, scale)
            } else if y < -0.5 || (away && y <= -0.5) {
                (-1, -scale)
            } else {
                (0, 0.0)
            };
            *code = q;
            acc.positive += u64::from(q == 1);
            acc.negative += u64::from(q == -1);
            let e = v - d;
            acc.max_abs_error = acc.max_abs_error.max(e.abs());
            let (e, v) = (f64::from(e), f64::from(v));
            acc.sse[i % LANES] += e * e;
            acc.sum_sq[i % LANES] += v * v;
        }
    }

    pub fn ternarize_raw_into(
        x: Raw<'_>,
        inv: f32,
        scale: f32,
        away: bool,
        codes: &mut [i8],
        acc: &mut ErrorLanes,
    ) {
        let mut chunks = codes.chunks_mut(CHUNK);
        for_each_chunk(x, |values| {
            let c = chunks.next().expect("one code per value");
            ternarize_into(values, inv, scale, away, c, acc);
        });
    }

    #[must_use]
    pub fn ternarize(x: Raw<'_>, inv: f32, scale: f32, away: bool, codes: &mut [i8]) -> ErrorStats {
        ternarize_groups(x, x.len(), &[(inv, scale)], away, codes)
    }

    /// Each group in turn, the lanes carried from one to the next.
    #[must_use]
    pub fn ternarize_groups(
        x: Raw<'_>,
        group_len: usize,
        groups: &[(f32, f32)],
        away: bool,
        codes: &mut [i8],
    ) -> ErrorStats {
        let mut acc = ErrorLanes::default();
        for (g, &(inv, scale)) in groups.iter().enumerate() {
            let end = if g + 1 == groups.len() {
                x.len()
            } else {
                (g + 1) * group_len
            };
            let start = g * group_len;
            ternarize_raw_into(
                x.slice(start..end),
                inv,
                scale,
                away,
                &mut codes[start..end],
                &mut acc,
            );
        }
        acc.finish(x.len())
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{ErrorLanes, ErrorStats, LANES, Raw, scalar};
    use crate::kernels::prefetch_l2;
    use crate::kernels::widen::load_f32x8;

    macro_rules! ternarize {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,fma,f16c,popcnt")]
            pub unsafe fn $name<const AWAY: bool>(
                x: Raw<'_>,
                group_len: usize,
                groups: &[(f32, f32)],
                codes: &mut [i8],
            ) -> ErrorStats {
                let away = AWAY;
                let size = x.dtype.size();
                let half = _mm256_set1_ps(0.5);
                let neg_half = _mm256_set1_ps(-0.5);
                let sign = _mm256_set1_ps(-0.0);
                let mut sse = [_mm256_setzero_pd(); 4];
                let mut sum_sq = [_mm256_setzero_pd(); 4];
                let mut max_e = _mm256_setzero_ps();
                // Codes counted per lane in vectors (a compare's all-ones lane is -1, so
                // subtracting it counts one), emptied into these before they can wrap.
                let (mut positive, mut negative) = (0u64, 0u64);
                let (mut pos_lanes, mut neg_lanes) =
                    (_mm256_setzero_si256(), _mm256_setzero_si256());
                let mut uncounted = 0u32;
                let blocks = x.len() / LANES;
                let per_group = group_len / LANES;
                let next = x.bytes.as_ptr().wrapping_add(x.bytes.len());
                for (g, &(inv, scale)) in groups.iter().enumerate() {
                    let inv_v = _mm256_set1_ps(inv);
                    let scale_v = _mm256_set1_ps(scale);
                    let first = g * per_group;
                    let last = if g + 1 == groups.len() {
                        blocks
                    } else {
                        first + per_group
                    };
                    for b in first..last {
                        prefetch_l2(next.wrapping_add(b * LANES * size));
                        let mut words = [_mm256_setzero_si256(); 2];
                        for h in 0..2 {
                            // SAFETY: values b*16 + h*8 .. + 8 are within `x`.
                            let v = unsafe {
                                load_f32x8!(
                                    $dtype,
                                    x.bytes.as_ptr().add((b * LANES + h * 8) * size)
                                )
                            };
                            let y = _mm256_mul_ps(v, inv_v);
                            let (p, n) = if away {
                                (
                                    _mm256_cmp_ps::<_CMP_GE_OQ>(y, half),
                                    _mm256_cmp_ps::<_CMP_LE_OQ>(y, neg_half),
                                )
                            } else {
                                (
                                    _mm256_cmp_ps::<_CMP_GT_OQ>(y, half),
                                    _mm256_cmp_ps::<_CMP_LT_OQ>(y, neg_half),
                                )
                            };
                            // `v - scale`, `v + scale` (the same as `v - (-scale)`) or `v`;
                            // the sign of a zero error can differ from `v - 0`'s, which
                            // neither its square nor its magnitude sees.
                            let e = _mm256_add_ps(
                                _mm256_sub_ps(v, _mm256_and_ps(p, scale_v)),
                                _mm256_and_ps(n, scale_v),
                            );
                            max_e = _mm256_max_ps(max_e, _mm256_andnot_ps(sign, e));
                            let (p, n) = (_mm256_castps_si256(p), _mm256_castps_si256(n));
                            pos_lanes = _mm256_sub_epi32(pos_lanes, p);
                            neg_lanes = _mm256_sub_epi32(neg_lanes, n);
                            // -1 - 0 for a negative code, 0 - (-1) for a positive one.
                            words[h] = _mm256_sub_epi32(n, p);
                            let (e_lo, e_hi) = (
                                _mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                                _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)),
                            );
                            let (v_lo, v_hi) = (
                                _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)),
                            );
                            // The products of widened float32 are exact, so a fused
                            // multiply-add rounds as the scalar reference's multiply and add.
                            sse[2 * h] = _mm256_fmadd_pd(e_lo, e_lo, sse[2 * h]);
                            sse[2 * h + 1] = _mm256_fmadd_pd(e_hi, e_hi, sse[2 * h + 1]);
                            sum_sq[2 * h] = _mm256_fmadd_pd(v_lo, v_lo, sum_sq[2 * h]);
                            sum_sq[2 * h + 1] = _mm256_fmadd_pd(v_hi, v_hi, sum_sq[2 * h + 1]);
                        }
                        uncounted += 1;
                        if uncounted == u32::MAX / 2 {
                            positive += lanes_total(pos_lanes);
                            negative += lanes_total(neg_lanes);
                            pos_lanes = _mm256_setzero_si256();
                            neg_lanes = _mm256_setzero_si256();
                            uncounted = 0;
                        }
                        // 16 int32 codes -> 16 int8, in order.
                        let packed16 = _mm256_permute4x64_epi64::<0b11_01_10_00>(
                            _mm256_packs_epi32(words[0], words[1]),
                        );
                        let bytes = _mm_packs_epi16(
                            _mm256_castsi256_si128(packed16),
                            _mm256_extracti128_si256::<1>(packed16),
                        );
                        // SAFETY: `codes.len() == x.len()` and `b * 16 + 16 <= x.len()`.
                        unsafe {
                            _mm_storeu_si128(codes.as_mut_ptr().add(b * LANES).cast(), bytes)
                        };
                    }
                }
                positive += lanes_total(pos_lanes);
                negative += lanes_total(neg_lanes);
                let mut acc = ErrorLanes::default();
                for k in 0..4 {
                    // SAFETY: each lane array has 16 slots; k * 4 + 4 <= 16.
                    unsafe {
                        _mm256_storeu_pd(acc.sse.as_mut_ptr().add(4 * k), sse[k]);
                        _mm256_storeu_pd(acc.sum_sq.as_mut_ptr().add(4 * k), sum_sq[k]);
                    }
                }
                let mut maxes = [0f32; 8];
                // SAFETY: `maxes` has 8 slots.
                unsafe { _mm256_storeu_ps(maxes.as_mut_ptr(), max_e) };
                acc.max_abs_error = maxes.iter().fold(0.0, |m, &v| m.max(v));
                acc.positive = positive;
                acc.negative = negative;
                let done = blocks * LANES;
                let &(inv, scale) = groups.last().expect("at least one group");
                scalar::ternarize_raw_into(
                    x.slice(done..x.len()),
                    inv,
                    scale,
                    away,
                    &mut codes[done..],
                    &mut acc,
                );
                acc.finish(x.len())
            }
        };
    }

    /// The sum of 8 unsigned 32-bit counts.
    #[target_feature(enable = "avx2")]
    fn lanes_total(lanes: __m256i) -> u64 {
        let mut counts = [0u32; 8];
        // SAFETY: `counts` has 8 slots.
        unsafe { _mm256_storeu_si256(counts.as_mut_ptr().cast(), lanes) };
        counts.iter().map(|&c| u64::from(c)).sum()
    }

    ternarize!(ternarize_f32, F32);
    ternarize!(ternarize_bf16, BF16);
    ternarize!(ternarize_f16, F16);
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{ErrorLanes, ErrorStats, LANES, Raw, scalar};
    use crate::kernels::prefetch_l2;
    use crate::kernels::widen::load_f32x16;

    macro_rules! ternarize {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c,popcnt,avx512f,avx512bw,avx512vl")]
            pub unsafe fn $name<const AWAY: bool>(
                x: Raw<'_>,
                group_len: usize,
                groups: &[(f32, f32)],
                codes: &mut [i8],
            ) -> ErrorStats {
                let away = AWAY;
                let size = x.dtype.size();
                let half = _mm512_set1_ps(0.5);
                let neg_half = _mm512_set1_ps(-0.5);
                let (zero8, one8, minus8) =
                    (_mm_setzero_si128(), _mm_set1_epi8(1), _mm_set1_epi8(-1));
                let (mut sse_lo, mut sse_hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
                let (mut sq_lo, mut sq_hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
                let mut max_e = _mm512_setzero_ps();
                // Codes counted per lane in vectors, emptied into these before they can wrap.
                let (mut positive, mut negative) = (0u64, 0u64);
                let minus_one = _mm512_set1_epi32(-1);
                let (mut pos_lanes, mut neg_lanes) =
                    (_mm512_setzero_si512(), _mm512_setzero_si512());
                let mut uncounted = 0u32;
                let blocks = x.len() / LANES;
                let per_group = group_len / LANES;
                let next = x.bytes.as_ptr().wrapping_add(x.bytes.len());
                for (g, &(inv, scale)) in groups.iter().enumerate() {
                    let inv_v = _mm512_set1_ps(inv);
                    let scale_v = _mm512_set1_ps(scale);
                    let first = g * per_group;
                    let last = if g + 1 == groups.len() {
                        blocks
                    } else {
                        first + per_group
                    };
                    for b in first..last {
                        prefetch_l2(next.wrapping_add(b * LANES * size));
                        // SAFETY: values b*16 .. b*16+16 are within `x`.
                        let v =
                            unsafe { load_f32x16!($dtype, x.bytes.as_ptr().add(b * LANES * size)) };
                        let y = _mm512_mul_ps(v, inv_v);
                        let (p, n) = if away {
                            (
                                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(y, half),
                                _mm512_cmp_ps_mask::<_CMP_LE_OQ>(y, neg_half),
                            )
                        } else {
                            (
                                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, half),
                                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, neg_half),
                            )
                        };
                        // `v - scale`, `v + scale` (the same as `v - (-scale)`) or `v - 0`.
                        let e =
                            _mm512_mask_add_ps(_mm512_mask_sub_ps(v, p, v, scale_v), n, v, scale_v);
                        max_e = _mm512_max_ps(max_e, _mm512_abs_ps(e));
                        pos_lanes = _mm512_mask_sub_epi32(pos_lanes, p, pos_lanes, minus_one);
                        neg_lanes = _mm512_mask_sub_epi32(neg_lanes, n, neg_lanes, minus_one);
                        uncounted += 1;
                        if uncounted == u32::MAX {
                            positive += lanes_total(pos_lanes);
                            negative += lanes_total(neg_lanes);
                            pos_lanes = _mm512_setzero_si512();
                            neg_lanes = _mm512_setzero_si512();
                            uncounted = 0;
                        }
                        let c = _mm_mask_blend_epi8(n, _mm_mask_blend_epi8(p, zero8, one8), minus8);
                        // SAFETY: `codes.len() == x.len()` and `b * 16 + 16 <= x.len()`.
                        unsafe { _mm_storeu_si128(codes.as_mut_ptr().add(b * LANES).cast(), c) };
                        let upper = |w: __m512| {
                            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                                _mm512_castps_pd(w),
                            )))
                        };
                        let e_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
                        let e_hi = upper(e);
                        let v_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
                        let v_hi = upper(v);
                        // The products of widened float32 are exact, so a fused multiply-add
                        // rounds as a multiply then an add would.
                        sse_lo = _mm512_fmadd_pd(e_lo, e_lo, sse_lo);
                        sse_hi = _mm512_fmadd_pd(e_hi, e_hi, sse_hi);
                        sq_lo = _mm512_fmadd_pd(v_lo, v_lo, sq_lo);
                        sq_hi = _mm512_fmadd_pd(v_hi, v_hi, sq_hi);
                    }
                }
                positive += lanes_total(pos_lanes);
                negative += lanes_total(neg_lanes);
                let mut acc = ErrorLanes::default();
                // SAFETY: each lane array has 16 slots, each store writes 8.
                unsafe {
                    _mm512_storeu_pd(acc.sse.as_mut_ptr(), sse_lo);
                    _mm512_storeu_pd(acc.sse.as_mut_ptr().add(8), sse_hi);
                    _mm512_storeu_pd(acc.sum_sq.as_mut_ptr(), sq_lo);
                    _mm512_storeu_pd(acc.sum_sq.as_mut_ptr().add(8), sq_hi);
                }
                acc.max_abs_error = _mm512_reduce_max_ps(max_e);
                acc.positive = positive;
                acc.negative = negative;
                let done = blocks * LANES;
                let &(inv, scale) = groups.last().expect("at least one group");
                scalar::ternarize_raw_into(
                    x.slice(done..x.len()),
                    inv,
                    scale,
                    away,
                    &mut codes[done..],
                    &mut acc,
                );
                acc.finish(x.len())
            }
        };
    }

    ternarize!(ternarize_f32, F32);
    ternarize!(ternarize_bf16, BF16);
    ternarize!(ternarize_f16, F16);

    /// The sum of 16 unsigned 32-bit counts.
    #[target_feature(enable = "avx512f")]
    fn lanes_total(lanes: __m512i) -> u64 {
        let mut counts = [0u32; 16];
        // SAFETY: `counts` has 16 slots.
        unsafe { _mm512_storeu_si512(counts.as_mut_ptr().cast(), lanes) };
        counts.iter().map(|&c| u64::from(c)).sum()
    }
}
