//! `kernels::expand` (codes to -scale / 0 / +scale) at every supported SIMD level against its
//! scalar reference, bit for bit.

mod common;

use common::{LENGTHS, Rng, simd_levels};
use ryzq_core::SimdLevel;
use ryzq_core::kernels::expand::{self, Values};

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
