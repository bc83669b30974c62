//! `repack` (codes carried from one layout into another tile by tile) gives the bytes of
//! `unpack` then `pack`, for every pair of layouts of the registry, at every supported SIMD
//! level, with the codes' counts; corrupt source bytes give `unpack`'s error.

mod common;

use common::{Rng, simd_levels};
use ryzq_core::{Error, Layout, SimdLevel};

/// The scales a layout stores in its data for `shape`: one per block, or the tensor's one.
fn scales_for(layout: Layout, shape: &[usize], value: f32) -> Option<Vec<f32>> {
    layout
        .get()
        .packed_granularity()
        .map(|g| vec![value; g.groups(shape).unwrap().0])
}

#[test]
fn repack_matches_unpack_then_pack_for_every_pair_and_level() {
    let levels = simd_levels();
    let mut rng = Rng(41);
    // Rows that span tiles, tiles that cut rows, transformers' four stripes of rows not
    // aligned with the target's tiles, one value more than a tile.
    let shapes: [&[usize]; 12] = [
        &[4, 256],
        &[8, 3200],
        &[12, 8640],
        &[16, 33],
        &[4, 5000],
        &[64, 300],
        &[20_000],
        &[4, 4100],
        &[3, 512],
        &[16_384 + 256],
        &[36, 1280],
        &[4, 128],
    ];
    let mut pairs = 0;
    for shape in shapes {
        let n: usize = shape.iter().product();
        let codes = rng.codes(n);
        let counts = [-1i8, 0, 1].map(|c| codes.iter().filter(|&&x| x == c).count() as u64);
        for &from in Layout::ALL {
            if from.get().packed_shape(shape).is_err() {
                continue;
            }
            let source = ryzq_core::pack(
                &codes,
                shape,
                from,
                scales_for(from, shape, 0.75).as_deref(),
                SimdLevel::SCALAR,
            )
            .unwrap();
            for &to in Layout::ALL {
                if to.get().packed_shape(shape).is_err() {
                    continue;
                }
                let scales = scales_for(to, shape, 0.5);
                let expected =
                    ryzq_core::pack(&codes, shape, to, scales.as_deref(), SimdLevel::SCALAR)
                        .unwrap();
                for &level in &levels {
                    let (packed, got) =
                        ryzq_core::repack(&source, shape, from, to, scales.as_deref(), level)
                            .unwrap();
                    assert!(
                        packed == expected,
                        "{shape:?} {from:?} -> {to:?} at {level:?}"
                    );
                    assert_eq!(got, counts, "{shape:?} {from:?} -> {to:?} at {level:?}");
                }
                pairs += 1;
            }
        }
    }
    assert!(pairs > 100, "only {pairs} pairs of layouts were compared");
}

#[test]
fn repack_names_the_first_corrupt_byte_as_unpack_does() {
    let mut rng = Rng(43);
    let shape = [8, 4096];
    let codes = rng.codes(8 * 4096);
    let source = ryzq_core::pack(&codes, &shape, Layout::Bitnet, None, SimdLevel::SCALAR).unwrap();
    // Two corrupt bytes in different tiles: the first is named, whichever a thread meets.
    for positions in [[5usize, 7000], [0, 8191], [100, 101]] {
        let mut bytes = source.clone();
        for &p in &positions {
            bytes[p] = 0xff;
        }
        let expected = ryzq_core::unpack(&bytes, &shape, Layout::Bitnet, SimdLevel::SCALAR)
            .unwrap_err()
            .to_string();
        for level in simd_levels() {
            let err = ryzq_core::repack(
                &bytes,
                &shape,
                Layout::Bitnet,
                Layout::Tq2_0,
                Some(&vec![1.0; 8 * 16]),
                level,
            )
            .unwrap_err();
            assert!(matches!(err, Error::CorruptPacked { .. }), "{err}");
            assert_eq!(err.to_string(), expected, "{positions:?} at {level:?}");
        }
    }
    let short = ryzq_core::repack(
        &source[1..],
        &shape,
        Layout::Bitnet,
        Layout::I2,
        None,
        SimdLevel::SCALAR,
    );
    assert!(short.is_err(), "a short source is refused");
}
