//! The TQ1_0 layout (GGUF): every invalid qs or qh byte refused at every position and SIMD
//! level.

mod common;

use common::{Rng, base3_bytes, check_corrupt_bytes, qh_bytes, unpack_result};
use ryzq_core::{Layout, SimdLevel};

#[test]
fn tq1_0_refuses_every_invalid_byte_at_every_position_and_level() {
    let mut rng = Rng(13);
    let all: Vec<u8> = (0..=255).collect();
    let code = base3_bytes(|_| false);
    let qh = qh_bytes();
    // qs bytes are t1 code bytes, qh bytes have a fifth digit 0, the scale's bytes are free.
    let valid = |pos: usize, value: u8| match pos % 54 {
        0..48 => code[value as usize],
        48..52 => qh[value as usize],
        _ => true,
    };
    let shape = [2, 512];
    let codes = rng.codes(1024);
    let scales = [1.0f32, 0.5, 2.0, 0.25];
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Tq1_0,
        Some(&scales),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let positions = (0..54).chain(3 * 54..4 * 54);
    let refused = check_corrupt_bytes(&packed, &shape, Layout::Tq1_0, positions, &all, valid);
    assert_eq!(refused, 2 * (48 * 13 + 4 * (256 - 81)));
    // Across tiles (64 blocks each).
    let shape = [65 * 256];
    let codes = rng.codes(65 * 256);
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Tq1_0,
        Some(&[1.0; 65]),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let positions = [
        0,
        31,
        32,
        47,
        48,
        51,
        63 * 54 + 50,
        64 * 54,
        64 * 54 + 40,
        64 * 54 + 49,
    ];
    // 1 and 20 no byte, 3 and 255 no qh byte, 0 any byte.
    let values = [0, 1, 3, 20, 255];
    check_corrupt_bytes(&packed, &shape, Layout::Tq1_0, positions, &values, valid);
    let mut bytes = packed.clone();
    bytes[64 * 54 + 3] = 1;
    bytes[63 * 54 + 49] = 2;
    for level in SimdLevel::supported() {
        assert_eq!(
            unpack_result(&bytes, &shape, Layout::Tq1_0, level),
            Err((63 * 54 + 49, 2))
        );
    }
}
