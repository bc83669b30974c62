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

/// `sse` and `sum_sq` as float64 sums of the same squares: each error formed in float32 as the
/// kernel forms it, squared and added in float64.
fn float64_sums(x: &[f32], group_len: usize, groups: &[(f32, f32)], ties: Ties) -> (f64, f64) {
    let away = ties == Ties::Away;
    let (mut sse, mut sum_sq) = (0f64, 0f64);
    for (i, &v) in x.iter().enumerate() {
        let (inv, scale) = groups[(i / group_len).min(groups.len() - 1)];
        let y = v * inv;
        let d = if y > 0.5 || (away && y >= 0.5) {
            scale
        } else if y < -0.5 || (away && y <= -0.5) {
            -scale
        } else {
            0.0
        };
        let e = f64::from(v - d);
        sse += e * e;
        sum_sq += f64::from(v) * f64::from(v);
    }
    (sse, sum_sq)
}

/// Fails unless `stats` holds `sse` and `sum_sq` within `2^-20` (relative); `case` says which.
fn assert_within_bound(stats: &ryzq_core::ErrorStats, sse: f64, sum_sq: f64, case: &str) {
    let bound = 2f64.powi(-20);
    for (what, got, exact) in [("sse", stats.sse, sse), ("sum_sq", stats.sum_sq, sum_sq)] {
        assert!(
            (got - exact).abs() <= bound * exact,
            "{what} {got:e} against {exact:e}: {case}"
        );
    }
}

/// The sums stay within their documented bound, `2^-20` (relative) of float64 sums, at every
/// level and for weights of any magnitude: those whose squares float32 would lose (below its
/// normal range, or above its largest value, once scaled) are summed in float64 instead.
#[test]
fn statistics_are_within_their_bound_of_float64_sums() {
    let mut levels = simd_levels();
    levels.push(ryzq_core::SimdLevel::SCALAR);
    let mut rng = Rng(29);
    let group_len = 256;
    // (magnitude of the weights, their groups' quantizers as multiples of it or given)
    // Around 1e-20 a scale of 1 leaves squares near float32's smallest normal: some kept, some
    // below it.
    for magnitude in [
        1e-36f32, 1e-25, 3e-21, 1e-20, 3e-20, 1e-19, 1e-12, 1e-3, 1.0, 1e12, 1e25, 1e36,
    ] {
        let n = 7 * group_len;
        let x = rng.weights(n, magnitude);
        let absmean = |g: usize| {
            let part = &x[g * group_len..(g + 1) * group_len];
            let mean = part.iter().map(|v| f64::from(v.abs())).sum::<f64>() / group_len as f64;
            let scale = mean as f32;
            (1.0 / scale, scale)
        };
        let cases: Vec<Vec<(f32, f32)>> = vec![
            // Scales that fit the weights.
            (0..7).map(absmean).collect(),
            // One scale far below the others: its group's squares fall far below the rest.
            (0..7)
                .map(|g| {
                    let (inv, scale) = absmean(g);
                    if g == 3 {
                        (inv * 1e20, scale * 1e-20)
                    } else {
                        (inv, scale)
                    }
                })
                .collect(),
            // Scales that do not fit at all: every weight far above or below its scale.
            vec![(1.0, 1.0); 7],
            // All-zero scales (zero codes), as absmax gives groups below 2^-128.
            vec![(0.0, 0.0); 7],
        ];
        for groups in cases {
            let (sse, sum_sq) = float64_sums(&x, group_len, &groups, Ties::Even);
            for &level in &levels {
                let mut codes = vec![0i8; n];
                let stats = ternarize::ternarize_groups(
                    level,
                    Raw::f32(&x),
                    group_len,
                    &groups,
                    Ties::Even,
                    &mut codes,
                );
                let case = format!(
                    "weights of {magnitude:e}, {level:?}, quantizers {:?}",
                    &groups[..2]
                );
                assert_within_bound(&stats, sse, sum_sq, &case);
            }
        }
    }
}

/// The same bound for one group whose length is no multiple of the window or of 16 (a window
/// left open, a scalar tail), in every stored type and both tie roundings.
#[test]
fn statistics_of_a_tail_are_within_their_bound() {
    let mut levels = simd_levels();
    levels.push(ryzq_core::SimdLevel::SCALAR);
    let mut rng = Rng(31);
    for magnitude in [1e-30f32, 1e-20, 1e-3, 1.0, 1e30] {
        let n = 1000;
        let x = rng.weights(n, magnitude);
        for (inv, scale) in [(1.0 / magnitude, magnitude), (1.0, 1.0)] {
            for (dtype, bytes) in stored(&x) {
                let raw = Raw::new(&bytes[1..], dtype);
                let mut widened = vec![0f32; n];
                ryzq_core::kernels::widen::widen(
                    ryzq_core::SimdLevel::SCALAR,
                    dtype,
                    raw.bytes,
                    &mut widened,
                );
                if widened.iter().any(|v| !v.is_finite()) {
                    continue; // beyond float16's range: such weights are refused before this
                }
                for ties in [Ties::Even, Ties::Away] {
                    let (sse, sum_sq) = float64_sums(&widened, n, &[(inv, scale)], ties);
                    for &level in &levels {
                        let mut codes = vec![0i8; n];
                        let stats = ternarize::ternarize(level, raw, inv, scale, ties, &mut codes);
                        let case = format!(
                            "{magnitude:e}, {dtype:?}, {ties:?}, {level:?}, quantizer \
                             ({inv:e}, {scale:e})"
                        );
                        assert_within_bound(&stats, sse, sum_sq, &case);
                    }
                }
            }
        }
    }
}
