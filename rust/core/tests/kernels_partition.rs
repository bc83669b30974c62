//! `kernels::partition` (the passes of the optimal scale's search) at every supported SIMD level
//! against its scalar reference, bit for bit.

mod common;

use common::{LENGTHS, Rng, simd_levels, stored};
use ryzq_core::kernels::{Raw, partition};

#[test]
fn abs_into_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(11);
    for n in LENGTHS {
        let mut x = rng.weights(n, 0.5);
        if n > 20 {
            x[n / 3] = f32::INFINITY;
        }
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let mut expected = vec![0f32; n];
            let stats = partition::scalar::abs_into(raw, &mut expected);
            assert_eq!(stats.finite, n <= 20, "infinity is flagged");
            for &level in &levels {
                let mut got = vec![0f32; n];
                let s = partition::abs_into(level, raw, &mut got);
                assert_eq!(bits(&got), bits(&expected), "n={n} {dtype:?} {level:?}");
                assert_eq!(s.finite, stats.finite);
                if stats.finite {
                    assert_eq!(s, stats, "n={n} {dtype:?} {level:?}");
                }
            }
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn partition_matches_scalar_and_keeps_the_values_between_in_order() {
    let levels = simd_levels();
    let mut rng = Rng(12);
    for n in LENGTHS {
        let x: Vec<f32> = rng.weights(n, 1.0).iter().map(|v| v.abs()).collect();
        // Thresholds on values of x (exact ties), between them, and beyond all of them.
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        let mut cuts = vec![(0.0, 0.0), (4.0, 0.0), (0.25, 0.5), (4.0, 5.0)];
        if n > 3 {
            cuts.push((sorted[n * 3 / 4], sorted[n / 4]));
            cuts.push((sorted[n / 2], sorted[n / 2]));
        }
        for (above, at_least) in cuts {
            let mut expected = x.clone();
            let p = partition::scalar::partition(&mut expected, above, at_least);
            let between: Vec<f32> = x
                .iter()
                .copied()
                .filter(|&v| v <= above && v >= at_least)
                .collect();
            assert_eq!(bits(&expected[..p.between.count]), bits(&between));
            assert_eq!(p.above.count, x.iter().filter(|&&v| v > above).count());
            let sum: f64 = x
                .iter()
                .filter(|&&v| v > above)
                .map(|&v| f64::from(v))
                .sum();
            assert!((p.above.sum - sum).abs() <= 1e-12 * sum.max(1.0));
            for &level in &levels {
                let mut got = x.clone();
                let q = partition::partition(level, &mut got, above, at_least);
                assert_eq!(q, p, "n={n} {level:?} ({above}, {at_least})");
                assert_eq!(
                    bits(&got[..q.between.count]),
                    bits(&between),
                    "n={n} {level:?}"
                );
            }
        }
    }
}
