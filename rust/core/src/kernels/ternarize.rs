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

/// Values of a call whose squares each lane sums in float32 before adding the sum to its
/// float64 total: 8 per lane. Widening every square to float64 took about half of the
/// kernel's vector instructions; eight float32 additions keep the sums within `(8 + 1) * 2^-24`
/// (relative) of float64 ones, and a window ends at the same value at every level.
pub const WINDOW: usize = 8 * LANES;

/// Per-lane accumulators of one ternarize call. The sums of squares are in units of
/// `factor^2` (see [`square_factor`]) until [`ErrorLanes::finish`].
#[derive(Debug, Clone)]
pub struct ErrorLanes {
    pub sse: [f64; LANES],
    pub sum_sq: [f64; LANES],
    /// The current window's sums, and how many of its values they hold.
    pub window_sse: [f32; LANES],
    pub window_sq: [f32; LANES],
    pub window_len: usize,
    pub max_abs_error: f32,
    pub positive: u64,
    pub negative: u64,
}

impl Default for ErrorLanes {
    fn default() -> Self {
        Self {
            sse: [0.0; LANES],
            sum_sq: [0.0; LANES],
            window_sse: [0.0; LANES],
            window_sq: [0.0; LANES],
            window_len: 0,
            max_abs_error: 0.0,
            positive: 0,
            negative: 0,
        }
    }
}

impl ErrorLanes {
    /// Adds the window's float32 sums to the float64 lanes and starts a new window.
    pub fn flush(&mut self) {
        for l in 0..LANES {
            self.sse[l] += f64::from(self.window_sse[l]);
            self.sum_sq[l] += f64::from(self.window_sq[l]);
        }
        self.window_sse = [0.0; LANES];
        self.window_sq = [0.0; LANES];
        self.window_len = 0;
    }

    /// The statistics of `numel` values whose squares were scaled by `factor`, or `None` where
    /// float32 may have lost them: a sum that overflowed, or one so small (below `2^-102` per
    /// value, in scaled units) that squares below float32's normal range could weigh in it,
    /// even where the process flushes such values to zero. Outside those, each sum is within
    /// `2^-20` (relative) of a float64 sum of the same squares: `8 * 2^-24` from the roundings
    /// of a lane's window sum, and at most `2^-24` from squares below float32's normal range.
    fn finish(mut self, numel: usize, factor: f32) -> Option<ErrorStats> {
        self.flush();
        let (sse, sum_sq) = (sum_lanes(&self.sse), sum_lanes(&self.sum_sq));
        // Each square or sum below 2^-126 loses at most 2^-126; 2^24 times that per value.
        let tiny = numel as f64 * 2f64.powi(-102);
        let nonzero = self.positive + self.negative;
        let lost = !sse.is_finite()
            || !sum_sq.is_finite()
            || (sse < tiny && self.max_abs_error != 0.0)
            || (sum_sq < tiny && (self.max_abs_error != 0.0 || nonzero > 0));
        if lost {
            return None;
        }
        // Exact: `factor` is a power of two within float32's normal range.
        let unscale = 1.0 / (f64::from(factor) * f64::from(factor));
        let numel = numel as u64;
        Some(ErrorStats {
            numel,
            sse: sse * unscale,
            sum_sq: sum_sq * unscale,
            max_abs_error: self.max_abs_error,
            counts: [self.negative, numel - nonzero, self.positive],
        })
    }
}

/// The power of two that brings the largest scale of a call's groups into `[1, 2)` (clamped to
/// float32's normal range; 1 where every scale is 0). The squares are summed as
/// `(e * factor)^2`: errors are at most about a scale, weights rarely far above it, so float32
/// sums of them neither overflow nor fall below its normal range, whatever the weights'
/// magnitude. Scaling by a power of two is exact there.
#[must_use]
pub fn square_factor(groups: &[(f32, f32)]) -> f32 {
    let largest = groups.iter().fold(0f32, |m, &(_, s)| m.max(s.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return 1.0;
    }
    let exponent = ((largest.to_bits() >> 23) & 0xff) as i32 - 127;
    let k = (-exponent).clamp(-126, 127);
    f32::from_bits(((k + 127) as u32) << 23)
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
    let factor = square_factor(groups);
    // The rounding of ties is a compile-time choice in the SIMD loops.
    macro_rules! by_ties {
        ($avx2:ident, $avx512:ident) => {
            if away {
                dispatch!(
                    level,
                    scalar_groups::<true>,
                    avx2::$avx2::<true>,
                    avx512::$avx512::<true>,
                    (x, group_len, groups, factor, codes)
                )
            } else {
                dispatch!(
                    level,
                    scalar_groups::<false>,
                    avx2::$avx2::<false>,
                    avx512::$avx512::<false>,
                    (x, group_len, groups, factor, codes)
                )
            }
        };
    }
    let lanes = match x.dtype {
        FloatDType::F32 => by_ties!(ternarize_f32, ternarize_f32),
        FloatDType::BF16 => by_ties!(ternarize_bf16, ternarize_bf16),
        FloatDType::F16 => by_ties!(ternarize_f16, ternarize_f16),
    };
    scalar::finish(lanes, x, group_len, groups, away, factor)
}

/// The scalar reference with the signature of the SIMD versions.
fn scalar_groups<const AWAY: bool>(
    x: Raw<'_>,
    group_len: usize,
    groups: &[(f32, f32)],
    factor: f32,
    codes: &mut [i8],
) -> ErrorLanes {
    scalar::ternarize_lanes(x, group_len, groups, AWAY, factor, codes)
}

/// The group of each value of a call: the range of group `g` of [`ternarize_groups`].
fn group_range(g: usize, groups: usize, group_len: usize, len: usize) -> std::ops::Range<usize> {
    let end = if g + 1 == groups {
        len
    } else {
        (g + 1) * group_len
    };
    g * group_len..end
}

pub mod scalar {
    use super::{
        ErrorLanes, ErrorStats, LANES, Raw, WINDOW, group_range, square_factor, sum_lanes,
    };
    use crate::kernels::widen::{CHUNK, for_each_chunk};

    /// How many of `codes` are 1, and how many -1.
    #[must_use]
    pub fn count_codes(codes: &[i8]) -> (u64, u64) {
        codes.iter().fold((0, 0), |(p, n), &c| {
            (p + u64::from(c == 1), n + u64::from(c == -1))
        })
    }

    /// The code of `v` and its dequantized value.
    fn code(v: f32, inv: f32, scale: f32, away: bool) -> (i8, f32) {
        let y = v * inv;
        if y > 0.5 || (away && y >= 0.5) {
            (1, scale)
        } else if y < -0.5 || (away && y <= -0.5) {
            (-1, -scale)
        } else {
            (0, 0.0)
        }
    }

    /// The reference: element `i` goes to lane `i % 16`, its scaled squares into the lane's
    /// float32 window sum (fused multiply-adds), each window into float64 once it holds
    /// [`WINDOW`] values.
    #[allow(clippy::too_many_arguments)]
    pub fn ternarize_into(
        x: &[f32],
        inv: f32,
        scale: f32,
        away: bool,
        factor: f32,
        codes: &mut [i8],
        acc: &mut ErrorLanes,
    ) {
        for (i, (&v, code_out)) in x.iter().zip(codes.iter_mut()).enumerate() {
            let (q, d) = code(v, inv, scale, away);
            *code_out = q;
            acc.positive += u64::from(q == 1);
            acc.negative += u64::from(q == -1);
            let e = v - d;
            acc.max_abs_error = acc.max_abs_error.max(e.abs());
            let (e, v) = (e * factor, v * factor);
            let l = i % LANES;
            acc.window_sse[l] = e.mul_add(e, acc.window_sse[l]);
            acc.window_sq[l] = v.mul_add(v, acc.window_sq[l]);
            acc.window_len += 1;
            if acc.window_len == WINDOW {
                acc.flush();
            }
        }
    }

    pub fn ternarize_raw_into(
        x: Raw<'_>,
        inv: f32,
        scale: f32,
        away: bool,
        factor: f32,
        codes: &mut [i8],
        acc: &mut ErrorLanes,
    ) {
        let mut chunks = codes.chunks_mut(CHUNK);
        for_each_chunk(x, |values| {
            let c = chunks.next().expect("one code per value");
            ternarize_into(values, inv, scale, away, factor, c, acc);
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
        let factor = square_factor(groups);
        let lanes = ternarize_lanes(x, group_len, groups, away, factor, codes);
        finish(lanes, x, group_len, groups, away, factor)
    }

    pub(super) fn ternarize_lanes(
        x: Raw<'_>,
        group_len: usize,
        groups: &[(f32, f32)],
        away: bool,
        factor: f32,
        codes: &mut [i8],
    ) -> ErrorLanes {
        let mut acc = ErrorLanes::default();
        for (g, &(inv, scale)) in groups.iter().enumerate() {
            let range = group_range(g, groups.len(), group_len, x.len());
            ternarize_raw_into(
                x.slice(range.clone()),
                inv,
                scale,
                away,
                factor,
                &mut codes[range],
                &mut acc,
            );
        }
        acc
    }

    /// The statistics of a call's lanes; where float32 may have lost a sum (see
    /// [`ErrorLanes::finish`]), both sums of squares again in float64, value by value.
    pub(super) fn finish(
        lanes: ErrorLanes,
        x: Raw<'_>,
        group_len: usize,
        groups: &[(f32, f32)],
        away: bool,
        factor: f32,
    ) -> ErrorStats {
        let (max_abs_error, positive, negative) =
            (lanes.max_abs_error, lanes.positive, lanes.negative);
        if let Some(stats) = lanes.finish(x.len(), factor) {
            return stats;
        }
        let (mut sse, mut sum_sq) = ([0f64; LANES], [0f64; LANES]);
        for (g, &(inv, scale)) in groups.iter().enumerate() {
            let range = group_range(g, groups.len(), group_len, x.len());
            let mut i = 0;
            for_each_chunk(x.slice(range), |values| {
                for &v in values {
                    let e = f64::from(v - code(v, inv, scale, away).1);
                    sse[i % LANES] += e * e;
                    sum_sq[i % LANES] += f64::from(v) * f64::from(v);
                    i += 1;
                }
            });
        }
        let numel = x.len() as u64;
        ErrorStats {
            numel,
            sse: sum_lanes(&sse),
            sum_sq: sum_lanes(&sum_sq),
            max_abs_error,
            counts: [negative, numel - positive - negative, positive],
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{ErrorLanes, LANES, Raw, WINDOW, group_range, scalar};
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
                factor: f32,
                codes: &mut [i8],
            ) -> ErrorLanes {
                let away = AWAY;
                let size = x.dtype.size();
                let half = _mm256_set1_ps(0.5);
                let neg_half = _mm256_set1_ps(-0.5);
                let sign = _mm256_set1_ps(-0.0);
                let factor_v = _mm256_set1_ps(factor);
                // Lanes 0-7 and 8-15: the window's float32 sums, and the float64 totals as
                // four vectors of four lanes.
                let mut window_sse = [_mm256_setzero_ps(); 2];
                let mut window_sq = [_mm256_setzero_ps(); 2];
                let mut in_window = 0usize;
                let mut sse = [_mm256_setzero_pd(); 4];
                let mut sum_sq = [_mm256_setzero_pd(); 4];
                let mut max_e = _mm256_setzero_ps();
                let blocks = x.len() / LANES;
                let next = x.bytes.as_ptr().wrapping_add(x.bytes.len());
                for (g, &(inv, scale)) in groups.iter().enumerate() {
                    let inv_v = _mm256_set1_ps(inv);
                    let scale_v = _mm256_set1_ps(scale);
                    let range = group_range(g, groups.len(), group_len, x.len());
                    for b in range.start / LANES..(range.end / LANES).min(blocks) {
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
                            // -1 - 0 for a negative code, 0 - (-1) for a positive one.
                            words[h] = _mm256_sub_epi32(n, p);
                            let (e, v) = (_mm256_mul_ps(e, factor_v), _mm256_mul_ps(v, factor_v));
                            window_sse[h] = _mm256_fmadd_ps(e, e, window_sse[h]);
                            window_sq[h] = _mm256_fmadd_ps(v, v, window_sq[h]);
                        }
                        in_window += LANES;
                        if in_window == WINDOW {
                            flush(&mut sse, &mut window_sse);
                            flush(&mut sum_sq, &mut window_sq);
                            in_window = 0;
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
                let mut acc = ErrorLanes::default();
                // SAFETY: each lane array has 16 slots; each store writes 4 or 8 of them.
                unsafe {
                    for k in 0..4 {
                        _mm256_storeu_pd(acc.sse.as_mut_ptr().add(4 * k), sse[k]);
                        _mm256_storeu_pd(acc.sum_sq.as_mut_ptr().add(4 * k), sum_sq[k]);
                    }
                    for h in 0..2 {
                        _mm256_storeu_ps(acc.window_sse.as_mut_ptr().add(8 * h), window_sse[h]);
                        _mm256_storeu_ps(acc.window_sq.as_mut_ptr().add(8 * h), window_sq[h]);
                    }
                }
                acc.window_len = in_window;
                let mut maxes = [0f32; 8];
                // SAFETY: `maxes` has 8 slots.
                unsafe { _mm256_storeu_ps(maxes.as_mut_ptr(), max_e) };
                acc.max_abs_error = maxes.iter().fold(0.0, |m, &v| m.max(v));
                let done = blocks * LANES;
                (acc.positive, acc.negative) = count_codes(&codes[..done]);
                let &(inv, scale) = groups.last().expect("at least one group");
                scalar::ternarize_raw_into(
                    x.slice(done..x.len()),
                    inv,
                    scale,
                    away,
                    factor,
                    &mut codes[done..],
                    &mut acc,
                );
                acc
            }
        };
    }

    /// Adds 16 float32 window sums (two vectors of lanes 0-7 and 8-15) to their float64 lanes
    /// (four vectors of four) and clears them.
    #[target_feature(enable = "avx2")]
    fn flush(totals: &mut [__m256d; 4], window: &mut [__m256; 2]) {
        for h in 0..2 {
            let w = window[h];
            totals[2 * h] =
                _mm256_add_pd(totals[2 * h], _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
            totals[2 * h + 1] = _mm256_add_pd(
                totals[2 * h + 1],
                _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)),
            );
            window[h] = _mm256_setzero_ps();
        }
    }

    /// How many of `codes` are 1, and how many -1. Counting the codes once written, 32 at a
    /// time, takes fewer instructions than counting each compare's lanes in the loop.
    #[target_feature(enable = "avx2,popcnt")]
    fn count_codes(codes: &[i8]) -> (u64, u64) {
        let (one, minus) = (_mm256_set1_epi8(1), _mm256_set1_epi8(-1));
        let (mut positive, mut negative) = (0u64, 0u64);
        let chunks = codes.chunks_exact(32);
        let rest = chunks.remainder();
        for c in chunks {
            // SAFETY: the chunk has 32 bytes.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
            positive += u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, one)).count_ones());
            negative += u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, minus)).count_ones());
        }
        let (p, n) = scalar::count_codes(rest);
        (positive + p, negative + n)
    }

    ternarize!(ternarize_f32, F32);
    ternarize!(ternarize_bf16, BF16);
    ternarize!(ternarize_f16, F16);
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{ErrorLanes, LANES, Raw, WINDOW, group_range, scalar};
    use crate::kernels::prefetch_l2;
    use crate::kernels::widen::load_f32x16;

    macro_rules! ternarize {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,fma,f16c,popcnt,avx512f,avx512bw,avx512vl")]
            pub unsafe fn $name<const AWAY: bool>(
                x: Raw<'_>,
                group_len: usize,
                groups: &[(f32, f32)],
                factor: f32,
                codes: &mut [i8],
            ) -> ErrorLanes {
                let away = AWAY;
                let size = x.dtype.size();
                let half = _mm512_set1_ps(0.5);
                let neg_half = _mm512_set1_ps(-0.5);
                let factor_v = _mm512_set1_ps(factor);
                let (zero8, one8, minus8) =
                    (_mm_setzero_si128(), _mm_set1_epi8(1), _mm_set1_epi8(-1));
                let (mut window_sse, mut window_sq) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut in_window = 0usize;
                // Lanes 0-7 and 8-15 of the float64 totals.
                let mut sse = [_mm512_setzero_pd(); 2];
                let mut sum_sq = [_mm512_setzero_pd(); 2];
                let mut max_e = _mm512_setzero_ps();
                let blocks = x.len() / LANES;
                let next = x.bytes.as_ptr().wrapping_add(x.bytes.len());
                for (g, &(inv, scale)) in groups.iter().enumerate() {
                    let inv_v = _mm512_set1_ps(inv);
                    let scale_v = _mm512_set1_ps(scale);
                    let range = group_range(g, groups.len(), group_len, x.len());
                    for b in range.start / LANES..(range.end / LANES).min(blocks) {
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
                        let c = _mm_mask_blend_epi8(n, _mm_mask_blend_epi8(p, zero8, one8), minus8);
                        // SAFETY: `codes.len() == x.len()` and `b * 16 + 16 <= x.len()`.
                        unsafe { _mm_storeu_si128(codes.as_mut_ptr().add(b * LANES).cast(), c) };
                        let (e, v) = (_mm512_mul_ps(e, factor_v), _mm512_mul_ps(v, factor_v));
                        window_sse = _mm512_fmadd_ps(e, e, window_sse);
                        window_sq = _mm512_fmadd_ps(v, v, window_sq);
                        in_window += LANES;
                        if in_window == WINDOW {
                            flush(&mut sse, window_sse);
                            flush(&mut sum_sq, window_sq);
                            window_sse = _mm512_setzero_ps();
                            window_sq = _mm512_setzero_ps();
                            in_window = 0;
                        }
                    }
                }
                let mut acc = ErrorLanes::default();
                // SAFETY: each lane array has 16 slots; each store writes 8 or 16 of them.
                unsafe {
                    for h in 0..2 {
                        _mm512_storeu_pd(acc.sse.as_mut_ptr().add(8 * h), sse[h]);
                        _mm512_storeu_pd(acc.sum_sq.as_mut_ptr().add(8 * h), sum_sq[h]);
                    }
                    _mm512_storeu_ps(acc.window_sse.as_mut_ptr(), window_sse);
                    _mm512_storeu_ps(acc.window_sq.as_mut_ptr(), window_sq);
                }
                acc.window_len = in_window;
                acc.max_abs_error = _mm512_reduce_max_ps(max_e);
                let done = blocks * LANES;
                (acc.positive, acc.negative) = count_codes(&codes[..done]);
                let &(inv, scale) = groups.last().expect("at least one group");
                scalar::ternarize_raw_into(
                    x.slice(done..x.len()),
                    inv,
                    scale,
                    away,
                    factor,
                    &mut codes[done..],
                    &mut acc,
                );
                acc
            }
        };
    }

    ternarize!(ternarize_f32, F32);
    ternarize!(ternarize_bf16, BF16);
    ternarize!(ternarize_f16, F16);

    /// Adds 16 float32 window sums to their float64 lanes (lanes 0-7, then 8-15).
    #[target_feature(enable = "avx512f")]
    fn flush(totals: &mut [__m512d; 2], window: __m512) {
        let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(window)));
        totals[0] = _mm512_add_pd(totals[0], _mm512_cvtps_pd(_mm512_castps512_ps256(window)));
        totals[1] = _mm512_add_pd(totals[1], _mm512_cvtps_pd(upper));
    }

    /// How many of `codes` are 1, and how many -1, 64 at a time (see the AVX2 version).
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    fn count_codes(codes: &[i8]) -> (u64, u64) {
        let (one, minus) = (_mm512_set1_epi8(1), _mm512_set1_epi8(-1));
        let (mut positive, mut negative) = (0u64, 0u64);
        let chunks = codes.chunks_exact(64);
        let rest = chunks.remainder();
        for c in chunks {
            // SAFETY: the chunk has 64 bytes.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
            positive += u64::from(_mm512_cmpeq_epi8_mask(v, one).count_ones());
            negative += u64::from(_mm512_cmpeq_epi8_mask(v, minus).count_ones());
        }
        let (p, n) = scalar::count_codes(rest);
        (positive + p, negative + n)
    }
}
