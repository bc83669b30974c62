//! The passes of the least-squares scale search over one group (see [`crate::optimal`]):
//! `|w|` into a buffer with its max and sum, then partitions of that buffer around two
//! thresholds, which sum the values above the upper one and move those between the two to the
//! front of the buffer, in order.
//!
//! Sums accumulate in 16 lanes by position, as every reduction ([`super`]), so every level
//! makes the same search steps and gets the same sums: float64 lanes, except for the sum of the
//! values between the thresholds, which only moves a bound (float32). The lanes are then added
//! pairwise ([`add_lanes`]), not in order: the search waits on each sum, and this takes 4
//! steps, in registers.

use super::{LANES, Raw, dispatch};
use crate::dtype::FloatDType;
use crate::simd::SimdLevel;

/// `max |x|`, whether every value is finite (the other fields are meaningless otherwise), and
/// `sum |x|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbsStats {
    pub max: f32,
    pub finite: bool,
    pub sum: f64,
}

/// The sum and count of some of a group's values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tail {
    pub sum: f64,
    pub count: usize,
}

/// What a partition found: the values above the upper threshold, and those between the two
/// (now the first `between.count` values of the buffer). The sum of the values between only
/// moves a bound, which allows it float32 lanes: it is within `(count / 16 + 4) * 2^-24` of
/// the exact sum (relative), while the sum above is float64, as every reduction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Partition {
    pub above: Tail,
    pub between: Tail,
}

/// The lanes of a partition in progress; `len` is also where the next value between the
/// thresholds goes.
#[derive(Debug, Clone, Default)]
pub struct PartitionLanes {
    pub above: [f64; LANES],
    pub between: [f32; LANES],
    pub count_above: usize,
    pub len: usize,
}

impl PartitionLanes {
    fn finish(&self) -> Partition {
        Partition {
            above: Tail {
                sum: add_lanes(self.above),
                count: self.count_above,
            },
            between: Tail {
                sum: f64::from(add_lanes(self.between)),
                count: self.len,
            },
        }
    }
}

/// Adds lane `i + w` to lane `i` for `w` = 8, 4, 2, 1.
#[must_use]
pub fn add_lanes<T: Copy + std::ops::AddAssign>(mut lanes: [T; LANES]) -> T {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            lanes[i] += lanes[i + w];
        }
        w /= 2;
    }
    lanes[0]
}

/// Writes `|x|` into `out` (same length).
pub fn abs_into(level: SimdLevel, x: Raw<'_>, out: &mut [f32]) -> AbsStats {
    assert_eq!(x.len(), out.len(), "one output per value");
    match x.dtype {
        FloatDType::F32 => dispatch!(
            level,
            scalar::abs_into,
            avx2::abs_into_f32,
            avx512::abs_into_f32,
            (x, out)
        ),
        FloatDType::BF16 => dispatch!(
            level,
            scalar::abs_into,
            avx2::abs_into_bf16,
            avx512::abs_into_bf16,
            (x, out)
        ),
        FloatDType::F16 => dispatch!(
            level,
            scalar::abs_into,
            avx2::abs_into_f16,
            avx512::abs_into_f16,
            (x, out)
        ),
    }
}

/// Partitions the non-negative `x` around `above` and `at_least` (see the module's description).
pub fn partition(level: SimdLevel, x: &mut [f32], above: f32, at_least: f32) -> Partition {
    dispatch!(
        level,
        scalar::partition,
        avx2::partition,
        avx512::partition,
        (x, above, at_least)
    )
}

pub mod scalar {
    use super::{AbsStats, LANES, Partition, PartitionLanes, Raw};
    use crate::kernels::widen::for_each_chunk;

    /// Finishes `abs_into` from value `from` (a multiple of 16) on, given `acc`: the max, all
    /// finite and the sum lanes of the values before it.
    #[must_use]
    pub fn abs_into_from(
        x: Raw<'_>,
        from: usize,
        out: &mut [f32],
        mut acc: (f32, bool, [f64; LANES]),
    ) -> AbsStats {
        let mut at = from;
        for_each_chunk(x.slice(from..x.len()), |chunk| {
            for (o, &v) in out[at..at + chunk.len()].iter_mut().zip(chunk) {
                let a = v.abs();
                *o = a;
                acc.0 = acc.0.max(a);
                acc.1 &= a <= f32::MAX;
                acc.2[at % LANES] += f64::from(a);
                at += 1;
            }
        });
        AbsStats {
            max: acc.0,
            finite: acc.1,
            sum: super::add_lanes(acc.2),
        }
    }

    #[must_use]
    pub fn abs_into(x: Raw<'_>, out: &mut [f32]) -> AbsStats {
        abs_into_from(x, 0, out, (0.0, true, [0.0; LANES]))
    }

    /// Continues a partition of `x` from value `from` (a multiple of 16).
    pub fn partition_from(
        x: &mut [f32],
        from: usize,
        above: f32,
        at_least: f32,
        acc: &mut PartitionLanes,
    ) {
        for i in from..x.len() {
            let v = x[i];
            if v > above {
                acc.above[i % LANES] += f64::from(v);
                acc.count_above += 1;
            } else if v >= at_least {
                acc.between[i % LANES] += v;
                x[acc.len] = v;
                acc.len += 1;
            }
        }
    }

    #[must_use]
    pub fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition {
        let mut acc = PartitionLanes::default();
        partition_from(x, 0, above, at_least, &mut acc);
        acc.finish()
    }
}

/// For each 8-bit mask, the indices of its set bits in order, one per byte: the `vpermps`
/// indices that pack the selected lanes of a vector to its front.
#[cfg(target_arch = "x86_64")]
const PACK_INDICES: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bit, mut k, mut entry) = (0, 0, 0u64);
        while bit < 8 {
            if (mask >> bit) & 1 == 1 {
                entry |= (bit as u64) << (8 * k);
                k += 1;
            }
            bit += 1;
        }
        table[mask] = entry;
        mask += 1;
    }
    table
};

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{AbsStats, LANES, PACK_INDICES, Partition, Raw, Tail, scalar};
    use crate::kernels::widen::load_f32x8;

    /// Adds the 8 float32 lanes of `v` to the float64 lanes `acc[0]` (first 4), `acc[1]`.
    #[target_feature(enable = "avx2,f16c")]
    fn add_widened(acc: &mut [__m256d], v: __m256) {
        acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }

    /// [`super::add_lanes`] of lanes 0-3, 4-7, 8-11, 12-15.
    #[target_feature(enable = "avx2,f16c")]
    fn add_lanes(acc: &[__m256d; 4]) -> f64 {
        let v = _mm256_add_pd(_mm256_add_pd(acc[0], acc[2]), _mm256_add_pd(acc[1], acc[3]));
        let v = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v)))
    }

    #[target_feature(enable = "avx2,f16c")]
    fn store_lanes(acc: &[__m256d; 4]) -> [f64; LANES] {
        let mut lanes = [0.0; LANES];
        for (q, v) in acc.iter().enumerate() {
            // SAFETY: lanes has 16 slots; q * 4 + 4 <= 16.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(q * 4), *v) };
        }
        lanes
    }

    macro_rules! abs_into {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c")]
            #[inline]
            pub unsafe fn $name(x: Raw<'_>, out: &mut [f32]) -> AbsStats {
                let size = x.dtype.size();
                let sign = _mm256_set1_ps(-0.0);
                let largest = _mm256_set1_ps(f32::MAX);
                let mut max = _mm256_setzero_ps();
                let mut finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
                let mut sums = [_mm256_setzero_pd(); 4];
                let blocks = x.len() / LANES;
                for b in 0..blocks {
                    for h in 0..2 {
                        let at = b * LANES + h * 8;
                        // SAFETY: values at .. at+8 are within `x` and `out`.
                        let a = unsafe {
                            let v = load_f32x8!($dtype, x.bytes.as_ptr().add(at * size));
                            let a = _mm256_andnot_ps(sign, v);
                            _mm256_storeu_ps(out.as_mut_ptr().add(at), a);
                            a
                        };
                        // NaN compares false: it clears `finite` and never becomes the max.
                        finite = _mm256_and_ps(finite, _mm256_cmp_ps::<_CMP_LE_OQ>(a, largest));
                        max = _mm256_max_ps(a, max);
                        add_widened(&mut sums[2 * h..], a);
                    }
                }
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` has 8 slots.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
                let (max, finite) = (
                    lanes.iter().fold(0f32, |m, &v| m.max(v)),
                    _mm256_movemask_ps(finite) == 0xFF,
                );
                if blocks * LANES == x.len() {
                    return AbsStats {
                        max,
                        finite,
                        sum: add_lanes(&sums),
                    };
                }
                scalar::abs_into_from(x, blocks * LANES, out, (max, finite, store_lanes(&sums)))
            }
        };
    }

    abs_into!(abs_into_f32, F32);
    abs_into!(abs_into_bf16, BF16);
    abs_into!(abs_into_f16, F16);

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,popcnt")]
    #[must_use]
    #[inline]
    pub unsafe fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition {
        let (va, vl) = (_mm256_set1_ps(above), _mm256_set1_ps(at_least));
        let mut sums = [_mm256_setzero_pd(); 4];
        let mut between_sums = [_mm256_setzero_ps(); 2];
        let (mut count_above, mut len) = (0usize, 0usize);
        let p = x.as_mut_ptr();
        for at in (0..x.len()).step_by(LANES) {
            // The last vectors may be partial: their missing values are masked off.
            let valid = |h: usize| {
                let n = (x.len() - at).saturating_sub(8 * h).min(8);
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                ))
            };
            let valid = [valid(0), valid(1)];
            let whole = at + LANES <= x.len();
            // SAFETY: the valid values at .. at+16 are within `x`, and so are the stored ones:
            // they start at `len <=` the first value not yet stored, and go over values
            // already loaded (a whole half stores 8, up to the end of that half).
            unsafe {
                let v = [
                    _mm256_maskload_ps(p.add(at), _mm256_castps_si256(valid[0])),
                    _mm256_maskload_ps(p.wrapping_add(at + 8), _mm256_castps_si256(valid[1])),
                ];
                for (h, (&v, &valid)) in v.iter().zip(&valid).enumerate() {
                    let ma = _mm256_and_ps(valid, _mm256_cmp_ps::<_CMP_GT_OQ>(v, va));
                    let ge = _mm256_and_ps(valid, _mm256_cmp_ps::<_CMP_GE_OQ>(v, vl));
                    let mb = _mm256_andnot_ps(ma, ge);
                    add_widened(&mut sums[2 * h..], _mm256_and_ps(ma, v));
                    between_sums[h] = _mm256_add_ps(between_sums[h], _mm256_and_ps(mb, v));
                    let between = _mm256_movemask_ps(mb).cast_unsigned() as usize;
                    let index = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(
                        PACK_INDICES[between].cast_signed(),
                    ));
                    let n = between.count_ones() as usize;
                    let packed = _mm256_permutevar8x32_ps(v, index);
                    if whole {
                        // Up to `at + 8 h + 8`, over values already loaded: a plain store
                        // costs less than a masked one.
                        _mm256_storeu_ps(p.add(len), packed);
                    } else {
                        let store = _mm256_cmpgt_epi32(
                            _mm256_set1_epi32(n as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        _mm256_maskstore_ps(p.add(len), store, packed);
                    }
                    len += n;
                    count_above += _mm256_movemask_ps(ma).count_ones() as usize;
                }
            }
        }
        Partition {
            above: Tail {
                sum: add_lanes(&sums),
                count: count_above,
            },
            between: Tail {
                sum: f64::from(add_lanes_f32(_mm256_add_ps(
                    between_sums[0],
                    between_sums[1],
                ))),
                count: len,
            },
        }
    }

    /// The last steps of [`super::add_lanes`] of float32 lanes from `v` (lanes `i` and `i + 8`
    /// already added), in registers.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn add_lanes_f32(v: __m256) -> f32 {
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps::<1>(v, v)))
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    #[allow(clippy::wildcard_imports)]
    use std::arch::x86_64::*;

    use super::{AbsStats, LANES, Partition, Raw, Tail, scalar};
    use crate::kernels::widen::load_f32x16;

    /// Adds the 16 float32 lanes of `v` to the float64 lanes `acc[0]` (first 8), `acc[1]`.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    fn add_widened(acc: &mut [__m512d; 2], v: __m512) {
        let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        acc[0] = _mm512_add_pd(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        acc[1] = _mm512_add_pd(acc[1], _mm512_cvtps_pd(upper));
    }

    /// [`super::add_lanes`] of lanes 0-7, 8-15.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    fn add_lanes(acc: &[__m512d; 2]) -> f64 {
        let v = _mm512_add_pd(acc[0], acc[1]);
        let v = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
        let v = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v)))
    }

    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
    fn store_lanes(acc: &[__m512d; 2]) -> [f64; LANES] {
        let mut lanes = [0.0; LANES];
        // SAFETY: lanes has 16 slots, each store writes 8.
        unsafe {
            _mm512_storeu_pd(lanes.as_mut_ptr(), acc[0]);
            _mm512_storeu_pd(lanes.as_mut_ptr().add(8), acc[1]);
        }
        lanes
    }

    macro_rules! abs_into {
        ($name:ident, $dtype:tt) => {
            /// # Safety
            /// The processor must support the target features this function enables.
            #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
            #[inline]
            pub unsafe fn $name(x: Raw<'_>, out: &mut [f32]) -> AbsStats {
                let size = x.dtype.size();
                let largest = _mm512_set1_ps(f32::MAX);
                let mut max = _mm512_setzero_ps();
                let mut finite: __mmask16 = 0xFFFF;
                let mut sums = [_mm512_setzero_pd(); 2];
                let blocks = x.len() / LANES;
                for b in 0..blocks {
                    // SAFETY: values b*16 .. b*16+16 are within `x` and `out`.
                    let a = unsafe {
                        let v = load_f32x16!($dtype, x.bytes.as_ptr().add(b * LANES * size));
                        let a = _mm512_abs_ps(v);
                        _mm512_storeu_ps(out.as_mut_ptr().add(b * LANES), a);
                        a
                    };
                    // NaN compares false: it clears `finite` and never becomes the max.
                    finite &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, largest);
                    max = _mm512_max_ps(a, max);
                    add_widened(&mut sums, a);
                }
                let (max, finite) = (_mm512_reduce_max_ps(max), finite == 0xFFFF);
                if blocks * LANES == x.len() {
                    return AbsStats {
                        max,
                        finite,
                        sum: add_lanes(&sums),
                    };
                }
                scalar::abs_into_from(x, blocks * LANES, out, (max, finite, store_lanes(&sums)))
            }
        };
    }

    abs_into!(abs_into_f32, F32);
    abs_into!(abs_into_bf16, BF16);
    abs_into!(abs_into_f16, F16);

    /// # Safety
    /// The processor must support the target features this function enables.
    #[target_feature(enable = "avx2,f16c,popcnt,avx512f,avx512bw,avx512vl")]
    #[must_use]
    #[inline]
    pub unsafe fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition {
        let (va, vl) = (_mm512_set1_ps(above), _mm512_set1_ps(at_least));
        let mut sums = [_mm512_setzero_pd(); 2];
        let mut between_sum = _mm512_setzero_ps();
        let (mut count_above, mut len) = (0usize, 0usize);
        let p = x.as_mut_ptr();
        // One vector of 16 values from `at`, of which those in `valid`.
        let mut step = |at: usize, valid: __mmask16| {
            // SAFETY: the valid values at .. at+16 are within `x`. So are the stored ones: they
            // start at `len <= at` and go over values already loaded; a whole vector stores 16,
            // up to `at + 16`, the rest only its values between.
            unsafe {
                let v = _mm512_maskz_loadu_ps(valid, p.add(at));
                let ma = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(valid, v, va);
                let mb = _mm512_mask_cmp_ps_mask::<_CMP_GE_OQ>(valid, v, vl) & !ma;
                // A masked-off lane adds nothing, as adding the zero of a masked-off value
                // would (the sums are never -0).
                let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                sums[0] = _mm512_mask_add_pd(
                    sums[0],
                    ma as __mmask8,
                    sums[0],
                    _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                );
                sums[1] = _mm512_mask_add_pd(
                    sums[1],
                    (ma >> 8) as __mmask8,
                    sums[1],
                    _mm512_cvtps_pd(upper),
                );
                between_sum = _mm512_mask_add_ps(between_sum, mb, between_sum, v);
                let packed = _mm512_maskz_compress_ps(mb, v);
                if valid == 0xFFFF {
                    _mm512_storeu_ps(p.add(len), packed);
                } else {
                    _mm512_mask_storeu_ps(
                        p.add(len),
                        ((1u32 << mb.count_ones()) - 1) as __mmask16,
                        packed,
                    );
                }
                len += mb.count_ones() as usize;
                count_above += ma.count_ones() as usize;
            }
        };
        let whole = x.len() / LANES * LANES;
        for at in (0..whole).step_by(LANES) {
            step(at, 0xFFFF);
        }
        if whole < x.len() {
            // The last vector is partial: its missing values are masked off.
            step(whole, ((1u32 << (x.len() - whole)) - 1) as __mmask16);
        }
        let between_sum = _mm256_add_ps(
            _mm512_castps512_ps256(between_sum),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(between_sum))),
        );
        Partition {
            above: Tail {
                sum: add_lanes(&sums),
                count: count_above,
            },
            between: Tail {
                sum: f64::from(super::avx2::add_lanes_f32(between_sum)),
                count: len,
            },
        }
    }
}
