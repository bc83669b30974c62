//! Every layout of the registry (`Layout::ALL`): pack and unpack at every supported SIMD level
//! give the scalar bytes and codes, and round trip.

mod common;

use common::{Rng, check_corrupt_bytes, simd_levels, unpack_result};
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
            let scales = layout
                .get()
                .packed_granularity()
                .map(|g| vec![0.5f32; g.groups(shape).unwrap().0]);
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

/// Whether the 2-bit fields `fields` of `byte` are codes (none is 0b11).
fn two_bit_codes(byte: u8, fields: std::ops::Range<usize>) -> bool {
    fields.into_iter().all(|k| (byte >> (2 * k)) & 0b11 != 0b11)
}

#[test]
fn two_bit_layouts_refuse_every_0b11_field_at_every_position_and_level() {
    let mut rng = Rng(23);
    let all: Vec<u8> = (0..=255).collect();
    // i2: 299 values in 75 bytes; the last holds 3, its fourth field is padding, not read.
    let codes = rng.codes(299);
    let packed = ryzq_core::pack(&codes, &[299], Layout::I2, None, SimdLevel::SCALAR).unwrap();
    let valid = |pos: usize, value: u8| two_bit_codes(value, 0..if pos == 74 { 3 } else { 4 });
    let refused = check_corrupt_bytes(&packed, &[299], Layout::I2, 0..75, &all, valid);
    assert_eq!(refused, 74 * (256 - 81) + (256 - 27 * 4));
    // bitnet: every byte holds four rows, each part's field is checked.
    let shape = [8, 40];
    let codes = rng.codes(8 * 40);
    let packed = ryzq_core::pack(&codes, &shape, Layout::Bitnet, None, SimdLevel::SCALAR).unwrap();
    let valid = |_: usize, value: u8| two_bit_codes(value, 0..4);
    let refused = check_corrupt_bytes(&packed, &shape, Layout::Bitnet, 0..80, &all, valid);
    assert_eq!(refused, 80 * (256 - 81));
    // tq2_0: the scale's bytes are free.
    let shape = [2, 256];
    let codes = rng.codes(2 * 256);
    let scales = [1.0f32, -0.5];
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Tq2_0,
        Some(&scales),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let valid = |pos: usize, value: u8| pos % 66 >= 64 || two_bit_codes(value, 0..4);
    let refused = check_corrupt_bytes(&packed, &shape, Layout::Tq2_0, 0..132, &all, valid);
    assert_eq!(refused, 2 * 64 * (256 - 81));
    // tq2_0 across tiles (64 blocks each): the offset is in the whole tensor, the first wins.
    let blocks = 2 * 64 + 3;
    let shape = [blocks * 256];
    let codes = rng.codes(blocks * 256);
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Tq2_0,
        Some(&vec![0.25; blocks]),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let positions = [
        0,
        31,
        32,
        63,
        64,
        65,
        63 * 66 + 63,
        64 * 66,
        64 * 66 + 40,
        (blocks - 1) * 66 + 63,
        packed.len() - 1,
    ];
    let values = [0x00, 0x03, 0x0c, 0x30, 0xc0, 0xd5, 0xff];
    check_corrupt_bytes(&packed, &shape, Layout::Tq2_0, positions, &values, valid);
    let mut bytes = packed.clone();
    bytes[100 * 66 + 5] = 0xff;
    bytes[64 * 66 + 40] = 0x30;
    bytes[64 * 66 + 7] = 0x0c;
    bytes[64 * 66 + 64] = 0xff; // a scale byte: any value is a float16
    for level in SimdLevel::supported() {
        assert_eq!(
            unpack_result(&bytes, &shape, Layout::Tq2_0, level),
            Err((64 * 66 + 7, 0x0c))
        );
    }
}
