//! `kernels::ternarize` (codes and fused error statistics) at every supported SIMD level against
//! its scalar reference and the formula, bit for bit.

mod common;

use common::{LENGTHS, Rng, simd_levels, stored};
use ryzq_core::kernels::{Raw, ternarize};
use ryzq_core::method::Ties;

#[test]
fn ternarize_matches_scalar_and_the_formula() {
    let levels = simd_levels();
    let mut rng = Rng(2);
    for n in LENGTHS {
        let x = rng.weights(n, 1.0);
        let (inv, scale) = (1.0f32, 1.0f32);
        for ties in [Ties::Even, Ties::Away] {
            let away = ties == Ties::Away;
            let mut formula_codes = vec![0i8; n];
            let _ =
                ternarize::scalar::ternarize(Raw::f32(&x), inv, scale, away, &mut formula_codes);
            for (&v, &c) in x.iter().zip(&formula_codes) {
                let y = v * inv;
                // round_ties_even is torch's round; round is C's lroundf (ties away from zero).
                let rounded = if away { y.round() } else { y.round_ties_even() };
                assert_eq!(c, rounded.clamp(-1.0, 1.0) as i8, "value {v}, {ties:?}");
            }
            for (dtype, bytes) in stored(&x) {
                let raw = Raw::new(&bytes[1..], dtype);
                let mut expected = vec![0i8; n];
                let stats = ternarize::scalar::ternarize(raw, inv, scale, away, &mut expected);
                for &level in &levels {
                    let mut codes = vec![0i8; n];
                    let got = ternarize::ternarize(level, raw, inv, scale, ties, &mut codes);
                    assert_eq!(codes, expected, "n={n} {dtype:?} {level:?} {ties:?}");
                    assert_eq!(got, stats, "n={n} {dtype:?} {level:?} {ties:?}");
                }
            }
        }
    }
}

#[test]
fn grouped_ternarize_matches_scalar_and_one_call_per_group() {
    let levels = simd_levels();
    let mut rng = Rng(12);
    for (groups, group_len) in [(1, 40), (3, 16), (5, 128), (64, 256)] {
        let n = groups * group_len;
        let x = rng.weights(n, 0.3);
        let quantizers: Vec<(f32, f32)> = (0..groups)
            .map(|g| (1.0 + g as f32 * 0.25, 0.5 + g as f32 * 0.1))
            .collect();
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let mut expected = vec![0i8; n];
            let stats = ternarize::scalar::ternarize_groups(
                raw,
                group_len,
                &quantizers,
                false,
                &mut expected,
            );
            // The same codes as quantizing each group on its own.
            for (g, &(inv, scale)) in quantizers.iter().enumerate() {
                let range = g * group_len..(g + 1) * group_len;
                let mut one = vec![0i8; group_len];
                let _ = ternarize::scalar::ternarize(
                    raw.slice(range.clone()),
                    inv,
                    scale,
                    false,
                    &mut one,
                );
                assert_eq!(one, expected[range]);
            }
            for &level in &levels {
                let mut codes = vec![0i8; n];
                let got = ternarize::ternarize_groups(
                    level,
                    raw,
                    group_len,
                    &quantizers,
                    Ties::Even,
                    &mut codes,
                );
                assert_eq!(codes, expected, "{groups}x{group_len} {dtype:?} {level:?}");
                assert_eq!(got, stats, "{groups}x{group_len} {dtype:?} {level:?}");
            }
        }
    }
}
