//! The compute kernels. Each file holds one kernel family: its scalar reference first, then the
//! AVX2 and AVX-512 versions, which tests hold to the scalar result bit for bit.
//!
//! Reductions accumulate in 16 float64 lanes, element `i` of a call always into lane `i % 16`,
//! and add the lanes in order at the end. Every level does exactly the same additions, so the
//! statistics (and the absmean scale) do not depend on the level or on the number of threads.

pub mod band;
pub mod expand;
pub mod partition;
pub mod reduce;
pub mod ternarize;
pub mod widen;

use crate::dtype::FloatDType;

/// Stored weights: the little-endian bytes of one float type, at any alignment (a memory-mapped
/// file gives no alignment). Kernels read them directly, widening in registers.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub bytes: &'a [u8],
    pub dtype: FloatDType,
}

impl<'a> Raw<'a> {
    #[must_use]
    pub fn new(bytes: &'a [u8], dtype: FloatDType) -> Self {
        assert_eq!(bytes.len() % dtype.size(), 0, "whole values");
        Self { bytes, dtype }
    }

    /// Float32 values, as raw bytes.
    #[must_use]
    pub fn f32(values: &'a [f32]) -> Self {
        Self::new(bytemuck::cast_slice(values), FloatDType::F32)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The values `range`.
    #[must_use]
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let size = self.dtype.size();
        Self {
            bytes: &self.bytes[range.start * size..range.end * size],
            dtype: self.dtype,
        }
    }
}

/// Number of float64 accumulators of every reduction.
pub const LANES: usize = 16;

/// Adds reduction lanes in their fixed order.
#[must_use]
pub fn sum_lanes(lanes: &[f64; LANES]) -> f64 {
    lanes.iter().fold(0.0, |acc, &v| acc + v)
}

/// How far ahead of its reads a kernel that streams a whole tensor (the first pass of a scale)
/// asks for the data it will read next. The processor's own prefetcher follows such a stream
/// too late on some machines: asking 8 KiB ahead made absmean per tensor 1.5x faster on an
/// Intel Xeon with AVX-512 (`benches/bench_quantize.py`).
pub(crate) const PREFETCH_AHEAD: usize = 8 * 1024;

/// Asks the processor to bring the cache line at `p` into L2, without waiting for it. A
/// prefetch never faults, so `p` may lie past the end of the data.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn prefetch_l2(p: *const u8) {
    // SAFETY: PREFETCHT1 is part of SSE, which every x86_64 processor has, and reads nothing.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast()) };
}

/// Dispatches to a kernel's version for `level`.
///
/// `$scalar`, `$avx2` and `$avx512` are paths to functions with the same signature; the SIMD ones
/// are `#[target_feature]` functions of the `avx2` / `avx512` modules of the kernel's file.
macro_rules! dispatch {
    ($level:expr, $scalar:path, $avx2:path, $avx512:path, ($($arg:expr),*)) => {{
        match $level.level() {
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Level::Avx2 => {
                // SAFETY: a `SimdLevel` of `Avx2` exists only when the processor supports AVX2,
                // F16C and POPCNT (`SimdLevel::supported`), the features `$avx2` is compiled for.
                unsafe { $avx2($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Level::Avx512 => {
                // SAFETY: a `SimdLevel` of `Avx512` exists only when the processor supports
                // AVX-512 F/BW/VL besides the AVX2 level's features, which `$avx512` is compiled
                // for.
                unsafe { $avx512($($arg),*) }
            }
            _ => $scalar($($arg),*),
        }
    }};
}
pub(crate) use dispatch;
