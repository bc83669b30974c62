//! The histogram search for the least-squares scale agrees with sorting everything.

use ryzq_core::TernaryScale;
use ryzq_core::kernels::Raw;
use ryzq_core::optimal::{HISTOGRAM_MIN, optimal_scale_by_histogram};

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
