//! Helpers the integration tests share: reproducible random inputs, the SIMD levels to compare
//! with the scalar reference, and the checks of corrupt packed bytes.

// Each test file uses some of these.
#![allow(dead_code)]

use ryzq_core::{Error, FloatDType, Layout, SimdLevel};

/// xorshift64*: reproducible inputs without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Roughly normal values times `scale`, with exact ties mixed in.
    pub fn weights(&mut self, n: usize, scale: f32) -> Vec<f32> {
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

    pub fn codes(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
}

/// The levels to compare with the scalar reference: every supported level above scalar. A test
/// that could compare none would pass on nothing, so it says so and fails instead.
pub fn simd_levels() -> Vec<SimdLevel> {
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

pub const LENGTHS: [usize; 12] = [0, 1, 3, 15, 16, 17, 31, 33, 127, 160, 161, 1000];

/// The same values stored as float32, float16 and bfloat16 (rounded), one byte into the
/// buffer so that no load is aligned.
pub fn stored(x: &[f32]) -> Vec<(FloatDType, Vec<u8>)> {
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

/// Digit `n` (most significant first) of five base-3 digits `q`.
pub fn digit_of(q: u32, n: usize) -> u32 {
    q / 3u32.pow(4 - n as u32) % 3
}

/// By the definition: the bytes `ceil(q * 256 / 243)` of the five digits `q` whose digits `n`
/// with `missing(n)` (values a short block lacks) are 1, code 0.
pub fn base3_bytes(missing: impl Fn(usize) -> bool) -> [bool; 256] {
    let mut valid = [false; 256];
    for q in 0u32..243 {
        if (0..5).all(|n| !missing(n) || digit_of(q, n) == 1) {
            valid[(q * 256).div_ceil(243) as usize] = true;
        }
    }
    valid
}

/// By the definition: the TQ1_0 `qh` bytes, four digits `q` then a fifth digit 0.
pub fn qh_bytes() -> [bool; 256] {
    let mut valid = [false; 256];
    for q in 0u32..81 {
        valid[(q * 3 * 256).div_ceil(243) as usize] = true;
    }
    valid
}

/// `unpack`'s codes, or the offset and value of the byte it refused.
pub fn unpack_result(
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
pub fn check_corrupt_bytes(
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
