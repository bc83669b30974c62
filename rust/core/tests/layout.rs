//! Every layout of the registry (`Layout::ALL`): pack and unpack at every supported SIMD level
//! give the scalar bytes and codes, and round trip.

mod common;

use common::{Rng, simd_levels};
use ryzq_core::{Layout, SimdLevel};

#[test]
fn layouts_pack_and_unpack_match_scalar_and_round_trip() {
    let levels = simd_levels();
    let mut rng = Rng(5);
    let shapes: [&[usize]; 14] = [
        &[3, 80],
        &[1, 64],
        &[5, 320],
        &[7, 192],
        &[4],
        &[8, 1],
        &[16, 33],
        &[4, 5000],
        &[64, 300],
        &[12, 7],
        &[20_000],
        &[4, 4100],
        &[3, 512],
        &[16_384 + 256],
    ];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let codes = rng.codes(n);
        for &layout in Layout::ALL {
            if layout.get().packed_shape(shape).is_err() {
                continue;
            }
            let scales = layout.get().block().map(|b| vec![0.5f32; n / b]);
            let expected =
                ryzq_core::pack(&codes, shape, layout, scales.as_deref(), SimdLevel::SCALAR)
                    .unwrap();
            let back = ryzq_core::unpack(&expected, shape, layout, SimdLevel::SCALAR).unwrap();
            assert_eq!(back, codes, "{shape:?} {layout:?}");
            for &level in &levels {
                let packed =
                    ryzq_core::pack(&codes, shape, layout, scales.as_deref(), level).unwrap();
                assert_eq!(packed, expected, "{shape:?} {layout:?} {level:?}");
                let back = ryzq_core::unpack(&packed, shape, layout, level).unwrap();
                assert_eq!(back, codes, "{shape:?} {layout:?} {level:?}");
            }
        }
    }
}
