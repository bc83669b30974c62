//! The i2_s and i2_s_arm layouts (bitnet.cpp's I2_S): the definition's bytes at every SIMD
//! level, the tensor's scale after the codes, the shapes and granularities they refuse, and
//! every 0b11 field refused at every position and level.

// These tests check exact, bit-for-bit results.
#![allow(clippy::float_cmp)]

mod common;

use common::{Rng, check_corrupt_bytes, simd_levels, unpack_result};
use ryzq_core::layout::i2_s;
use ryzq_core::{FloatDType, Granularity, Layout, Method, QuantizeOptions, SimdLevel, TensorView};

const LAYOUTS: [(Layout, usize); 2] = [(Layout::I2S, 128), (Layout::I2SArm, 64)];

/// By the definition (bitnet.cpp's `quantize_i2_s`): element `e` of the flat tensor in byte
/// `block/4 * (e / block) + e % (block/4)`, at bits `7-2j .. 6-2j` with
/// `j = (e % block) / (block/4)`, code `c` as `c + 1`; then the scale as little-endian float32
/// and 28 zero bytes.
fn i2_s_bytes(codes: &[i8], block: usize, scale: f32) -> Vec<u8> {
    let quarter = block / 4;
    let mut out = vec![0u8; codes.len() / 4];
    for (e, &c) in codes.iter().enumerate() {
        let byte = quarter * (e / block) + e % quarter;
        let j = (e % block) / quarter;
        out[byte] |= ((c + 1) as u8) << (6 - 2 * j);
    }
    out.extend(scale.to_le_bytes());
    out.extend([0u8; 28]);
    out
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn i2_s_packs_the_definitions_bytes_at_every_level() {
    let mut rng = Rng(29);
    for (layout, block) in LAYOUTS {
        // Odd and even block counts (the ARM kernels take blocks in pairs), one tile and a few
        // (16384 values each).
        for blocks in [1, 2, 3, 5, 127, 128, 129, 300, 513] {
            let shape = [blocks * block];
            let codes = rng.codes(blocks * block);
            let scale = [0.5, 0.0123, 0.0, 6e4, 3e-9][blocks % 5];
            let expected = i2_s_bytes(&codes, block, scale);
            assert_eq!(
                layout.get().packed_shape(&shape).unwrap(),
                [blocks * block / 4 + 32]
            );
            for level in SimdLevel::supported() {
                let packed =
                    ryzq_core::pack(&codes, &shape, layout, Some(&[scale]), level).unwrap();
                assert_eq!(packed, expected, "{layout:?} {blocks} blocks {level:?}");
                let back = ryzq_core::unpack(&packed, &shape, layout, level).unwrap();
                assert_eq!(back, codes, "{layout:?} {blocks} blocks {level:?}");
                assert_eq!(layout.get().block_scales(&packed), [scale]);
            }
            // The kernels themselves, on the code bytes.
            let code_bytes = &expected[..expected.len() - 32];
            for &level in &simd_levels() {
                let mut packed = vec![0u8; code_bytes.len()];
                let mut back = vec![0i8; codes.len()];
                assert!(layout.get().pack(level, 0, &codes, &[], &mut packed));
                assert_eq!(packed, code_bytes, "{layout:?} {blocks} blocks {level:?}");
                assert_eq!(layout.get().unpack(level, 0, &packed, &mut back), Ok(()));
                assert_eq!(back, codes, "{layout:?} {blocks} blocks {level:?}");
            }
        }
        // A code that is not -1, 0 or 1, in a last block, a pair of blocks or the first byte:
        // refused at every level.
        for (blocks, at) in [
            (3, 2 * block + 5),
            (3, block + 31),
            (4, 4 * block - 1),
            (1, 0),
        ] {
            for bad in [2i8, -2, 127, -128] {
                let mut codes = rng.codes(blocks * block);
                codes[at] = bad;
                for level in SimdLevel::supported() {
                    let mut packed = vec![0u8; blocks * block / 4];
                    assert!(
                        !layout.get().pack(level, 0, &codes, &[], &mut packed),
                        "{layout:?} {blocks} {at} {bad} {level:?}"
                    );
                }
                let shape = [blocks * block];
                let err = ryzq_core::pack(&codes, &shape, layout, Some(&[1.0]), SimdLevel::best())
                    .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!(
                        "invalid ternary code {bad} at index ({at},): codes must be -1, 0 or 1"
                    )
                );
            }
        }
    }
}

#[test]
fn the_two_builds_layouts_differ_and_match_where_bitnet_cpp_says() {
    // Byte 0 holds values 0, 32, 64, 96 in x86 builds, 0, 16, 32, 48 in ARM builds.
    let mut codes = vec![0i8; 128];
    codes[32] = 1;
    let x86 = ryzq_core::pack(
        &codes,
        &[1, 128],
        Layout::I2S,
        Some(&[1.0]),
        SimdLevel::SCALAR,
    );
    let arm = ryzq_core::pack(
        &codes,
        &[1, 128],
        Layout::I2SArm,
        Some(&[1.0]),
        SimdLevel::SCALAR,
    );
    let (x86, arm) = (x86.unwrap(), arm.unwrap());
    assert_eq!(x86[0], 0b0110_0101);
    assert_eq!(arm[0], 0b0101_1001);
    assert!(x86[1..32].iter().chain(&arm[1..32]).all(|&b| b == 0x55));
    // Read with the other build's layout, the same bytes are other codes.
    let misread = ryzq_core::unpack(&x86, &[1, 128], Layout::I2SArm, SimdLevel::SCALAR).unwrap();
    assert_eq!(misread[16], 1);
    assert_eq!(misread[32], 0);
}

#[test]
fn i2_s_takes_rows_of_whole_blocks_and_says_which_layout_takes_the_others() {
    assert_eq!(
        Layout::I2S
            .get()
            .packed_shape(&[2, 320])
            .unwrap_err()
            .to_string(),
        "the i2_s layout packs rows in blocks of 128 values, but the rows of shape [2, 320] \
         hold 320: bitnet.cpp's kernels read whole blocks of a row; i2_s_arm takes them (for \
         bitnet.cpp's ARM builds only), i2 any shape"
    );
    assert_eq!(
        Layout::I2S
            .get()
            .packed_shape(&[3, 96])
            .unwrap_err()
            .to_string(),
        "the i2_s layout packs rows in blocks of 128 values, but the rows of shape [3, 96] \
         hold 96: bitnet.cpp's kernels read whole blocks of a row; i2 takes any shape"
    );
    assert_eq!(
        Layout::I2SArm
            .get()
            .packed_shape(&[3, 96])
            .unwrap_err()
            .to_string(),
        "the i2_s_arm layout packs rows in blocks of 64 values, but the rows of shape [3, 96] \
         hold 96: bitnet.cpp's kernels read whole blocks of a row; i2 takes any shape"
    );
    assert_eq!(Layout::I2SArm.get().packed_shape(&[2, 320]).unwrap(), [192]);
    assert_eq!(Layout::I2S.get().packed_shape(&[384]).unwrap(), [128]);
    assert_eq!(Layout::I2S.get().packed_shape(&[2, 3, 256]).unwrap(), [416]);
    assert!(Layout::I2S.get().packed_shape(&[0, 128]).is_err());
    assert!(Layout::I2S.get().packed_shape(&[]).is_err());
    // Dim 0 is free: 1-D and 3-D tensors are rows too.
    for (layout, block) in LAYOUTS {
        assert!(layout.get().packed_shape(&[7, block]).is_ok());
        assert!(layout.get().packed_shape(&[block + 4]).is_err());
        assert_eq!(layout.get().gguf_type(), Some(36));
        assert_eq!(layout.get().packed_granularity(), Some(Granularity::Tensor));
    }
}

#[test]
fn i2_s_stores_one_float32_scale_after_the_codes_and_takes_granularity_tensor_only() {
    let values: Vec<f32> = (0..6 * 256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 400.0)
        .collect();
    let bytes = f32_bytes(&values);
    let shape = [6, 256];
    let view = TensorView::new(&bytes, FloatDType::F32, &shape).unwrap();
    for (layout, _) in LAYOUTS {
        for method in Method::ALL.iter().copied() {
            assert_eq!(layout.default_granularity(method), Granularity::Tensor);
            let opts = QuantizeOptions {
                layout,
                method,
                granularity: Granularity::Tensor,
                level: SimdLevel::best(),
            };
            let q = ryzq_core::quantize(&view, &opts).unwrap();
            assert_eq!(q.packed_shape, [6 * 64 + 32]);
            assert_eq!(q.scales.len(), 1);
            let at = 6 * 64;
            assert_eq!(q.packed[at..at + 4], q.scales[0].to_le_bytes());
            assert_eq!(q.packed[at + 4..], [0u8; 28]);
            assert_eq!(layout.get().block_scales(&q.packed), q.scales);
            let codes = ryzq_core::unpack(&q.packed, &shape, layout, SimdLevel::SCALAR).unwrap();
            assert_eq!(q.packed, i2_s_bytes(&codes, block_of(layout), q.scales[0]));
        }
        for granularity in [Granularity::Row, Granularity::Group(128)] {
            let opts = QuantizeOptions {
                layout,
                method: Method::AbsMean,
                granularity,
                level: SimdLevel::best(),
            };
            let err = ryzq_core::quantize(&view, &opts).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "the {} layout stores one float32 scale per tensor, after its codes, so it \
                     takes granularity tensor only, not {}",
                    layout.name(),
                    granularity.name()
                )
            );
            let codes = vec![0i8; 6 * 256];
            let packed =
                ryzq_core::pack(&codes, &shape, layout, Some(&[1.0]), SimdLevel::SCALAR).unwrap();
            let dequantized = ryzq_core::dequantize(
                &packed,
                &[1.0; 6],
                &shape,
                layout,
                Granularity::Row,
                FloatDType::F32,
                SimdLevel::SCALAR,
            );
            assert!(dequantized.unwrap_err().to_string().contains("tensor only"));
        }
    }
}

fn block_of(layout: Layout) -> usize {
    LAYOUTS.iter().find(|(l, _)| *l == layout).unwrap().1
}

#[test]
fn pack_takes_exactly_the_tensors_scale() {
    let codes = vec![1i8; 256];
    for (layout, _) in LAYOUTS {
        let pack = |scales: Option<&[f32]>| {
            ryzq_core::pack(&codes, &[2, 128], layout, scales, SimdLevel::SCALAR)
                .map_err(|e| e.to_string())
        };
        let name = layout.name();
        assert_eq!(
            pack(None).unwrap_err(),
            format!(
                "the {name} layout stores the tensor's one scale after its codes: give that \
                 scale, one value"
            )
        );
        assert_eq!(
            pack(Some(&[1.0, 2.0])).unwrap_err(),
            format!(
                "the {name} layout stores the tensor's one scale after its codes: give that \
                 scale, one value, not 2"
            )
        );
        assert!(pack(Some(&[f32::INFINITY])).unwrap_err().contains("is inf"));
        assert!(pack(Some(&[f32::NAN])).unwrap_err().contains("is NaN"));
        let packed = pack(Some(&[-0.25])).unwrap();
        assert_eq!(packed[64..68], (-0.25f32).to_le_bytes());
    }
}

#[test]
fn i2_s_refuses_every_0b11_field_at_every_position_and_level() {
    let mut rng = Rng(31);
    let all: Vec<u8> = (0..=255).collect();
    for (layout, block) in LAYOUTS {
        // Three blocks: a pair and an odd last block (ARM), then the scale and its padding,
        // whose bytes are free: bitnet.cpp's readers ignore the padding, which llama-quantize
        // leaves unwritten, and any scale is a float32.
        let shape = [3, block];
        let codes = rng.codes(3 * block);
        let packed =
            ryzq_core::pack(&codes, &shape, layout, Some(&[0.5]), SimdLevel::SCALAR).unwrap();
        let code_bytes = 3 * block / 4;
        let valid = |pos: usize, value: u8| {
            pos >= code_bytes || (0..4).all(|k| (value >> (2 * k)) & 0b11 != 0b11)
        };
        assert_eq!((0..=255u8).filter(|&b| valid(0, b)).count(), 81);
        let refused = check_corrupt_bytes(&packed, &shape, layout, 0..packed.len(), &all, valid);
        assert_eq!(refused, code_bytes * (256 - 81));
        // Across tiles (16384 values each): the offset is in the whole tensor, the first wins.
        let blocks = 2 * 16384 / block + 3;
        let shape = [blocks * block];
        let codes = rng.codes(blocks * block);
        let packed =
            ryzq_core::pack(&codes, &shape, layout, Some(&[0.25]), SimdLevel::SCALAR).unwrap();
        let tile_bytes = 16384 / 4;
        let positions = [
            0,
            block / 4 - 1,
            block / 4,
            tile_bytes - 1,
            tile_bytes,
            tile_bytes + 40,
            blocks * block / 4 - 1,
            packed.len() - 32,
            packed.len() - 1,
        ];
        let values = [0x00, 0x03, 0x0c, 0x30, 0xc0, 0xd5, 0xff];
        check_corrupt_bytes(&packed, &shape, layout, positions, &values, |pos, value| {
            pos >= blocks * block / 4 || (0..4).all(|k| (value >> (2 * k)) & 0b11 != 0b11)
        });
        let mut bytes = packed.clone();
        bytes[2 * tile_bytes + 5] = 0xff;
        bytes[tile_bytes + 40] = 0x30;
        bytes[tile_bytes + 7] = 0x0c;
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        for level in SimdLevel::supported() {
            assert_eq!(
                unpack_result(&bytes, &shape, layout, level),
                Err((tile_bytes + 7, 0x0c))
            );
        }
    }
}

#[test]
fn i2_s_unpack_reads_neither_the_scale_nor_its_padding() {
    let mut rng = Rng(37);
    for (layout, block) in LAYOUTS {
        let shape = [4, 2 * block];
        let codes = rng.codes(8 * block);
        let mut packed =
            ryzq_core::pack(&codes, &shape, layout, Some(&[0.5]), SimdLevel::SCALAR).unwrap();
        let at = packed.len() - i2_s::SCALE_BYTES;
        // A NaN scale, and stale bytes after it, as llama-quantize leaves them.
        packed[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        for (i, b) in packed[at + 4..].iter_mut().enumerate() {
            *b = 0xa7 ^ i as u8;
        }
        for level in SimdLevel::supported() {
            assert_eq!(
                ryzq_core::unpack(&packed, &shape, layout, level).unwrap(),
                codes
            );
        }
        assert!(layout.get().block_scales(&packed)[0].is_nan());
        // One byte short or long: refused, naming the sizes.
        for len in [packed.len() - 1, packed.len() + 1] {
            let mut bytes = packed.clone();
            bytes.resize(len, 0);
            let err = ryzq_core::unpack(&bytes, &shape, layout, SimdLevel::SCALAR).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "packed {} data for shape {shape:?} (packed shape [{}]) has {len} bytes, \
                     expected {}",
                    layout.name(),
                    packed.len(),
                    packed.len()
                )
            );
        }
    }
}
