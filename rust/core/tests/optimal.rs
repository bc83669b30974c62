//! The bracketing and histogram searches for the least-squares scale agree with sorting
//! everything.

use ryzq_core::kernels::Raw;
use ryzq_core::optimal::{HISTOGRAM_MIN, optimal_scale_by_histogram, optimal_scales};
use ryzq_core::{SimdLevel, TernaryScale};

fn by_sorting(values: &[f32]) -> TernaryScale {
    let mut sorted: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    TernaryScale::optimal(&sorted)
}

/// xorshift64*: reproducible inputs without a dependency.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
}

fn sse(values: &[f32], q: TernaryScale) -> f64 {
    values
        .iter()
        .map(|&v| {
            let y = v * q.inv;
            let d = if y > 0.5 {
                q.scale
            } else if y < -0.5 {
                -q.scale
            } else {
                0.0
            };
            (f64::from(v) - f64::from(d)).powi(2)
        })
        .sum()
}

#[test]
fn histogram_search_finds_the_sorted_optimum() {
    let n = HISTOGRAM_MIN + 12_345;
    let mut state = 7u64;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        (
            "normal-ish",
            (0..n)
                .map(|_| (0..4).map(|_| uniform(&mut state)).sum::<f32>() - 2.0)
                .collect(),
        ),
        (
            "ternary with noise",
            (0..n)
                .map(|i| ((i % 3) as f32 - 1.0) * 0.02 + (uniform(&mut state) - 0.5) * 1e-3)
                .collect(),
        ),
        (
            "few values",
            (0..n).map(|i| [0.0, 0.5, -0.5, 1.0][i % 4]).collect(),
        ),
        ("zeros", vec![0.0; n]),
        (
            "heavy tail",
            (0..n)
                .map(|_| {
                    let u = uniform(&mut state).max(1e-6);
                    (1.0 / u).min(1e4) * if uniform(&mut state) < 0.5 { -1.0 } else { 1.0 }
                })
                .collect(),
        ),
    ];
    for (name, values) in cases {
        let sorted = by_sorting(&values);
        let histogram = optimal_scale_by_histogram(Raw::f32(&values)).expect("finite");
        let (a, b) = (sse(&values, sorted), sse(&values, histogram));
        // The same optimum; the sums differ only in their order of addition.
        assert!((a - b).abs() <= 1e-9 * a.max(1e-30), "{name}: {a} vs {b}");
        let rel = (sorted.scale - histogram.scale).abs() / sorted.scale.max(f32::MIN_POSITIVE);
        assert!(rel <= 1e-6, "{name}: {sorted:?} vs {histogram:?}");
    }
}

#[test]
fn histogram_search_refuses_non_finite_values() {
    let mut values = vec![1.0f32; HISTOGRAM_MIN];
    values[12] = f32::NAN;
    assert!(optimal_scale_by_histogram(Raw::f32(&values)).is_none());
    values[12] = f32::INFINITY;
    assert!(optimal_scale_by_histogram(Raw::f32(&values)).is_none());
}

/// Groups that make the bracketing work hard: spurious fixed points (outliers), ties on the
/// thresholds, magnitudes where it falls back to sorting.
fn hard_groups(n: usize, state: &mut u64) -> Vec<(&'static str, Vec<f32>)> {
    let sign = |state: &mut u64| if uniform(state) < 0.5 { -1.0 } else { 1.0 };
    vec![
        (
            "normal-ish",
            (0..n)
                .map(|_| (0..4).map(|_| uniform(state)).sum::<f32>() - 2.0)
                .collect(),
        ),
        (
            "heavy tail",
            (0..n)
                .map(|_| (1.0 / uniform(state).max(1e-6)).min(1e4) * sign(state))
                .collect(),
        ),
        (
            "one outlier",
            (0..n)
                .map(|i| {
                    if i == n / 3 {
                        50.0
                    } else {
                        uniform(state) - 0.5
                    }
                })
                .collect(),
        ),
        (
            "ternary with noise",
            (0..n)
                .map(|i| ((i % 3) as f32 - 1.0) * 0.02 + (uniform(state) - 0.5) * 1e-3)
                .collect(),
        ),
        (
            "few values",
            (0..n).map(|i| [0.0, 0.5, -0.5, 1.0, 2.0][i % 5]).collect(),
        ),
        (
            "sparse",
            (0..n)
                .map(|_| {
                    if uniform(state) < 0.1 {
                        uniform(state)
                    } else {
                        0.0
                    }
                })
                .collect(),
        ),
        ("one value", (0..n).map(|_| -0.75).collect()),
        ("zeros", vec![0.0; n]),
        (
            "tiny",
            (0..n).map(|_| (uniform(state) - 0.5) * 1e-33).collect(),
        ),
        (
            "huge",
            (0..n).map(|_| (uniform(state) - 0.5) * 1e33).collect(),
        ),
    ]
}

#[test]
fn bracketing_finds_the_sorted_optimum_at_every_level() {
    let mut state = 11u64;
    for n in [1, 2, 3, 7, 16, 31, 32, 100, 128, 256, 1000, 4096, 70_000] {
        for (name, values) in hard_groups(n, &mut state) {
            let sorted = by_sorting(&values);
            let reference =
                optimal_scales(SimdLevel::SCALAR, Raw::f32(&values), n).expect("finite");
            let got = reference[0];
            let (a, b) = (sse(&values, sorted), sse(&values, got));
            assert!(b <= a * (1.0 + 1e-9) + 1e-300, "{name} n={n}: {a} vs {b}");
            let rel = (sorted.scale - got.scale).abs() / sorted.scale.max(f32::MIN_POSITIVE);
            assert!(rel <= 1e-6, "{name} n={n}: {sorted:?} vs {got:?}");
            for level in SimdLevel::supported() {
                let at_level = optimal_scales(level, Raw::f32(&values), n).expect("finite");
                assert_eq!(at_level, reference, "{name} n={n} {level:?}");
            }
        }
    }
}

#[test]
fn bracketing_many_groups_equals_one_group_at_a_time() {
    let mut state = 5u64;
    let values: Vec<f32> = hard_groups(128, &mut state)
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect();
    for level in SimdLevel::supported() {
        let together = optimal_scales(level, Raw::f32(&values), 128).expect("finite");
        for (g, q) in together.iter().enumerate() {
            let alone = optimal_scales(level, Raw::f32(&values[g * 128..(g + 1) * 128]), 128);
            assert_eq!(alone.expect("finite"), vec![*q], "group {g} {level:?}");
        }
    }
    let mut bad = values.clone();
    bad[300] = f32::NAN;
    assert!(optimal_scales(SimdLevel::SCALAR, Raw::f32(&bad), 128).is_none());
}
