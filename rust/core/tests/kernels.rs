//! Every kernel at every supported SIMD level against its scalar reference, bit for bit.

// These tests check exact, bit-for-bit results.
#![allow(clippy::float_cmp)]

use ryzq_core::kernels::expand::{self, Values};
use ryzq_core::kernels::{Raw, band, partition, reduce, ternarize, widen};
use ryzq_core::layout::{q2_0, t1, tq};
use ryzq_core::method::Ties;
use ryzq_core::{Error, FloatDType, Layout, SimdLevel};

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Roughly normal values times `scale`, with exact ties mixed in.
    fn weights(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let r = self.next();
                if r.is_multiple_of(7) {
                    [-1.5f32, -0.5, 0.0, 0.5, 1.5][(r >> 8) as usize % 5] * scale
                } else {
                    let u: f32 = (0..4).map(|k| ((r >> (16 * k)) & 0xFFFF) as f32).sum();
                    (u / 131_070.0 - 1.0) * 3.0 * scale
                }
            })
            .collect()
    }

    fn codes(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
}

/// The levels to compare with the scalar reference: every supported level above scalar. A test
/// that could compare none would pass on nothing, so it says so and fails instead.
fn simd_levels() -> Vec<SimdLevel> {
    let supported = SimdLevel::supported();
    let levels: Vec<SimdLevel> = supported
        .iter()
        .copied()
        .filter(|&level| level != SimdLevel::SCALAR)
        .collect();
    assert!(
        !levels.is_empty(),
        "no SIMD level could be compared with the scalar reference: this processor supports \
         only {:?}",
        supported.iter().map(|l| l.name()).collect::<Vec<_>>()
    );
    levels
}

const LENGTHS: [usize; 12] = [0, 1, 3, 15, 16, 17, 31, 33, 127, 160, 161, 1000];

/// The same values stored as float32, float16 and bfloat16 (rounded), one byte into the
/// buffer so that no load is aligned.
fn stored(x: &[f32]) -> Vec<(FloatDType, Vec<u8>)> {
    let mut out = Vec::new();
    for dtype in FloatDType::ALL {
        let mut bytes = vec![0u8];
        for &v in x {
            match dtype {
                FloatDType::F32 => bytes.extend(v.to_le_bytes()),
                FloatDType::F16 => bytes.extend(half::f16::from_f32(v).to_le_bytes()),
                FloatDType::BF16 => bytes.extend(half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        out.push((dtype, bytes));
    }
    out
}

#[test]
fn abs_sum_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(1);
    for n in LENGTHS {
        let x = rng.weights(n, 0.02);
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let expected = reduce::scalar::abs_sum(raw);
            for &level in &levels {
                let got = reduce::abs_sum(level, raw);
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "n={n} {dtype:?} {level:?}"
                );
            }
        }
    }
}

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
fn abs_max_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(9);
    for n in LENGTHS {
        let mut x = rng.weights(n, 0.5);
        if n > 20 {
            x[n / 2] = f32::NAN;
        }
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let expected = reduce::max_scalar::abs_max(raw);
            assert_eq!(expected.1, n <= 20, "NaN is flagged");
            for &level in &levels {
                let got = reduce::abs_max(level, raw);
                assert_eq!(
                    got.0.to_bits(),
                    expected.0.to_bits(),
                    "n={n} {dtype:?} {level:?}"
                );
                assert_eq!(got.1, expected.1);
            }
        }
    }
}

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

#[test]
fn expand_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(4);
    for n in LENGTHS {
        let codes = rng.codes(n);
        let v32 = Values {
            negative: (-0.25f32).to_bits(),
            positive: 0.25f32.to_bits(),
        };
        let v16 = Values {
            negative: 0xBE80u16,
            positive: 0x3E80u16,
        };
        let mut e32 = vec![0u8; 4 * n];
        let mut e16 = vec![0u8; 2 * n];
        expand::scalar::expand32(&codes, v32, &mut e32);
        expand::scalar::expand16(&codes, v16, &mut e16);
        for &level in &levels {
            let mut g32 = vec![0u8; 4 * n];
            let mut g16 = vec![0u8; 2 * n];
            expand::expand32(level, &codes, v32, &mut g32);
            expand::expand16(level, &codes, v16, &mut g16);
            assert_eq!(g32, e32, "n={n} {level:?}");
            assert_eq!(g16, e16, "n={n} {level:?}");
        }
    }
}

#[test]
fn expand_groups_gives_each_group_its_values() {
    let mut rng = Rng(16);
    for (n, group_len) in [
        (0, 16),
        (1, 16),
        (256, 256),
        (1000, 256),
        (1000, 16),
        (161, 33),
    ] {
        let codes = rng.codes(n);
        let groups = n.div_ceil(group_len);
        let v32: Vec<Values<u32>> = (0..groups)
            .map(|g| Values {
                negative: (-(g as f32 + 1.0)).to_bits(),
                positive: (g as f32 + 1.0).to_bits(),
            })
            .collect();
        let v16: Vec<Values<u16>> = (0..groups)
            .map(|g| Values {
                negative: 0x8000 | g as u16,
                positive: g as u16 + 1,
            })
            .collect();
        // Group by group with the one-value kernel: the definition.
        let mut e32 = vec![0u8; 4 * n];
        let mut e16 = vec![0u8; 2 * n];
        for (g, c) in codes.chunks(group_len).enumerate() {
            let at = g * group_len;
            expand::scalar::expand32(c, v32[g], &mut e32[4 * at..4 * (at + c.len())]);
            expand::scalar::expand16(c, v16[g], &mut e16[2 * at..2 * (at + c.len())]);
        }
        for level in SimdLevel::supported() {
            let mut g32 = vec![0u8; 4 * n];
            let mut g16 = vec![0u8; 2 * n];
            expand::expand32_groups(level, &codes, group_len, &v32, &mut g32);
            expand::expand16_groups(level, &codes, group_len, &v16, &mut g16);
            assert_eq!(g32, e32, "n={n} group {group_len} {level:?}");
            assert_eq!(g16, e16, "n={n} group {group_len} {level:?}");
        }
    }
}

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

/// Digit `n` (most significant first) of five base-3 digits `q`.
fn digit_of(q: u32, n: usize) -> u32 {
    q / 3u32.pow(4 - n as u32) % 3
}

/// By the definition: the bytes `ceil(q * 256 / 243)` of the five digits `q` whose digits `n`
/// with `missing(n)` (values a short block lacks) are 1, code 0.
fn base3_bytes(missing: impl Fn(usize) -> bool) -> [bool; 256] {
    let mut valid = [false; 256];
    for q in 0u32..243 {
        if (0..5).all(|n| !missing(n) || digit_of(q, n) == 1) {
            valid[(q * 256).div_ceil(243) as usize] = true;
        }
    }
    valid
}

/// By the definition: the TQ1_0 `qh` bytes, four digits `q` then a fifth digit 0.
fn qh_bytes() -> [bool; 256] {
    let mut valid = [false; 256];
    for q in 0u32..81 {
        valid[(q * 3 * 256).div_ceil(243) as usize] = true;
    }
    valid
}

/// `unpack`'s codes, or the offset and value of the byte it refused.
fn unpack_result(
    packed: &[u8],
    shape: &[usize],
    layout: Layout,
    level: SimdLevel,
) -> Result<Vec<i8>, (usize, u8)> {
    ryzq_core::unpack(packed, shape, layout, level).map_err(|err| match err {
        Error::CorruptPacked {
            layout: name,
            byte,
            value,
        } => {
            assert_eq!(name, layout.name());
            (byte, value)
        }
        other => panic!("{other}"),
    })
}

/// Sets each byte of `positions` of `packed` to each value of `values` in turn and checks
/// that `unpack` refuses exactly the values `valid(position, value)` says no codes pack to,
/// naming that byte, and that every SIMD level gives the scalar result.
fn check_corrupt_bytes(
    packed: &[u8],
    shape: &[usize],
    layout: Layout,
    positions: impl IntoIterator<Item = usize>,
    values: &[u8],
    valid: impl Fn(usize, u8) -> bool,
) -> usize {
    let mut refused = 0;
    for pos in positions {
        for &value in values {
            let mut bytes = packed.to_vec();
            bytes[pos] = value;
            let expected = unpack_result(&bytes, shape, layout, SimdLevel::SCALAR);
            if valid(pos, value) {
                assert!(
                    expected.is_ok(),
                    "{layout:?} {shape:?} byte {pos} = {value}"
                );
            } else {
                assert_eq!(expected, Err((pos, value)), "{layout:?} {shape:?}");
                refused += 1;
            }
            for level in simd_levels() {
                let got = unpack_result(&bytes, shape, layout, level);
                assert_eq!(
                    got, expected,
                    "{layout:?} {shape:?} byte {pos} = {value} {level:?}"
                );
            }
        }
    }
    refused
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

#[test]
fn abs_into_matches_scalar() {
    let levels = simd_levels();
    let mut rng = Rng(11);
    for n in LENGTHS {
        let mut x = rng.weights(n, 0.5);
        if n > 20 {
            x[n / 3] = f32::INFINITY;
        }
        for (dtype, bytes) in stored(&x) {
            let raw = Raw::new(&bytes[1..], dtype);
            let mut expected = vec![0f32; n];
            let stats = partition::scalar::abs_into(raw, &mut expected);
            assert_eq!(stats.finite, n <= 20, "infinity is flagged");
            for &level in &levels {
                let mut got = vec![0f32; n];
                let s = partition::abs_into(level, raw, &mut got);
                assert_eq!(bits(&got), bits(&expected), "n={n} {dtype:?} {level:?}");
                assert_eq!(s.finite, stats.finite);
                if stats.finite {
                    assert_eq!(s, stats, "n={n} {dtype:?} {level:?}");
                }
            }
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn partition_matches_scalar_and_keeps_the_values_between_in_order() {
    let levels = simd_levels();
    let mut rng = Rng(12);
    for n in LENGTHS {
        let x: Vec<f32> = rng.weights(n, 1.0).iter().map(|v| v.abs()).collect();
        // Thresholds on values of x (exact ties), between them, and beyond all of them.
        let mut sorted = x.clone();
        sorted.sort_by(f32::total_cmp);
        let mut cuts = vec![(0.0, 0.0), (4.0, 0.0), (0.25, 0.5), (4.0, 5.0)];
        if n > 3 {
            cuts.push((sorted[n * 3 / 4], sorted[n / 4]));
            cuts.push((sorted[n / 2], sorted[n / 2]));
        }
        for (above, at_least) in cuts {
            let mut expected = x.clone();
            let p = partition::scalar::partition(&mut expected, above, at_least);
            let between: Vec<f32> = x
                .iter()
                .copied()
                .filter(|&v| v <= above && v >= at_least)
                .collect();
            assert_eq!(bits(&expected[..p.between.count]), bits(&between));
            assert_eq!(p.above.count, x.iter().filter(|&&v| v > above).count());
            let sum: f64 = x
                .iter()
                .filter(|&&v| v > above)
                .map(|&v| f64::from(v))
                .sum();
            assert!((p.above.sum - sum).abs() <= 1e-12 * sum.max(1.0));
            for &level in &levels {
                let mut got = x.clone();
                let q = partition::partition(level, &mut got, above, at_least);
                assert_eq!(q, p, "n={n} {level:?} ({above}, {at_least})");
                assert_eq!(
                    bits(&got[..q.between.count]),
                    bits(&between),
                    "n={n} {level:?}"
                );
            }
        }
    }
}

/// The best boundary by definition, without sorting: each value stands for the boundary below
/// all values at least as large.
fn best_boundary_by_definition(band: &[f32], s0: f64, k0: u64) -> (f64, u64) {
    let mut best = (f64::NEG_INFINITY, 0.0, 1u64);
    if k0 > 0 {
        best = (s0 * s0 / k0 as f64, s0, k0);
    }
    for &v in band {
        let taken: Vec<f32> = band.iter().copied().filter(|&u| u >= v).collect();
        let s = s0 + taken.iter().map(|&u| f64::from(u)).sum::<f64>();
        let k = k0 + taken.len() as u64;
        let gain = s * s / k as f64;
        // The largest gain, and of equal gains the fewest values.
        if gain > best.0 || (gain == best.0 && k < best.2) {
            best = (gain, s, k);
        }
    }
    (best.1, best.2)
}

#[test]
fn best_boundary_matches_scalar_and_its_definition() {
    let levels = simd_levels();
    let mut rng = Rng(15);
    for len in 0..=band::BAND_MAX {
        for case in 0..200 {
            // Values within a factor 2^10 of each other, as a bracketed band's are (their sums
            // are exact), with ties; the values above the band larger than all of them.
            let band: Vec<f32> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    let mantissa = if case % 3 == 0 { r % 4 } else { r % 4096 } as f32;
                    (1.0 + mantissa / 4096.0) * f32::powi(2.0, (r >> 20) as i32 % 10 - 5)
                })
                .collect();
            let k0 = if case % 5 == 0 {
                0
            } else {
                rng.next() % 40 + 1
            };
            let s0 = k0 as f64 * (64.0 + (rng.next() % 1000) as f64 / 7.0);
            let expected = band::scalar::best_boundary(&band, s0, k0);
            assert_eq!(
                expected,
                best_boundary_by_definition(&band, s0, k0),
                "{band:?} {s0} {k0}"
            );
            for &level in &levels {
                let got = band::best_boundary(level, &band, s0, k0);
                assert_eq!(got, expected, "{band:?} {s0} {k0} {level:?}");
            }
        }
    }
}
