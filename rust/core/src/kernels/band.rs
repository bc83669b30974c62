//! The last step of the scale search (see [`crate::optimal`]): the best boundary among the
//! few values left between the bounds, whose values above are all chosen.
//!
//! Each value `v` of the band stands for the boundary below all values `>= v` (equal values
//! give the same boundary): `S = s0 + sum(those)`, `k = k0 + count(those)`, gain `S^2 / k`.
//! The boundary above the whole band, `(s0, k0)`, counts too when `k0 > 0`. The best has the
//! largest gain, and of equal gains the smallest `k`.
//!
//! The values of a band lie within a factor 2^21 of each other (between the bounds of a group
//! of fewer than 2^20 values: see [`crate::optimal`]), so sums of up to 16 of them are exact in
//! float64 in any order, and every level gets the same `S`: `s0` plus that exact sum. The
//! reference sorts and walks the boundaries in turn. The AVX-512 version sorts the 16 lanes
//! with a network and takes every boundary at once, without a branch: the few values left at
//! the end of a search would make a sort's branches unpredictable.

use super::dispatch;
use crate::simd::SimdLevel;

/// Values a band may hold.
pub const BAND_MAX: usize = 16;

/// `(S, k)` of the best boundary of `band`: at most [`BAND_MAX`] values `>= 0` within a factor
/// 2^25 of each other, all below those `k0` values summing to `s0` (0 if `k0` is).
#[must_use]
pub fn best_boundary(level: SimdLevel, band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
    assert!(band.len() <= BAND_MAX, "at most 16 values");
    dispatch!(
        level,
        scalar::best_boundary,
        avx2::best_boundary,
        avx512::best_boundary,
        (band, s0, k0)
    )
}

pub mod scalar {
    use super::BAND_MAX;

    /// Sorts the band, then walks its boundaries from the largest value down.
    #[must_use]
    pub fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
        let mut sorted = [0u32; BAND_MAX];
        let sorted = &mut sorted[..band.len()];
        // Values >= 0 sort as their bits.
        for (slot, v) in sorted.iter_mut().zip(band) {
            *slot = v.to_bits();
        }
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let (mut best, mut best_s, mut best_k) = if k0 > 0 {
            (s0 * s0 / k0 as f64, s0, k0)
        } else {
            (f64::NEG_INFINITY, 0.0, 1)
        };
        let mut taken = 0.0f64;
        for (i, &bits) in sorted.iter().enumerate() {
            taken += f64::from(f32::from_bits(bits));
            // Only where the next value is smaller does a boundary separate them.
            if sorted.get(i + 1) == Some(&bits) {
                continue;
            }
            let (s, k) = (s0 + taken, k0 + i as u64 + 1);
            let gain = s * s / k as f64;
            if gain > best {
                (best, best_s, best_k) = (gain, s, k);
            }
        }
        (best_s, best_k)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    /// # Safety
    /// The processor must support the target features this function enables.
    ///
    /// The reference: the AVX-512 network has no AVX2 version.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
        super::scalar::best_boundary(band, s0, k0)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    /// The steps `(k, j)` of a bitonic sorting network of 16 lanes: at step `(k, j)` lane `i`
    /// meets lane `i ^ j` and keeps the larger of the two where `i & j` and `i & k` are both or
    /// neither zero (blocks of `k` alternate between decreasing and increasing until the
    /// last, decreasing).
    const STEPS: [(usize, usize); 10] = [
        (2, 1),
        (4, 2),
        (4, 1),
        (8, 4),
        (8, 2),
        (8, 1),
        (16, 8),
        (16, 4),
        (16, 2),
        (16, 1),
    ];

    /// Per step, the lanes keeping the larger value.
    const NETWORK: [u16; 10] = {
        let mut larger = [0u16; 10];
        let mut s = 0;
        while s < 10 {
            let (k, j) = STEPS[s];
            let mut i = 0;
            while i < 16 {
                if ((i & j) == 0) == ((i & k) == 0) {
                    larger[s] |= 1 << i;
                }
                i += 1;
            }
            s += 1;
        }
        larger
    };

    /// Lane `i ^ j` of `v` in lane `i`: in-lane shuffles rather than a full permute where
    /// `j` allows.
    #[target_feature(enable = "avx2,avx512f")]
    #[inline]
    fn partner(v: __m512, j: usize) -> __m512 {
        match j {
            1 => _mm512_permute_ps::<0b10_11_00_01>(v),
            2 => _mm512_permute_ps::<0b01_00_11_10>(v),
            4 => _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v),
            _ => _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v),
        }
    }

    /// Sorts the 16 lanes of `v` in decreasing order.
    #[target_feature(enable = "avx2,avx512f")]
    #[inline]
    fn sort_decreasing(mut v: __m512) -> __m512 {
        for (&(_, j), &larger) in STEPS.iter().zip(&NETWORK) {
            let other = partner(v, j);
            v = _mm512_mask_max_ps(_mm512_min_ps(v, other), larger, v, other);
        }
        v
    }

    /// Inclusive prefix sums of the 8 float64 lanes of `v`: each lane adds the total of the
    /// pair, then the quad, before it; the first two steps stay within 128- and 256-bit lanes,
    /// which costs less than a full permute.
    #[target_feature(enable = "avx2,avx512f")]
    #[inline]
    fn prefix_sums(v: __m512d) -> __m512d {
        let v = _mm512_mask_add_pd(v, 0b1010_1010, v, _mm512_permute_pd::<0>(v));
        let v = _mm512_mask_add_pd(v, 0b1100_1100, v, _mm512_permutex_pd::<0b0101_0101>(v));
        let three = _mm512_set1_epi64(3);
        _mm512_mask_add_pd(v, 0b1111_0000, v, _mm512_permutexvar_pd(three, v))
    }

    /// The band sorted with a network, then every boundary at once. Its sums are exact (see
    /// [`super::best_boundary`]), so their order of addition does not matter.
    ///
    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,avx512f")]
    #[inline]
    pub unsafe fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
        let m = band.len();
        let valid: __mmask16 = ((1u32 << m) - 1) as u16;
        // Padding below every value sorts last.
        // SAFETY: the masked load reads the `m` values of the band only.
        let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(-1.0), valid, band.as_ptr()) };
        let sorted = sort_decreasing(v);
        // A boundary after lane i separates it from a smaller next value; the last lane of
        // the band always does.
        let next_idx = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15);
        let next = _mm512_permutexvar_ps(next_idx, sorted);
        let last = ((1u32 << m) >> 1) as u16;
        let boundary = valid & (_mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(sorted, next) | last);
        let t_lo = prefix_sums(_mm512_cvtps_pd(_mm512_castps512_ps256(sorted)));
        let t_hi = _mm512_add_pd(
            prefix_sums(_mm512_cvtps_pd(_mm256_castpd_ps(
                _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sorted)),
            ))),
            _mm512_permutexvar_pd(_mm512_set1_epi64(7), t_lo),
        );
        let s0v = _mm512_set1_pd(s0);
        let (s_lo, s_hi) = (_mm512_add_pd(s0v, t_lo), _mm512_add_pd(s0v, t_hi));
        let k0v = _mm512_set1_pd(k0 as f64);
        let k_lo = _mm512_add_pd(k0v, _mm512_setr_pd(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0));
        let k_hi = _mm512_add_pd(
            k0v,
            _mm512_setr_pd(9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0),
        );
        let none = _mm512_set1_pd(f64::NEG_INFINITY);
        let gain = |s: __m512d, k: __m512d, boundary: __mmask8| {
            _mm512_mask_div_pd(none, boundary, _mm512_mul_pd(s, s), k)
        };
        let g_lo = gain(s_lo, k_lo, boundary as __mmask8);
        let g_hi = gain(s_hi, k_hi, (boundary >> 8) as __mmask8);
        let best = _mm512_reduce_max_pd(_mm512_max_pd(g_lo, g_hi));
        // Counts grow with the lane: the first lane of the largest gain has the smallest.
        let best_v = _mm512_set1_pd(best);
        let at_best = u32::from(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(g_lo, best_v))
            | u32::from(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(g_hi, best_v)) << 8;
        let lane = at_best.trailing_zeros() as usize;
        let upper = ((lane >> 3) as u8).wrapping_neg();
        let best_s = _mm512_cvtsd_f64(_mm512_permutexvar_pd(
            _mm512_set1_epi64((lane % 8) as i64),
            _mm512_mask_blend_pd(upper, s_lo, s_hi),
        ));
        let best_k = k0 + lane as u64 + 1;
        // The boundary above the band has the smallest count of all, so it wins ties. Chosen
        // without a branch: one here would wait on all of the above when mispredicted. With
        // nothing at all (`k0 = 0` and an empty band): `(0, 1)`.
        let above = if k0 > 0 {
            s0 * s0 / k0 as f64
        } else {
            f64::NEG_INFINITY
        };
        let keep = u64::from(above >= best).wrapping_neg();
        let choose = |a: u64, b: u64| (a & keep) | (b & !keep);
        (
            f64::from_bits(choose(s0.to_bits(), best_s.to_bits())),
            choose(k0, best_k).max(1),
        )
    }
}
