//! `kernels::widen` (float16 / bfloat16 to float32) at every supported SIMD level against its
//! scalar reference, bit for bit.

mod common;

use common::{LENGTHS, Rng, simd_levels};
use ryzq_core::kernels::widen;
use ryzq_core::{FloatDType, SimdLevel};

#[test]
fn widen_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(3);
    for n in LENGTHS {
        let bytes: Vec<u8> = (0..2 * n).map(|_| rng.next() as u8).collect();
        for dtype in [FloatDType::F16, FloatDType::BF16] {
            let mut expected = vec![0f32; n];
            widen::widen(SimdLevel::SCALAR, dtype, &bytes, &mut expected);
            for &level in &levels {
                let mut got = vec![0f32; n];
                widen::widen(level, dtype, &bytes, &mut got);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                // NaN payloads may differ between conversions; every other value is exact.
                let (e, g): (Vec<_>, Vec<_>) = bits(&expected)
                    .into_iter()
                    .zip(bits(&got))
                    .filter(|(e, _)| !f32::from_bits(*e).is_nan())
                    .unzip();
                assert_eq!(g, e, "n={n} {dtype:?} {level:?}");
            }
        }
    }
}
