//! The packing kernels against each other: a layout, a shape, a granularity, scales and packed
//! bytes (arbitrary, or packed from codes and then edited) from the fuzzer's bytes; `pack`,
//! `unpack` and `dequantize` must give at every SIMD level exactly what the scalar level gives
//! (the same bytes, or the same error), unpacking must give back the codes packed, packing the
//! codes unpacked must give back the bytes, and dequantized values must be `code * scale`.
//!
//! The first bytes say, in order: the layout, whether the shape fits the layout (most inputs)
//! or is any shape at all, the granularity and its group size, the output dtype, how the packed
//! bytes are made and the edits to them, the shape, the block scales, the scales; the rest are
//! the codes or packed bytes, repeated to the length needed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ryzq_core::{Error, FloatDType, Granularity, Layout, SimdLevel, dequantize, pack, unpack};
use ryzq_core_fuzz::{Input, MAX_VALUES};

/// Group sizes that split common rows, tried most.
const GROUP_SIZES: [usize; 8] = [32, 64, 128, 160, 256, 512, 1024, 4096];

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Whether two results are the same bytes, or the same error.
fn same<T: PartialEq>(a: &Result<Vec<T>, Error>, b: &Result<Vec<T>, Error>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string() && a.kind() == b.kind(),
        _ => false,
    }
}

/// What a result is, in a line, for a failed assertion.
fn describe<T>(r: &Result<Vec<T>, Error>) -> String {
    match r {
        Ok(v) => format!("Ok({} items)", v.len()),
        Err(e) => format!("Err({e})"),
    }
}

/// A number below `max` (> 0), most often small: below 2^k with k uniform.
fn small(input: &mut Input<'_>, max: usize) -> usize {
    let bits = u32::from(input.u8() % 18);
    input.below(max.min(1 << bits))
}

/// A shape the layout takes, with rows that split into `row_unit` values, most often of at
/// most 4096 values, one in 16 up to [`MAX_VALUES`] (several tiles).
fn fitting_shape(input: &mut Input<'_>, layout: Layout, row_unit: usize) -> Option<Vec<usize>> {
    let ndim = if layout == Layout::Bitnet {
        1 + input.below(2)
    } else {
        1 + input.below(3)
    };
    let budget = if input.u8().is_multiple_of(16) {
        MAX_VALUES
    } else {
        4096
    };
    let mut shape = vec![0; ndim];
    let mut numel = 1;
    for i in (0..ndim).rev() {
        let mut unit = if i == ndim - 1 { row_unit } else { 1 };
        if i == 0 && layout == Layout::Bitnet {
            unit = lcm(unit, 4);
        }
        let most = budget.max(row_unit * 4) / (numel * unit);
        if most == 0 {
            return None;
        }
        shape[i] = unit * (1 + small(input, most));
        numel *= shape[i];
    }
    Some(shape)
}

/// Any shape: up to 4 dimensions, some of them huge; these must fail as cheaply as they can.
fn any_shape(input: &mut Input<'_>) -> Vec<usize> {
    let ndim = input.below(5);
    (0..ndim)
        .map(|_| match input.u8() % 8 {
            0 => input.u64() as usize,
            1 => 0,
            _ => usize::from(input.u16()),
        })
        .collect()
}

/// A finite float from 4 bytes (the lowest bit of the exponent cleared where it is all ones).
fn finite_f32(input: &mut Input<'_>) -> f32 {
    let bits = input.u32();
    let v = f32::from_bits(bits);
    if v.is_finite() {
        v
    } else {
        f32::from_bits(bits & !(1 << 23))
    }
}

/// A float16 value as float32, finite.
fn finite_f16(input: &mut Input<'_>) -> f32 {
    let bits = input.u16();
    let v = half::f16::from_bits(bits);
    if v.is_finite() {
        v
    } else {
        half::f16::from_bits(bits & !(1 << 10))
    }
    .to_f32()
}

fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let layout = Layout::ALL[input.below(Layout::ALL.len())];
    let fit = !input.u8().is_multiple_of(8);
    let block = layout.get().block();
    let packed_granularity = layout.get().packed_granularity();
    let mut granularity = match input.u8() % 4 {
        0 => Granularity::Tensor,
        1 => Granularity::Row,
        2 => Granularity::Group(GROUP_SIZES[input.below(GROUP_SIZES.len())]),
        _ => Granularity::Group(32 + input.below(4096 - 32 + 1)),
    };
    if let (true, Some(b), Granularity::Group(n)) = (fit, block, granularity) {
        granularity = Granularity::Group(n.div_ceil(b) * b);
    }
    // A layout with one scale after the codes takes granularity tensor only.
    if let (true, Some(Granularity::Tensor)) = (fit, packed_granularity) {
        granularity = Granularity::Tensor;
    }
    let dtype = FloatDType::ALL[input.below(FloatDType::ALL.len())];
    // 0: the rest as packed bytes; 1: packed from codes; 2: packed from codes, then edited;
    // 3: packed from codes that need not be ternary.
    let source = input.u8() % 4;
    let edits: Vec<(usize, u8)> = if source == 2 {
        (0..1 + input.below(3))
            .map(|_| (input.u32() as usize, input.u8()))
            .collect()
    } else {
        Vec::new()
    };
    let shape = if fit {
        // The shortest row the layout takes (its block, where rows are whole blocks).
        let mut row_unit = (1..=256)
            .find(|&k| layout.get().packed_shape(&[4, k]).is_ok())
            .unwrap_or(1);
        if let Granularity::Group(n) = granularity {
            row_unit = lcm(row_unit, n);
        }
        match fitting_shape(&mut input, layout, row_unit) {
            Some(shape) => shape,
            None => return,
        }
    } else {
        any_shape(&mut input)
    };
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let small_numel = numel.filter(|&n| n <= MAX_VALUES);
    let groups = granularity.groups(&shape).ok();

    // The scales pack stores: one per block, that float16 holds, or the tensor's one.
    let block_scales: Option<Vec<f32>> = match (block, packed_granularity, small_numel) {
        (Some(b), _, Some(n)) => Some((0..n / b).map(|_| finite_f16(&mut input)).collect()),
        (None, Some(Granularity::Tensor), Some(_)) => Some(vec![finite_f32(&mut input)]),
        _ => None,
    };
    // The scales for dequantize: one per group, finite, where the shape fits; else any.
    let scales: Vec<f32> = match (fit, groups) {
        (true, Some((g, _))) => (0..g).map(|_| finite_f32(&mut input)).collect(),
        _ => (0..input.below(8))
            .map(|_| f32::from_bits(input.u32()))
            .collect(),
    };

    let levels = SimdLevel::supported();
    let rest = input.rest();
    let packed_len = layout
        .get()
        .packed_shape(&shape)
        .ok()
        .and_then(|s| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)));
    let (packed, codes) = if let Some(n) = small_numel.filter(|_| source != 0) {
        let codes: Vec<i8> = if rest.is_empty() {
            vec![0; n]
        } else if source == 3 {
            rest.iter().map(|&b| b as i8).cycle().take(n).collect()
        } else {
            rest.iter()
                .map(|&b| (b % 3) as i8 - 1)
                .cycle()
                .take(n)
                .collect()
        };
        let packed_at = |level| pack(&codes, &shape, layout, block_scales.as_deref(), level);
        let reference = packed_at(SimdLevel::SCALAR);
        for &level in &levels[1..] {
            let r = packed_at(level);
            assert!(
                same(&reference, &r),
                "pack at {}: {} but scalar: {}",
                level.name(),
                describe(&r),
                describe(&reference)
            );
        }
        let Ok(mut packed) = reference else {
            return;
        };
        let edited = !edits.is_empty() && !packed.is_empty();
        for &(at, value) in &edits {
            if !packed.is_empty() {
                let at = at % packed.len();
                packed[at] = value;
            }
        }
        (packed, (!edited).then_some(codes))
    } else {
        let packed: Vec<u8> = match packed_len.filter(|_| fit && !rest.is_empty()) {
            Some(len) => rest.iter().copied().cycle().take(len).collect(),
            None => rest.to_vec(),
        };
        (packed, None)
    };

    // Unpacking: the same at every level, the codes packed where they were not edited.
    let unpacked = unpack(&packed, &shape, layout, SimdLevel::SCALAR);
    for &level in &levels[1..] {
        let r = unpack(&packed, &shape, layout, level);
        assert!(
            same(&unpacked, &r),
            "unpack at {}: {} but scalar: {}",
            level.name(),
            describe(&r),
            describe(&unpacked)
        );
    }
    if let Some(codes) = &codes {
        assert_eq!(
            unpacked.as_ref().ok(),
            Some(codes),
            "unpack(pack(codes)) != codes"
        );
    }
    // Packing what unpacked: the same bytes, but for the padding of i2's last byte and the
    // bytes after an I2_S scale, which unpacking does not read, and block scales float16
    // cannot hold.
    if let Ok(codes) = &unpacked {
        let stored = packed_granularity.map(|_| layout.get().block_scales(&packed));
        if stored
            .as_ref()
            .is_none_or(|s| s.iter().all(|v| v.is_finite()))
        {
            let again = pack(codes, &shape, layout, stored.as_deref(), SimdLevel::SCALAR)
                .expect("codes that unpacked pack");
            let mut expected = packed.clone();
            let tail = codes.len() % 4;
            if layout == Layout::I2 && tail != 0 {
                let last = expected.last_mut().expect("a byte for the tail");
                let low = (1u8 << (2 * tail)) - 1;
                *last = (*last & low) | (0b0101_0101 & !low);
            }
            let trailer = layout.get().tensor_scale_len();
            if trailer > 0 {
                let len = expected.len();
                expected[len - trailer + 4..].fill(0);
            }
            assert!(again == expected, "pack(unpack(bytes)) != bytes");
        }
    }

    // Dequantizing: the same at every level, and `code * scale` of each value's group.
    let out = dequantize(
        &packed,
        &scales,
        &shape,
        layout,
        granularity,
        dtype,
        SimdLevel::SCALAR,
    );
    for &level in &levels[1..] {
        let r = dequantize(&packed, &scales, &shape, layout, granularity, dtype, level);
        assert!(
            same(&out, &r),
            "dequantize at {}: {} but scalar: {}",
            level.name(),
            describe(&r),
            describe(&out)
        );
    }
    if let (Ok(out), Ok(codes), Some((_, group_len))) = (&out, &unpacked, groups) {
        let size = dtype.size();
        for (g, (codes, out)) in codes
            .chunks(group_len)
            .zip(out.chunks(group_len * size))
            .enumerate()
        {
            let s = scales[g];
            let values = [
                dtype.encode(&[-s]),
                dtype.encode(&[0.0]),
                dtype.encode(&[s]),
            ];
            for (&c, v) in codes.iter().zip(out.chunks(size)) {
                assert!(
                    *v == *values[(c + 1) as usize],
                    "dequantize != code * scale in group {g}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    ryzq_core::threads::run(Some(1), || check(data)).expect("a pool of 2 threads");
});
