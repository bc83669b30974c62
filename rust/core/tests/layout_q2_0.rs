//! The q2_0 layout (GGUF's Q2_0): the definition's bytes at every SIMD level, and every 0b11
//! field refused at every position and level.

mod common;

use common::{Rng, check_corrupt_bytes, simd_levels, unpack_result};
use ryzq_core::layout::q2_0;
use ryzq_core::{Layout, SimdLevel};

/// By the definition (ggml's `block_q2_0`): per 64 values, `d` as little-endian float16, then
/// byte `m` holding values `4m..4m+3`, the first in the lowest bits, code `c` as `c + 1`.
fn q2_0_bytes(codes: &[i8], scales: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (block, &d) in codes.chunks_exact(64).zip(scales) {
        out.extend(half::f16::from_f32(d).to_le_bytes());
        for four in block.chunks_exact(4) {
            let field = |k: usize| ((four[k] + 1) as u8) << (2 * k);
            out.push(field(0) | field(1) | field(2) | field(3));
        }
    }
    out
}

#[test]
fn q2_0_packs_the_definitions_bytes_at_every_level() {
    let mut rng = Rng(17);
    // Odd and even block counts (unpack takes blocks in pairs), one tile and a few (256 blocks
    // each).
    for blocks in [1, 2, 3, 5, 255, 256, 257, 600] {
        let shape = [blocks * 64];
        let codes = rng.codes(blocks * 64);
        let scales: Vec<f32> = (0..blocks)
            .map(|b| [0.5, -0.25, 0.0, 0.0123, 6e4, 3e-6][b % 6])
            .collect();
        let expected = q2_0_bytes(&codes, &scales);
        assert_eq!(
            Layout::Q2_0.get().packed_shape(&shape).unwrap(),
            [blocks * 18]
        );
        for level in SimdLevel::supported() {
            let packed =
                ryzq_core::pack(&codes, &shape, Layout::Q2_0, Some(&scales), level).unwrap();
            assert_eq!(packed, expected, "{blocks} blocks {level:?}");
            let back = ryzq_core::unpack(&packed, &shape, Layout::Q2_0, level).unwrap();
            assert_eq!(back, codes, "{blocks} blocks {level:?}");
            let stored: Vec<f32> = scales
                .iter()
                .map(|&s| half::f16::from_f32(s).to_f32())
                .collect();
            assert_eq!(Layout::Q2_0.get().block_scales(&packed), stored);
        }
        // The kernels themselves, on the whole blocks.
        let mut expected_codes = vec![0i8; codes.len()];
        assert!(q2_0::scalar::unpack_blocks(&expected, &mut expected_codes));
        assert_eq!(expected_codes, codes);
        for &level in &simd_levels() {
            let mut packed = vec![0u8; expected.len()];
            let mut back = vec![0i8; codes.len()];
            assert!(
                Layout::Q2_0
                    .get()
                    .pack(level, 0, &codes, &scales, &mut packed)
            );
            assert_eq!(packed, expected, "{blocks} blocks {level:?}");
            assert_eq!(
                Layout::Q2_0.get().unpack(level, 0, &packed, &mut back),
                Ok(())
            );
            assert_eq!(back, codes, "{blocks} blocks {level:?}");
        }
    }
    // A code that is not -1, 0 or 1, in an odd last block or a pair: refused at every level.
    for (blocks, at) in [(3, 130), (3, 64 + 31), (4, 255), (1, 0)] {
        let mut codes = rng.codes(blocks * 64);
        codes[at] = 2;
        let scales = vec![1.0; blocks];
        for level in SimdLevel::supported() {
            let mut packed = vec![0u8; blocks * 18];
            assert!(
                !Layout::Q2_0
                    .get()
                    .pack(level, 0, &codes, &scales, &mut packed),
                "{blocks} {at} {level:?}"
            );
        }
    }
}

#[test]
fn q2_0_refuses_every_0b11_field_at_every_position_and_level() {
    let mut rng = Rng(19);
    let all: Vec<u8> = (0..=255).collect();
    // The scale's bytes are free; a qs byte is refused iff one of its fields is 0b11 (which
    // llama.cpp reads as +2 and no ternary code packs to).
    let valid =
        |pos: usize, value: u8| pos % 18 < 2 || (0..4).all(|k| (value >> (2 * k)) & 0b11 != 0b11);
    assert_eq!((0..=255u8).filter(|&b| valid(2, b)).count(), 81);
    // Three blocks: a pair and an odd last block.
    let shape = [3, 64];
    let codes = rng.codes(3 * 64);
    let scales = [1.0f32, -0.5, 0.0];
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Q2_0,
        Some(&scales),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let refused = check_corrupt_bytes(&packed, &shape, Layout::Q2_0, 0..54, &all, valid);
    assert_eq!(refused, 3 * 16 * (256 - 81));
    // Across tiles (256 blocks each): the offset is in the whole tensor, the first wins.
    let blocks = 2 * 256 + 3;
    let shape = [blocks * 64];
    let codes = rng.codes(blocks * 64);
    let packed = ryzq_core::pack(
        &codes,
        &shape,
        Layout::Q2_0,
        Some(&vec![0.25; blocks]),
        SimdLevel::SCALAR,
    )
    .unwrap();
    let positions = [
        0,
        1,
        2,
        17,
        18 + 9,
        255 * 18 + 17,
        256 * 18,
        256 * 18 + 2,
        (blocks - 1) * 18 + 2,
        packed.len() - 1,
    ];
    let values = [0x00, 0x03, 0x0c, 0x30, 0xc0, 0xd5, 0xff];
    check_corrupt_bytes(&packed, &shape, Layout::Q2_0, positions, &values, valid);
    let mut bytes = packed.clone();
    bytes[300 * 18 + 5] = 0xff;
    bytes[256 * 18 + 10] = 0x30;
    bytes[256 * 18] = 0xff; // a scale byte: any value is a float16
    for level in SimdLevel::supported() {
        assert_eq!(
            unpack_result(&bytes, &shape, Layout::Q2_0, level),
            Err((256 * 18 + 10, 0x30))
        );
    }
}
