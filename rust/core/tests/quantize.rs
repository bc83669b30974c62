//! The quantize / dequantize drivers: tiling, groups, errors.

// These tests check exact, bit-for-bit results.
#![allow(clippy::float_cmp)]

use ryzq_core::{
    Error, FloatDType, Granularity, Layout, Method, QuantizeOptions, SimdLevel, TensorView,
};

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn options(layout: Layout, granularity: Granularity) -> QuantizeOptions {
    QuantizeOptions {
        layout,
        method: Method::AbsMean,
        granularity,
        level: SimdLevel::best(),
    }
}

#[test]
fn tiles_partition_the_tensor_and_the_packed_bytes() {
    let shapes: [&[usize]; 7] = [
        &[4],
        &[8, 3],
        &[4, 5000],
        &[400, 64],
        &[33_333],
        &[7, 9, 11],
        &[300, 128],
    ];
    for shape in shapes {
        let numel: usize = shape.iter().product();
        for &layout in Layout::ALL {
            let layout = layout.get();
            let Ok(packed_shape) = layout.packed_shape(shape) else {
                continue;
            };
            let mut seen = vec![false; numel];
            let tiles = layout.tiles(shape);
            for part in tiles.chunk_by(|a, b| a.part == b.part) {
                let mut next_byte = 0;
                for tile in part {
                    assert_eq!(tile.packed.start, next_byte, "{shape:?} {}", layout.name());
                    next_byte = tile.packed.end;
                    for i in tile.values.clone() {
                        assert!(!seen[i], "element {i} in two tiles");
                        seen[i] = true;
                    }
                }
                assert_eq!(
                    next_byte + layout.tensor_scale_len(),
                    packed_shape.iter().product::<usize>()
                );
            }
            let parts: Vec<usize> = tiles.iter().map(|t| t.part).collect();
            assert!(parts.is_sorted(), "tiles are listed by part");
            assert!(seen.iter().all(|&s| s), "{shape:?} {}", layout.name());
        }
    }
}

#[test]
fn quantize_then_dequantize_gives_code_times_scale() {
    let values: Vec<f32> = (0..64 * 512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let bytes = f32_bytes(&values);
    let shape = [64, 512];
    for &layout in Layout::ALL {
        let granularities = match layout.get().packed_granularity() {
            Some(granularity) => vec![granularity],
            None => vec![
                Granularity::Tensor,
                Granularity::Row,
                Granularity::Group(128),
            ],
        };
        for granularity in granularities {
            let view = TensorView::new(&bytes, FloatDType::F32, &shape).unwrap();
            let q = ryzq_core::quantize(&view, &options(layout, granularity)).unwrap();
            let codes = ryzq_core::unpack(&q.packed, &shape, layout, SimdLevel::SCALAR).unwrap();
            let out = ryzq_core::dequantize(
                &q.packed,
                &q.scales,
                &shape,
                layout,
                granularity,
                FloatDType::F32,
                SimdLevel::best(),
            )
            .unwrap();
            let group = granularity.groups(&shape).unwrap().1;
            for (i, chunk) in out.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(chunk.try_into().unwrap());
                assert_eq!(v, f32::from(codes[i]) * q.scales[i / group]);
            }
            assert_eq!(q.stats.numel, 64 * 512);
            assert_eq!(q.stats.counts.iter().sum::<u64>(), 64 * 512);
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let values: Vec<f32> = (0..300_000u64)
        .map(|i| ((i * 7919 % 10007) as f32).sin())
        .collect();
    let bytes = f32_bytes(&values);
    let shape = [300, 1000];
    let view = TensorView::new(&bytes, FloatDType::F32, &shape).unwrap();
    let opts = options(Layout::Bitnet, Granularity::Tensor);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let a = one.install(|| ryzq_core::quantize(&view, &opts)).unwrap();
    let b = four.install(|| ryzq_core::quantize(&view, &opts)).unwrap();
    assert_eq!(a.packed, b.packed);
    assert_eq!(a.scales, b.scales);
    assert_eq!(a.stats, b.stats);
}

#[test]
fn non_finite_values_are_counted_and_located() {
    let mut values = vec![0.5f32; 40];
    values[13] = f32::NAN;
    values[31] = f32::INFINITY;
    let bytes = f32_bytes(&values);
    let shape = [4, 10];
    let view = TensorView::new(&bytes, FloatDType::F32, &shape).unwrap();
    let err = ryzq_core::quantize(&view, &options(Layout::I2, Granularity::Row)).unwrap_err();
    assert!(matches!(err, Error::NonFinite { count: 2, .. }), "{err}");
    assert!(err.to_string().contains("index (1, 3)"), "{err}");
}

#[test]
fn buffer_sizes_are_checked() {
    let bytes = vec![0u8; 10];
    let err = TensorView::new(&bytes, FloatDType::F32, &[3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "float32 tensor of shape [3] has 10 bytes, expected 12"
    );
    let err = ryzq_core::unpack(&[0u8; 3], &[16], Layout::I2, SimdLevel::SCALAR).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Size {
                actual: 3,
                expected: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn zero_weights_get_the_clamped_scale() {
    let bytes = f32_bytes(&[0.0; 16]);
    let view = TensorView::new(&bytes, FloatDType::F32, &[16]).unwrap();
    let q = ryzq_core::quantize(&view, &options(Layout::I2, Granularity::Tensor)).unwrap();
    assert_eq!(q.scales, vec![1.0 / (1.0f32 / 1e-5)]);
    assert_eq!(q.stats.counts, [0, 16, 0]);
    assert_eq!(q.stats.nmse(), 0.0);
}

#[test]
fn corrupt_packed_bytes_are_named_with_their_layout_and_value() {
    let corrupt = |layout: Layout, shape: &[usize], byte: usize, value: u8| {
        let n: usize = shape.iter().product();
        let packed_granularity = layout.get().packed_granularity();
        let scales = packed_granularity.map(|g| vec![1.0f32; g.groups(shape).unwrap().0]);
        let mut packed = ryzq_core::pack(
            &vec![0; n],
            shape,
            layout,
            scales.as_deref(),
            SimdLevel::SCALAR,
        )
        .unwrap();
        packed[byte] = value;
        let message = |level| {
            ryzq_core::unpack(&packed, shape, layout, level)
                .unwrap_err()
                .to_string()
        };
        let expected = message(SimdLevel::SCALAR);
        for level in SimdLevel::supported() {
            assert_eq!(message(level), expected, "{level:?}");
            let values = ryzq_core::dequantize(
                &packed,
                scales.as_deref().unwrap_or(&[1.0]),
                shape,
                layout,
                packed_granularity.unwrap_or(Granularity::Tensor),
                FloatDType::F32,
                level,
            );
            assert_eq!(values.unwrap_err().to_string(), expected, "{level:?}");
        }
        expected
    };
    let tail = " is not one any ternary codes pack to";
    assert_eq!(
        corrupt(Layout::I2, &[64], 5, 0b1101_0101),
        format!("corrupt packed i2 data: byte 5 (0xd5){tail}")
    );
    assert_eq!(
        corrupt(Layout::T1, &[2, 160], 17, 20),
        format!("corrupt packed t1 data: byte 17 (0x14){tail}")
    );
    // 7 values in 2 bytes: byte 1 holds values 1, 3, 5 and two missing ones, which must be
    // code 0; byte 0x00 is the digits 0, 0, 0, 0, 0.
    assert_eq!(
        corrupt(Layout::T1, &[7], 1, 0),
        format!("corrupt packed t1 data: byte 1 (0x00){tail}")
    );
    // A qh byte of the second block with a nonzero fifth digit (a valid qs byte).
    assert_eq!(
        corrupt(Layout::Tq1_0, &[2, 256], 54 + 50, 3),
        format!("corrupt packed tq1_0 data: byte 104 (0x03){tail}")
    );
    assert_eq!(
        corrupt(Layout::Tq2_0, &[2, 256], 66 + 3, 0xff),
        format!("corrupt packed tq2_0 data: byte 69 (0xff){tail}")
    );
    // In the qs bytes of the third block, after its float16 scale.
    assert_eq!(
        corrupt(Layout::Q2_0, &[2, 128], 2 * 18 + 2 + 5, 0xd5),
        format!("corrupt packed q2_0 data: byte 43 (0xd5){tail}")
    );
    // In the codes, before the tensor's scale.
    assert_eq!(
        corrupt(Layout::I2S, &[2, 128], 40, 0x7f),
        format!("corrupt packed i2_s data: byte 40 (0x7f){tail}")
    );
    assert_eq!(
        corrupt(Layout::I2SArm, &[3, 64], 47, 0xc0),
        format!("corrupt packed i2_s_arm data: byte 47 (0xc0){tail}")
    );
}

#[test]
fn q2_0_stores_its_groups_scales_first_in_every_block() {
    let values: Vec<f32> = (0..6 * 320)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 400.0)
        .collect();
    let bytes = f32_bytes(&values);
    let shape = [6, 320];
    let view = TensorView::new(&bytes, FloatDType::F32, &shape).unwrap();
    for granularity in [
        Granularity::Tensor,
        Granularity::Row,
        Granularity::Group(64),
        Granularity::Group(320),
    ] {
        for method in [Method::AbsMean, Method::AbsMax, Method::Optimal] {
            let opts = QuantizeOptions {
                method,
                ..options(Layout::Q2_0, granularity)
            };
            let q = ryzq_core::quantize(&view, &opts).unwrap();
            assert_eq!(q.packed_shape, [6, 5 * 18]);
            let per_group = granularity.groups(&shape).unwrap().1 / 64;
            let d: Vec<f32> = q
                .packed
                .chunks_exact(18)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            let expected: Vec<f32> = q
                .scales
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, per_group))
                .collect();
            assert_eq!(d, expected, "{granularity:?} {method:?}");
            assert_eq!(Layout::Q2_0.get().block_scales(&q.packed), expected);
        }
    }
    // Groups that are not whole blocks, and rows that are not, are refused.
    let err = ryzq_core::quantize(&view, &options(Layout::Q2_0, Granularity::Group(32)));
    assert!(
        err.unwrap_err().to_string().contains("multiple of 64"),
        "groups of 32"
    );
    let odd = f32_bytes(&vec![1.0; 3 * 96]);
    let view = TensorView::new(&odd, FloatDType::F32, &[3, 96]).unwrap();
    let err = ryzq_core::quantize(&view, &options(Layout::Q2_0, Granularity::Tensor));
    assert_eq!(
        err.unwrap_err().to_string(),
        "the q2_0 layout packs rows in blocks of 64 values, but the rows of shape [3, 96] hold \
         96"
    );
}
