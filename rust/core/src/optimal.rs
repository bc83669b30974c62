//! The least-squares ternary scale of a group, without sorting all of it.
//!
//! With `|w|` sorted in decreasing order and `S_k` the sum of the `k` largest, the optimum is
//! the `k` maximizing `S_k^2 / k` (see [`TernaryScale::optimal`]). Two exact searches find it.
//!
//! Groups below [`HISTOGRAM_MIN`] values bracket the optimal scale `a*`. For a scale `a`, let
//! `U(a)` be the mean of the values `> a / 2` and `L(a)` that of the values `>= a / 2`; both
//! grow with `a`. The optimum's chosen values are all those above `a* / 2` and possibly some
//! equal to it, with mean `a*`, so `L(a*) <= a* <= U(a*)`. Hence if `hi >= a*` then
//! `U(hi) >= U(a*) >= a*`, and if `lo <= a*` then `L(lo) <= a*`. The search starts from
//! `hi = max |w|` and `lo = mean |w|` (which is `L(0)`). Each pass partitions the values still
//! between `lo / 2` and `hi / 2`: those above `hi / 2` are surely chosen (and summed in
//! float64), those below `lo / 2` surely not; the sums give the next `U(hi)` and `L(lo)`,
//! rounded outwards by more than their error (the sum of the values between, which only moves
//! `lo`, is float32). The values left between the bounds shrink about twofold each pass; once
//! at most 16 are left, a sorting network finds the best of their boundaries
//! ([`crate::kernels::band`]). The groups of a call are searched in lockstep, so that one
//! group's arithmetic overlaps the next group's pass, and the search is compiled once per SIMD
//! level with its kernels inlined.
//!
//! Larger groups use a histogram of `|w|` by its top 16 bits (exponent and 7 mantissa bits:
//! buckets 0.4% wide), which gives `S_k` exactly at every bucket boundary; inside a bucket of
//! values at most `hi`, no `k` can beat `max((S + hi)^2 / (K + 1), (S + c hi)^2 / (K + c))`
//! (the bound is convex in the count `c` taken, so its maximum is at an end). Only the buckets
//! whose bound beats the best boundary are sorted.

// The search is compiled once per SIMD level, its parts inlined into that level's function:
// only there do they get its instructions.
#![allow(clippy::inline_always)]

use std::cell::Cell;

use rayon::prelude::*;

use crate::dtype::FloatDType;
use crate::kernels::band::{self, BAND_MAX};
use crate::kernels::partition::{self, AbsStats, Partition, Tail};
use crate::kernels::widen::for_each_chunk;
use crate::kernels::{Raw, dispatch};
use crate::method::TernaryScale;
use crate::simd::SimdLevel;

/// Groups at least this large use the histogram; smaller ones are bracketed.
pub const HISTOGRAM_MIN: usize = 1 << 20;

/// The exact least-squares quantizers of the consecutive groups of `group_len` values that
/// make up `x` (`None` if a value is not finite).
#[must_use]
pub fn optimal_scales(level: SimdLevel, x: Raw<'_>, group_len: usize) -> Option<Vec<TernaryScale>> {
    if group_len >= HISTOGRAM_MIN {
        (0..x.len() / group_len)
            .map(|g| optimal_scale_by_histogram(x.slice(g * group_len..(g + 1) * group_len)))
            .collect()
    } else {
        optimal_scales_by_bracketing(level, x, group_len)
    }
}

thread_local! {
    /// `|w|` of the groups of a call, reused from call to call.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Passes at most; then the values left between the bounds are sorted, however many.
const MAX_PASSES: usize = 12;
/// Values between the bounds few enough to search at once rather than take another pass.
const FEW: usize = BAND_MAX;
/// More than the relative error of a bound: the float64 sums (at most 2^20 values, within
/// 2^-32), then their rounding to float32, the float32 quotient and the product by this (each
/// within 2^-24).
const MARGIN: f32 = 1.0 / (1u32 << 20) as f32;
/// Groups whose `max |w|` lies outside this range are sorted instead: in it, every bound
/// (within `[max / n, max]`) halves exactly.
const BRACKETED_MAX: std::ops::RangeInclusive<f32> =
    f32::from_bits((127 - 100) << 23)..=f32::from_bits((127 + 100) << 23);

/// An upper bound of the mean `sum / count` (`sum > 0`, `count > 0`), in float32: a float32
/// division waits less than a float64 one, and the search waits on it. Moved up by one step
/// without a test, since a branch on the rounding would be mispredicted half the time.
fn mean_up(sum: f64, count: usize) -> f32 {
    let mean = sum as f32 / count as f32 * (1.0 + MARGIN);
    f32::from_bits(mean.to_bits() + 1)
}

/// A lower bound of the mean `sum / count` (`sum >= 0`, `count > 0`), the same way.
fn mean_down(sum: f64, count: usize) -> f32 {
    let mean = sum as f32 / count as f32 * (1.0 - MARGIN);
    f32::from_bits(mean.to_bits().saturating_sub(1))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Search {
    /// Bounds still moving.
    Bracketing,
    /// The values between the bounds are the first `between.count` of the group's buffer.
    Bracketed,
    /// All values are zero.
    Zero,
    /// The group is sorted whole.
    Sort,
}

/// One group's search: the bounds `lo <= a* <= hi`, the values above `hi / 2` and those
/// between the bounds.
#[derive(Debug, Clone, Copy)]
struct Bracket {
    lo: f32,
    hi: f32,
    above: Tail,
    between: Tail,
    search: Search,
}

impl Bracket {
    fn new(stats: AbsStats, n: usize) -> Self {
        let search = if stats.max == 0.0 {
            Search::Zero
        } else if BRACKETED_MAX.contains(&stats.max) {
            Search::Bracketing
        } else {
            Search::Sort
        };
        Self {
            lo: mean_down(stats.sum, n),
            hi: stats.max,
            above: Tail::default(),
            between: Tail {
                sum: stats.sum,
                count: n,
            },
            search,
        }
    }

    /// One pass over the values between the bounds, `values` (the group's buffer).
    ///
    /// # Safety
    /// The processor must support `K`'s level.
    #[inline(always)]
    unsafe fn pass<K: Kernels>(&mut self, values: &mut [f32]) {
        // SAFETY: as this function's.
        let p = unsafe {
            K::partition(
                &mut values[..self.between.count],
                self.hi * 0.5,
                self.lo * 0.5,
            )
        };
        self.above.sum += p.above.sum;
        self.above.count += p.above.count;
        self.between = p.between;
        if self.between.count <= FEW {
            self.search = Search::Bracketed;
            return;
        }
        // `above` holds every value > hi / 2, since values dropped below an earlier `lo / 2`
        // are below `a* / 2 <= hi / 2`; likewise `above` and `between` every value >= lo / 2.
        let hi = self.hi.min(mean_up(self.above.sum, self.above.count));
        // The float32 sum of the values between is within (count / 16 + 4) * 2^-24 of theirs.
        let error = (self.between.count as f64 / 16.0 + 5.0) * f64::from(f32::EPSILON / 2.0);
        let chosen = self.above.sum + self.between.sum * (1.0 - error);
        let count = self.above.count + self.between.count;
        let lo = self.lo.max(mean_down(chosen, count));
        if (lo, hi) == (self.lo, self.hi) {
            self.search = Search::Bracketed;
        }
        (self.lo, self.hi) = (lo, hi);
    }

    /// # Safety
    /// The processor must support `K`'s level.
    #[inline(always)]
    unsafe fn finish<K: Kernels>(&self, values: &mut [f32]) -> TernaryScale {
        match self.search {
            Search::Zero => TernaryScale::from_optimum(0.0, 1),
            Search::Sort => {
                sort_decreasing(values);
                TernaryScale::optimal(values)
            }
            Search::Bracketing | Search::Bracketed => {
                let band = &mut values[..self.between.count];
                let (s0, k0) = (self.above.sum, self.above.count as u64);
                let (s, k) = if band.len() <= BAND_MAX {
                    // SAFETY: as this function's.
                    unsafe { K::best_boundary(band, s0, k0) }
                } else {
                    sort_decreasing(band);
                    let (_, s, k) = best_within(band, s0, k0);
                    (s, k)
                };
                TernaryScale::from_optimum(s, k)
            }
        }
    }
}

/// Sorts values `>= 0` from the largest, as integers: for them the order of the bits is the
/// order of the values.
fn sort_decreasing(values: &mut [f32]) {
    let bits: &mut [u32] = bytemuck::cast_slice_mut(values);
    bits.sort_unstable_by(|a, b| b.cmp(a));
}

/// The bracketing search of the module's description, for each group of `group_len` values.
fn optimal_scales_by_bracketing(
    level: SimdLevel,
    x: Raw<'_>,
    group_len: usize,
) -> Option<Vec<TernaryScale>> {
    dispatch!(
        level,
        bracketing::<ScalarKernels>,
        avx2_bracketing,
        avx512_bracketing,
        (x, group_len)
    )
}

/// The kernels of the search at one level. The search is compiled once per level with its
/// kernels inlined, so that neither a call nor a dispatch sits between the passes.
trait Kernels {
    /// # Safety
    /// The processor must support the level.
    unsafe fn abs_into(x: Raw<'_>, out: &mut [f32]) -> AbsStats;
    /// # Safety
    /// The processor must support the level.
    unsafe fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition;
    /// # Safety
    /// The processor must support the level.
    unsafe fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64);
}

struct ScalarKernels;

impl Kernels for ScalarKernels {
    #[inline(always)]
    unsafe fn abs_into(x: Raw<'_>, out: &mut [f32]) -> AbsStats {
        partition::scalar::abs_into(x, out)
    }
    #[inline(always)]
    unsafe fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition {
        partition::scalar::partition(x, above, at_least)
    }
    #[inline(always)]
    unsafe fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
        band::scalar::best_boundary(band, s0, k0)
    }
}

/// The kernels of one SIMD level, from the modules of that name.
macro_rules! simd_kernels {
    ($kernels:ident, $level:ident, $search:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        struct $kernels;

        #[cfg(target_arch = "x86_64")]
        impl Kernels for $kernels {
            #[inline(always)]
            unsafe fn abs_into(x: Raw<'_>, out: &mut [f32]) -> AbsStats {
                // SAFETY: the caller's processor supports the level.
                unsafe {
                    match x.dtype {
                        FloatDType::F32 => partition::$level::abs_into_f32(x, out),
                        FloatDType::BF16 => partition::$level::abs_into_bf16(x, out),
                        FloatDType::F16 => partition::$level::abs_into_f16(x, out),
                    }
                }
            }
            #[inline(always)]
            unsafe fn partition(x: &mut [f32], above: f32, at_least: f32) -> Partition {
                // SAFETY: the caller's processor supports the level.
                unsafe { partition::$level::partition(x, above, at_least) }
            }
            #[inline(always)]
            unsafe fn best_boundary(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
                // SAFETY: the caller's processor supports the level.
                unsafe { band::$level::best_boundary(band, s0, k0) }
            }
        }

        /// # Safety
        /// The processor must support the target features this function enables.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $search(x: Raw<'_>, group_len: usize) -> Option<Vec<TernaryScale>> {
            // SAFETY: the processor supports the level, whose features this function has.
            unsafe { bracketing_at::<$kernels>(x, group_len) }
        }
    };
}

simd_kernels!(Avx2Kernels, avx2, avx2_bracketing, "avx2,f16c,popcnt");
simd_kernels!(
    Avx512Kernels,
    avx512,
    avx512_bracketing,
    "avx2,f16c,popcnt,avx512f,avx512bw,avx512vl"
);

fn bracketing<K: Kernels>(x: Raw<'_>, group_len: usize) -> Option<Vec<TernaryScale>> {
    // SAFETY: only instantiated with the scalar kernels, which every processor runs.
    unsafe { bracketing_at::<K>(x, group_len) }
}

/// # Safety
/// The processor must support `K`'s level.
#[inline(always)]
unsafe fn bracketing_at<K: Kernels>(x: Raw<'_>, group_len: usize) -> Option<Vec<TernaryScale>> {
    // Taken out of the thread-local for the call (a closure would not inherit this function's
    // target features), and put back after.
    let mut scratch = SCRATCH.take();
    if scratch.len() < x.len() {
        scratch.resize(x.len(), 0.0);
    }
    let groups = x.len() / group_len;
    let mut brackets = Vec::with_capacity(groups);
    let mut finite = true;
    for (g, abs) in scratch[..x.len()].chunks_exact_mut(group_len).enumerate() {
        // SAFETY: as this function's.
        let stats = unsafe { K::abs_into(x.slice(g * group_len..(g + 1) * group_len), abs) };
        finite &= stats.finite;
        brackets.push(Bracket::new(stats, group_len));
    }
    let mut scales = None;
    if finite {
        for _ in 0..MAX_PASSES {
            let mut searching = false;
            for (b, values) in brackets.iter_mut().zip(scratch.chunks_exact_mut(group_len)) {
                if b.search == Search::Bracketing {
                    // SAFETY: as this function's.
                    unsafe { b.pass::<K>(values) };
                    searching |= b.search == Search::Bracketing;
                }
            }
            if !searching {
                break;
            }
        }
        let mut found = Vec::with_capacity(groups);
        for (b, values) in brackets.iter().zip(scratch.chunks_exact_mut(group_len)) {
            // SAFETY: as this function's.
            found.push(unsafe { b.finish::<K>(values) });
        }
        scales = Some(found);
    }
    SCRATCH.set(scratch);
    scales
}

const BUCKETS: usize = 1 << 15;
/// Buckets from here on hold infinities and NaNs.
const NON_FINITE: usize = 0x7F80;
/// Values per histogram chunk; chunks are merged in order, so the sums do not depend on the
/// number of threads.
const CHUNK_VALUES: usize = 1 << 18;

fn bucket(v: f32) -> usize {
    (v.abs().to_bits() >> 16) as usize
}

struct Histogram {
    counts: Vec<u64>,
    sums: Vec<f64>,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            sums: vec![0.0; BUCKETS],
        }
    }

    fn of(x: Raw<'_>) -> Self {
        let mut h = Self::new();
        for_each_chunk(x, |values| {
            for &v in values {
                let b = bucket(v);
                h.counts[b] += 1;
                h.sums[b] += f64::from(v.abs());
            }
        });
        h
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
    }
}

/// `(gain, S, k)` of the best boundary from `k0` values summing to `s0` (if `k0 > 0`) through
/// the sorted values `sorted` taken after them; `sorted` must all be smaller than those `k0`.
fn best_within(sorted: &[f32], s0: f64, k0: u64) -> (f64, f64, u64) {
    let (mut best, mut best_s, mut best_k) = (f64::NEG_INFINITY, 0.0, 1);
    if k0 > 0 {
        (best, best_s, best_k) = (s0 * s0 / k0 as f64, s0, k0);
    }
    let mut s = s0;
    for (i, &v) in sorted.iter().enumerate() {
        s += f64::from(v);
        if sorted
            .get(i + 1)
            .is_some_and(|next| next.to_bits() == v.to_bits())
        {
            continue;
        }
        let k = k0 + i as u64 + 1;
        let gain = s * s / k as f64;
        if gain > best {
            (best, best_s, best_k) = (gain, s, k);
        }
    }
    (best, best_s, best_k)
}

/// The exact least-squares quantizer of `x` (`None` if a value is not finite).
#[must_use]
pub fn optimal_scale_by_histogram(x: Raw<'_>) -> Option<TernaryScale> {
    let chunks: Vec<Histogram> = (0..x.len())
        .step_by(CHUNK_VALUES)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| Histogram::of(x.slice(start..(start + CHUNK_VALUES).min(x.len()))))
        .collect();
    let mut h = Histogram::new();
    for c in &chunks {
        h.merge(c);
    }
    if h.counts[NON_FINITE..].iter().any(|&c| c > 0) {
        return None;
    }

    // Exact gains at bucket boundaries, and the buckets whose inside could beat them.
    let (mut best, mut best_s, mut best_k) = (0.0f64, 0.0f64, 1u64);
    let (mut s, mut k) = (0.0f64, 0u64);
    let mut open = Vec::new();
    for b in (0..NON_FINITE).rev() {
        let c = h.counts[b];
        if c == 0 {
            continue;
        }
        let hi = f64::from(f32::from_bits(((b as u32 + 1) << 16) - 1));
        let bound = |m: u64| (s + m as f64 * hi).powi(2) / (k + m) as f64;
        open.push((b, s, k, bound(1).max(bound(c))));
        s += h.sums[b];
        k += c;
        let gain = s * s / k as f64;
        if gain > best {
            (best, best_s, best_k) = (gain, s, k);
        }
    }
    let candidates: Vec<(usize, f64, u64)> = open
        .into_iter()
        .filter(|&(_, _, _, bound)| bound > best)
        .map(|(b, s, k, _)| (b, s, k))
        .collect();
    if !candidates.is_empty() {
        let mut values: Vec<Vec<u32>> = vec![Vec::new(); candidates.len()];
        // The candidates lie between these buckets, and most values outside them: one
        // unsigned comparison tells, whose branch is rarely taken (two, one per side, would be
        // taken at random).
        let first = candidates.iter().map(|&(c, _, _)| c).min().unwrap_or(0);
        let span = candidates.iter().map(|&(c, _, _)| c).max().unwrap_or(0) - first;
        for_each_chunk(x, |chunk| {
            for &v in chunk {
                let b = bucket(v);
                if b.wrapping_sub(first) <= span
                    && let Some(i) = candidates.iter().position(|&(c, _, _)| c == b)
                {
                    values[i].push(v.abs().to_bits());
                }
            }
        });
        for ((_, s0, k0), mut bits) in candidates.into_iter().zip(values) {
            bits.sort_unstable_by(|a, b| b.cmp(a));
            let sorted: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
            let (gain, s, k) = best_within(&sorted, s0, k0);
            if gain > best {
                (best, best_s, best_k) = (gain, s, k);
            }
        }
    }
    Some(TernaryScale::from_optimum(best_s, best_k))
}
