//! The least-squares ternary scale of a large group, without sorting all of it.
//!
//! With `|w|` sorted in decreasing order and `S_k` the sum of the `k` largest, the optimum is
//! the `k` maximizing `S_k^2 / k` (see [`TernaryScale::optimal`]). A histogram of `|w|` by its
//! top 16 bits (exponent and 7 mantissa bits: buckets 0.4% wide) gives `S_k` exactly at every
//! bucket boundary; inside a bucket of values at most `hi`, no `k` can beat
//! `max((S + hi)^2 / (K + 1), (S + c hi)^2 / (K + c))` (the bound is convex in the count `c`
//! taken, so its maximum is at an end). Only the buckets whose bound beats the best boundary
//! are sorted. The result is the exact optimum, summed in bucket order.

use rayon::prelude::*;

use crate::kernels::Raw;
use crate::kernels::widen::for_each_chunk;
use crate::method::TernaryScale;

/// Groups at least this large use the histogram; smaller ones are sorted.
pub const HISTOGRAM_MIN: usize = 1 << 20;

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

/// `(gain, S, k)` of the best boundary among the sorted values `sorted` taken after `k0`
/// values summing to `s0`.
fn best_within(sorted: &[f32], s0: f64, k0: u64) -> (f64, f64, u64) {
    let (mut best, mut best_s, mut best_k) = (f64::NEG_INFINITY, 0.0, 1);
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
        for_each_chunk(x, |chunk| {
            for &v in chunk {
                let b = bucket(v);
                if let Some(i) = candidates.iter().position(|&(c, _, _)| c == b) {
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
