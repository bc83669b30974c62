//! `kernels::band` (the best boundary among the last values of the optimal scale's search) at
//! every supported SIMD level against its scalar reference and its definition.

// These tests check exact, bit-for-bit results.
#![allow(clippy::float_cmp)]

mod common;

use common::{Rng, simd_levels};
use ryzq_core::kernels::band;

/// The best boundary by definition, without sorting: each value stands for the boundary below
/// all values at least as large.
fn best_boundary_by_definition(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
    let mut best = (f64::NEG_INFINITY, 0.0, 1u64);
    if k0 > 0 {
        best = (s0 * s0 / k0 as f64, s0, k0);
    }
    for &v in band {
        let taken: Vec<f32> = band.iter().copied().filter(|&u| u >= v).collect();
        let s = s0 + taken.iter().map(|&u| f64::from(u)).sum::<f64>();
        let k = k0 + taken.len() as u64;
        let gain = s * s / k as f64;
        // The largest gain, and of equal gains the fewest values.
        if gain > best.0 || (gain == best.0 && k < best.2) {
            best = (gain, s, k);
        }
    }
    (best.1, best.2)
}

#[test]
fn best_boundary_matches_scalar_and_its_definition() {
    let levels = simd_levels();
    let mut rng = Rng(15);
    for len in 0..=band::BAND_MAX {
        for case in 0..200 {
            // Values within a factor 2^10 of each other, as a bracketed band's are (their sums
            // are exact), with ties; the values above the band larger than all of them.
            let band: Vec<f32> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    let mantissa = if case % 3 == 0 { r % 4 } else { r % 4096 } as f32;
                    (1.0 + mantissa / 4096.0) * f32::powi(2.0, (r >> 20) as i32 % 10 - 5)
                })
                .collect();
            let k0 = if case % 5 == 0 {
                0
            } else {
                rng.next() % 40 + 1
            };
            let s0 = k0 as f64 * (64.0 + (rng.next() % 1000) as f64 / 7.0);
            let expected = band::scalar::best_boundary(&band, s0, k0);
            assert_eq!(
                expected,
                best_boundary_by_definition(&band, s0, k0),
                "{band:?} {s0} {k0}"
            );
            for &level in &levels {
                let got = band::best_boundary(level, &band, s0, k0);
                assert_eq!(got, expected, "{band:?} {s0} {k0} {level:?}");
            }
        }
    }
}
