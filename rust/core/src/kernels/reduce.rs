//! Sum of absolute values: the first pass of absmean.

use super::{LANES, Raw, dispatch, sum_lanes};
use crate::dtype::FloatDType;
use crate::simd::SimdLevel;

/// `sum(|x|)` in float64, in the lane order described in [`super`].
#[must_use]
pub fn abs_sum(level: SimdLevel, x: Raw<'_>) -> f64 {
    match x.dtype {
        FloatDType::F32 => dispatch!(
            level,
            scalar::abs_sum,
            avx2::abs_sum_f32,
            avx512::abs_sum_f32,
            (x)
        ),
        FloatDType::BF16 => dispatch!(
            level,
            scalar::abs_sum,
            avx2::abs_sum_bf16,
            avx512::abs_sum_bf16,
            (x)
        ),
        FloatDType::F16 => dispatch!(
            level,
            scalar::abs_sum,
            avx2::abs_sum_f16,
            avx512::abs_sum_f16,
            (x)
        ),
    }
}

pub mod scalar {
    use super::{LANES, Raw, sum_lanes};
    use crate::kernels::widen::for_each_chunk;

    /// Adds `|x[i]|` to `lanes[i % 16]`.
    pub fn abs_sum_into(x: &[f32], lanes: &mut [f64; LANES]) {
        for (i, &v) in x.iter().enumerate() {
            lanes[i % LANES] += f64::from(v.abs());
        }
    }

    pub fn abs_sum_raw_into(x: Raw<'_>, lanes: &mut [f64; LANES]) {
        for_each_chunk(x, |chunk| abs_sum_into(chunk, lanes));
    }

    #[must_use]
    pub fn abs_sum(x: Raw<'_>) -> f64 {
        let mut lanes = [0.0; LANES];
        abs_sum_raw_into(x, &mut lanes);
        sum_lanes(&lanes)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{LANES, Raw, scalar, sum_lanes};
    use crate::kernels::widen::load_f32x8;
    use crate::kernels::{PREFETCH_AHEAD, prefetch_l2};

    /// 16 values from `p` as four vectors of four float64. Float32 is widened as it is loaded
    /// (`vcvtps2pd` from memory), which takes the processor fewer instructions than loading,
    /// splitting and widening a register; float16 and bfloat16 go through float32.
    macro_rules! widened_f64x4 {
        (F32, $p:expr) => {{
            let p = $p.cast::<f32>();
            [0, 4, 8, 12].map(|k| _mm256_cvtps_pd(_mm_loadu_ps(p.add(k))))
        }};
        ($dtype:tt, $p:expr) => {{
            // Float16 and bfloat16: two bytes a value.
            let (v0, v1) = (load_f32x8!($dtype, $p), load_f32x8!($dtype, $p.add(16)));
            [
                _mm256_cvtps_pd(_mm256_castps256_ps128(v0)),
                _mm256_cvtps_pd(_mm256_extractf128_ps(v0, 1)),
                _mm256_cvtps_pd(_mm256_castps256_ps128(v1)),
                _mm256_cvtps_pd(_mm256_extractf128_ps(v1, 1)),
            ]
        }};
    }

    macro_rules! abs_sum {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c")]
            pub unsafe fn $name(x: Raw<'_>) -> f64 {
                let size = x.dtype.size();
                let sign = _mm256_set1_pd(-0.0);
                let mut acc = [_mm256_setzero_pd(); 4];
                let blocks = x.len() / LANES;
                for b in 0..blocks {
                    prefetch_l2(
                        x.bytes
                            .as_ptr()
                            .wrapping_add(b * LANES * size + PREFETCH_AHEAD),
                    );
                    // SAFETY: values b*16 .. b*16+16 are within `x`.
                    let wide =
                        unsafe { widened_f64x4!($dtype, x.bytes.as_ptr().add(b * LANES * size)) };
                    for k in 0..4 {
                        // |v| after widening: the same value, since widening is exact.
                        acc[k] = _mm256_add_pd(acc[k], _mm256_andnot_pd(sign, wide[k]));
                    }
                }
                let mut lanes = [0.0; LANES];
                for (k, a) in acc.iter().enumerate() {
                    // SAFETY: lanes has 16 slots; k * 4 + 4 <= 16.
                    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(k * 4), *a) };
                }
                scalar::abs_sum_raw_into(x.slice(blocks * LANES..x.len()), &mut lanes);
                sum_lanes(&lanes)
            }
        };
    }

    abs_sum!(abs_sum_f32, F32);
    abs_sum!(abs_sum_bf16, BF16);
    abs_sum!(abs_sum_f16, F16);
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{LANES, Raw, scalar, sum_lanes};
    use crate::kernels::widen::load_f32x16;
    use crate::kernels::{PREFETCH_AHEAD, prefetch_l2};

    /// 16 values from `p` as two vectors of eight float64 (see the AVX2 version).
    macro_rules! widened_f64x8 {
        (F32, $p:expr) => {{
            let p = $p.cast::<f32>();
            (
                _mm512_cvtps_pd(_mm256_loadu_ps(p)),
                _mm512_cvtps_pd(_mm256_loadu_ps(p.add(8))),
            )
        }};
        ($dtype:tt, $p:expr) => {{
            let v = load_f32x16!($dtype, $p);
            let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            (
                _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                _mm512_cvtps_pd(upper),
            )
        }};
    }

    macro_rules! abs_sum {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
            pub unsafe fn $name(x: Raw<'_>) -> f64 {
                let size = x.dtype.size();
                let mut lo = _mm512_setzero_pd();
                let mut hi = _mm512_setzero_pd();
                let blocks = x.len() / LANES;
                for b in 0..blocks {
                    prefetch_l2(
                        x.bytes
                            .as_ptr()
                            .wrapping_add(b * LANES * size + PREFETCH_AHEAD),
                    );
                    // SAFETY: values b*16 .. b*16+16 are within `x`.
                    let (v_lo, v_hi) =
                        unsafe { widened_f64x8!($dtype, x.bytes.as_ptr().add(b * LANES * size)) };
                    // |v| after widening: the same value, since widening is exact.
                    lo = _mm512_add_pd(lo, _mm512_abs_pd(v_lo));
                    hi = _mm512_add_pd(hi, _mm512_abs_pd(v_hi));
                }
                let mut lanes = [0.0; LANES];
                // SAFETY: lanes has 16 slots, each store writes 8.
                unsafe {
                    _mm512_storeu_pd(lanes.as_mut_ptr(), lo);
                    _mm512_storeu_pd(lanes.as_mut_ptr().add(8), hi);
                }
                scalar::abs_sum_raw_into(x.slice(blocks * LANES..x.len()), &mut lanes);
                sum_lanes(&lanes)
            }
        };
    }

    abs_sum!(abs_sum_f32, F32);
    abs_sum!(abs_sum_bf16, BF16);
    abs_sum!(abs_sum_f16, F16);
}

/// `max |x|`, and whether every value is finite (the max is meaningless otherwise).
#[must_use]
pub fn abs_max(level: SimdLevel, x: Raw<'_>) -> (f32, bool) {
    match x.dtype {
        FloatDType::F32 => dispatch!(
            level,
            max_scalar::abs_max,
            max_avx2::abs_max_f32,
            max_avx512::abs_max_f32,
            (x)
        ),
        FloatDType::BF16 => dispatch!(
            level,
            max_scalar::abs_max,
            max_avx2::abs_max_bf16,
            max_avx512::abs_max_bf16,
            (x)
        ),
        FloatDType::F16 => dispatch!(
            level,
            max_scalar::abs_max,
            max_avx2::abs_max_f16,
            max_avx512::abs_max_f16,
            (x)
        ),
    }
}

pub mod max_scalar {
    use super::Raw;
    use crate::kernels::widen::for_each_chunk;

    /// Folds `|x|` into the running `(max, all finite)`.
    pub fn abs_max_into(x: &[f32], acc: &mut (f32, bool)) {
        for &v in x {
            let a = v.abs();
            acc.0 = acc.0.max(a);
            acc.1 &= a <= f32::MAX;
        }
    }

    #[must_use]
    pub fn abs_max(x: Raw<'_>) -> (f32, bool) {
        let mut acc = (0.0f32, true);
        for_each_chunk(x, |chunk| abs_max_into(chunk, &mut acc));
        acc
    }
}

#[cfg(target_arch = "x86_64")]
pub mod max_avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{Raw, max_scalar};
    use crate::kernels::widen::{for_each_chunk, load_f32x8};
    use crate::kernels::{PREFETCH_AHEAD, prefetch_l2};

    macro_rules! abs_max {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c")]
            pub unsafe fn $name(x: Raw<'_>) -> (f32, bool) {
                let size = x.dtype.size();
                let sign = _mm256_set1_ps(-0.0);
                let largest = _mm256_set1_ps(f32::MAX);
                let mut max = _mm256_setzero_ps();
                let mut finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
                let blocks = x.len() / 8;
                for b in 0..blocks {
                    prefetch_l2(x.bytes.as_ptr().wrapping_add(b * 8 * size + PREFETCH_AHEAD));
                    // SAFETY: values b*8 .. b*8+8 are within `x`.
                    let v = unsafe { load_f32x8!($dtype, x.bytes.as_ptr().add(b * 8 * size)) };
                    let a = _mm256_andnot_ps(sign, v);
                    // NaN compares false, so it clears `finite` and never becomes the max.
                    finite = _mm256_and_ps(finite, _mm256_cmp_ps::<_CMP_LE_OQ>(a, largest));
                    max = _mm256_max_ps(a, max);
                }
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` has 8 slots.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
                let mut acc = (
                    lanes.iter().fold(0f32, |m, &v| m.max(v)),
                    _mm256_movemask_ps(finite) == 0xFF,
                );
                for_each_chunk(x.slice(blocks * 8..x.len()), |c| {
                    max_scalar::abs_max_into(c, &mut acc);
                });
                acc
            }
        };
    }

    abs_max!(abs_max_f32, F32);
    abs_max!(abs_max_bf16, BF16);
    abs_max!(abs_max_f16, F16);
}

#[cfg(target_arch = "x86_64")]
pub mod max_avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{Raw, max_scalar};
    use crate::kernels::widen::{for_each_chunk, load_f32x16};
    use crate::kernels::{PREFETCH_AHEAD, prefetch_l2};

    macro_rules! abs_max {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
            pub unsafe fn $name(x: Raw<'_>) -> (f32, bool) {
                let size = x.dtype.size();
                let largest = _mm512_set1_ps(f32::MAX);
                // Two running maxima, so that the loop does not wait on one chain of `max`;
                // the maximum is the same in any order.
                let (mut max, mut max2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut finite: __mmask16 = 0xFFFF;
                let blocks = x.len() / 16;
                let load = |b: usize| {
                    prefetch_l2(
                        x.bytes
                            .as_ptr()
                            .wrapping_add(b * 16 * size + PREFETCH_AHEAD),
                    );
                    // SAFETY: values b*16 .. b*16+16 are within `x`.
                    _mm512_abs_ps(unsafe {
                        load_f32x16!($dtype, x.bytes.as_ptr().add(b * 16 * size))
                    })
                };
                // NaN compares false, so it clears `finite` and never becomes the max.
                for b in (0..blocks / 2 * 2).step_by(2) {
                    let (a, a2) = (load(b), load(b + 1));
                    finite &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, largest)
                        & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a2, largest);
                    max = _mm512_max_ps(a, max);
                    max2 = _mm512_max_ps(a2, max2);
                }
                if blocks % 2 == 1 {
                    let a = load(blocks - 1);
                    finite &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, largest);
                    max = _mm512_max_ps(a, max);
                }
                let max = _mm512_max_ps(max, max2);
                let mut acc = (_mm512_reduce_max_ps(max), finite == 0xFFFF);
                for_each_chunk(x.slice(blocks * 16..x.len()), |c| {
                    max_scalar::abs_max_into(c, &mut acc);
                });
                acc
            }
        };
    }

    abs_max!(abs_max_f32, F32);
    abs_max!(abs_max_bf16, BF16);
    abs_max!(abs_max_f16, F16);
}
