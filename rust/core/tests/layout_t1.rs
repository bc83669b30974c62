//! The t1 layout (five base-3 digits a byte): the bytes it encodes, the byte rule, and every
//! invalid byte refused at every position and SIMD level.

mod common;

use common::{Rng, base3_bytes, check_corrupt_bytes, digit_of, qh_bytes, unpack_result};
use ryzq_core::layout::{t1, tq};
use ryzq_core::{Layout, SimdLevel};

#[test]
fn t1_decodes_every_byte_it_encodes() {
    // Every combination of five digits, one per byte of a 243-value tail block... in blocks.
    for q in 0u32..243 {
        let digits: Vec<i8> = (0..5)
            .map(|n| ((q / 3u32.pow(4 - n)) % 3) as i8 - 1)
            .collect();
        // A 5-value tensor is one byte holding values 0..5 as digits 0..5.
        let packed = ryzq_core::pack(&digits, &[5], Layout::T1, None, SimdLevel::SCALAR).unwrap();
        assert_eq!(u32::from(packed[0]), (q * 256).div_ceil(243));
        let back = ryzq_core::unpack(&packed, &[5], Layout::T1, SimdLevel::SCALAR).unwrap();
        assert_eq!(back, digits, "q={q}");
    }
}

#[test]
fn base3_byte_rules_are_the_definition() {
    let code = base3_bytes(|_| false);
    let qh = qh_bytes();
    for b in 0..=255u8 {
        assert_eq!(t1::is_code_byte(b), code[b as usize], "{b}");
        assert_eq!(t1::is_code_byte(b), u32::from(b) * 243 % 256 < 243, "{b}");
        assert_eq!(
            t1::is_code_byte(b),
            (256 - 13 * u32::from(b) % 256) % 256 < 243,
            "{b}"
        );
        assert_eq!(tq::is_qh_byte(b), qh[b as usize], "{b}");
    }
    assert_eq!(code.iter().filter(|&&v| !v).count(), 13);
    assert_eq!(qh.iter().filter(|&&v| v).count(), 81);
    // Through unpack: one byte holding five values, at every level.
    for b in 0..=255u8 {
        for level in SimdLevel::supported() {
            let got = unpack_result(&[b], &[5], Layout::T1, level);
            assert_eq!(got.is_ok(), code[b as usize], "{b} {level:?}");
            if let Ok(codes) = got {
                let q = (u32::from(b) * 243) / 256;
                let digits: Vec<i8> = (0..5).map(|n| digit_of(q, n) as i8 - 1).collect();
                assert_eq!(codes, digits, "{b} {level:?}");
            }
        }
    }
}

#[test]
fn t1_refuses_every_invalid_byte_at_every_position_and_level() {
    let mut rng = Rng(11);
    let all: Vec<u8> = (0..=255).collect();
    let invalid: Vec<u8> = all
        .iter()
        .copied()
        .filter(|&b| !t1::is_code_byte(b))
        .collect();
    assert_eq!(invalid.len(), 13);
    // Every invalid value and the extreme valid ones; every value in a short block's bytes.
    let some: Vec<u8> = invalid.iter().copied().chain([0, 2, 242, 255]).collect();
    // Full blocks, a half block (80 values, its own kernel), short blocks with padding.
    for n in [1, 2, 4, 5, 7, 80, 159, 160, 161, 165, 327, 400, 483] {
        let codes = rng.codes(n);
        let packed = ryzq_core::pack(&codes, &[n], Layout::T1, None, SimdLevel::SCALAR).unwrap();
        let valid = |pos: usize, value: u8| {
            let (block, m) = (pos / 32, pos % 32);
            let len = (n - block * 160).min(160);
            let stride = len.div_ceil(5);
            base3_bytes(|d| m + stride * d >= len)[value as usize]
        };
        let full = n / 160 * 32;
        let refused = check_corrupt_bytes(&packed, &[n], Layout::T1, 0..full, &some, valid)
            + check_corrupt_bytes(&packed, &[n], Layout::T1, full..packed.len(), &all, valid);
        assert!(refused >= 13 * packed.len(), "{n}");
        // A short last block also refuses code bytes that put a nonzero code in its padding.
        if n % 5 != 0 {
            assert!(refused > 13 * packed.len(), "{n}");
        }
    }
    // Across tiles (16,320 values each): the offset is in the whole tensor, the first wins.
    let n = 16_320 * 2 + 483;
    let codes = rng.codes(n);
    let packed = ryzq_core::pack(&codes, &[n], Layout::T1, None, SimdLevel::SCALAR).unwrap();
    let positions = [
        0,
        17,
        31,
        32,
        3263,
        3264,
        3295,
        6528,
        6528 + 64,
        packed.len() - 1,
    ];
    check_corrupt_bytes(&packed, &[n], Layout::T1, positions, &invalid, |_, _| false);
    let mut bytes = packed.clone();
    bytes[6530] = invalid[3];
    bytes[3300] = invalid[7];
    for level in SimdLevel::supported() {
        assert_eq!(
            unpack_result(&bytes, &[n], Layout::T1, level),
            Err((3300, invalid[7]))
        );
    }
}
