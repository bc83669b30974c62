//! Sum of absolute values: the first pass of absmean.

use super::{LANES, dispatch, sum_lanes};
use crate::simd::SimdLevel;

/// `sum(|x|)` in float64, in the lane order described in [`super`].
#[must_use]
pub fn abs_sum(level: SimdLevel, x: &[f32]) -> f64 {
    dispatch!(level, scalar::abs_sum, avx2::abs_sum, avx512::abs_sum, (x))
}

pub mod scalar {
    use super::{LANES, sum_lanes};

    /// Adds `|x[i]|` to `lanes[i % 16]`.
    pub fn abs_sum_into(x: &[f32], lanes: &mut [f64; LANES]) {
        for (i, &v) in x.iter().enumerate() {
            lanes[i % LANES] += f64::from(v.abs());
        }
    }

    #[must_use]
    pub fn abs_sum(x: &[f32]) -> f64 {
        let mut lanes = [0.0; LANES];
        abs_sum_into(x, &mut lanes);
        sum_lanes(&lanes)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_pd, _mm256_andnot_ps, _mm256_castps256_ps128, _mm256_cvtps_pd,
        _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_pd,
        _mm256_storeu_pd,
    };

    use super::{LANES, scalar, sum_lanes};

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn abs_sum(x: &[f32]) -> f64 {
        let sign = _mm256_set1_ps(-0.0);
        let mut acc = [_mm256_setzero_pd(); 4];
        let blocks = x.len() / LANES;
        for b in 0..blocks {
            // SAFETY: `b * 16 + 16 <= x.len()`.
            let (v0, v1): (__m256, __m256) = unsafe {
                let p = x.as_ptr().add(b * LANES);
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            };
            let a0 = _mm256_andnot_ps(sign, v0);
            let a1 = _mm256_andnot_ps(sign, v1);
            acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(a0)));
            acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(a0, 1)));
            acc[2] = _mm256_add_pd(acc[2], _mm256_cvtps_pd(_mm256_castps256_ps128(a1)));
            acc[3] = _mm256_add_pd(acc[3], _mm256_cvtps_pd(_mm256_extractf128_ps(a1, 1)));
        }
        let mut lanes = [0.0; LANES];
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: lanes has 16 slots; k * 4 + 4 <= 16.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(k * 4), *a) };
        }
        scalar::abs_sum_into(&x[blocks * LANES..], &mut lanes);
        sum_lanes(&lanes)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::_mm256_castpd_ps;
    use std::arch::x86_64::{
        _mm512_abs_ps, _mm512_add_pd, _mm512_castps_pd, _mm512_castps512_ps256, _mm512_cvtps_pd,
        _mm512_extractf64x4_pd, _mm512_loadu_ps, _mm512_setzero_pd, _mm512_storeu_pd,
    };

    use super::{LANES, scalar, sum_lanes};

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn abs_sum(x: &[f32]) -> f64 {
        let mut lo = _mm512_setzero_pd();
        let mut hi = _mm512_setzero_pd();
        let blocks = x.len() / LANES;
        for b in 0..blocks {
            // SAFETY: `b * 16 + 16 <= x.len()`.
            let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(b * LANES)) };
            let a = _mm512_abs_ps(v);
            let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(upper));
        }
        let mut lanes = [0.0; LANES];
        // SAFETY: lanes has 16 slots, each store writes 8.
        unsafe {
            _mm512_storeu_pd(lanes.as_mut_ptr(), lo);
            _mm512_storeu_pd(lanes.as_mut_ptr().add(8), hi);
        }
        scalar::abs_sum_into(&x[blocks * LANES..], &mut lanes);
        sum_lanes(&lanes)
    }
}
