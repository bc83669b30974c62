//! `kernels::reduce` (sum and max of |w|) at every supported SIMD level against its scalar
//! reference, bit for bit.

mod common;

use common::{LENGTHS, Rng, simd_levels, stored};
use ryzq_core::kernels::{Raw, reduce};

#[test]
fn abs_sum_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(1);
    for n in LENGTHS {
        let x = rng.weights(n, 0.02);
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let expected = reduce::scalar::abs_sum(raw);
            for &level in &levels {
                let got = reduce::abs_sum(level, raw);
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "n={n} {dtype:?} {level:?}"
                );
            }
        }
    }
}

#[test]
fn abs_max_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(9);
    for n in LENGTHS {
        let mut x = rng.weights(n, 0.5);
        if n > 20 {
            x[n / 2] = f32::NAN;
        }
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let expected = reduce::max_scalar::abs_max(raw);
            assert_eq!(expected.1, n <= 20, "NaN is flagged");
            for &level in &levels {
                let got = reduce::abs_max(level, raw);
                assert_eq!(
                    got.0.to_bits(),
                    expected.0.to_bits(),
                    "n={n} {dtype:?} {level:?}"
                );
                assert_eq!(got.1, expected.1);
            }
        }
    }
}
