//! Inputs the fuzz targets (rust/core/fuzz) found crashing ryzq, checked here on stable
//! without cargo-fuzz. Their reproducers are the `regress-*` files of the fuzz corpus.

use std::collections::HashMap;

use ryzq_core::{FloatDType, Granularity, Layout, SimdLevel, convert, dequantize, pack, unpack};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// corpus/unpack/regress-groups-0d-shape: the groups of a shape without elements (a 0-d
/// tensor, a zero dimension) indexed an empty shape or divided by zero.
#[test]
fn a_shape_without_elements_has_no_groups() {
    let shapes: [&[usize]; 5] = [&[], &[0], &[0, 4], &[4, 0], &[2, 0, 3]];
    for granularity in [
        Granularity::Tensor,
        Granularity::Row,
        Granularity::Group(32),
    ] {
        for shape in shapes {
            let e = granularity.groups(shape).unwrap_err();
            assert_eq!(e.kind(), "bad_shape", "{granularity:?} {shape:?}: {e}");
        }
    }
}

/// corpus/unpack/regress-unpack-huge-shape: unpack and dequantize allocated the output of the
/// shape they were given before checking the packed bytes against it; a shape of a few
/// terabytes ended the process on the allocation.
#[test]
fn a_shape_larger_than_the_packed_bytes_is_refused_before_its_output_is_allocated() {
    let shape = [4, 1 << 40];
    let packed = [0x55u8; 66];
    for &layout in Layout::ALL {
        let e = unpack(&packed, &shape, layout, SimdLevel::SCALAR).unwrap_err();
        assert_eq!(e.kind(), "bad_size", "{layout:?}: {e}");
        let e = dequantize(
            &packed,
            &[1.0],
            &shape,
            layout,
            Granularity::Tensor,
            FloatDType::F32,
            SimdLevel::SCALAR,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "bad_size", "{layout:?}: {e}");
    }
}

/// A shape whose number of elements overflows: an error, not an overflow.
#[test]
fn a_shape_of_more_elements_than_fit_in_memory_is_an_error() {
    let shape = [1usize << 62, 256];
    for &layout in Layout::ALL {
        let e = layout.get().packed_shape(&shape).unwrap_err();
        assert!(
            e.to_string().contains("too many elements"),
            "{layout:?}: {e}"
        );
        let e = unpack(&[0x55; 66], &shape, layout, SimdLevel::SCALAR).unwrap_err();
        assert_eq!(e.kind(), "bad_shape", "{layout:?}: {e}");
        assert!(pack(&[0; 256], &shape, layout, None, SimdLevel::SCALAR).is_err());
    }
}

/// corpus/ryzq_metadata/regress-shape-past-data and regress-shape-overflow: a file whose
/// metadata gives a quantized tensor a shape its packed bytes do not hold. Dequantizing it
/// laid out an output of that shape (overflowing where its size does not fit in a `usize`)
/// and allocated it, before the packed bytes were checked.
#[test]
fn dequantizing_checks_the_metadata_shape_against_the_packed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        include_str!("../fuzz/corpus/ryzq_metadata/regress-shape-past-data"),
        include_str!("../fuzz/corpus/ryzq_metadata/regress-shape-overflow"),
    ];
    for (i, text) in texts.iter().enumerate() {
        let meta = ryzq_core::metadata::RyzqMetadata::from_json(text).unwrap();
        let name = meta.quantized.keys().next().unwrap().as_str();
        let packed = [0x55u8; 8];
        let scale = 1.0f32.to_le_bytes();
        let tensors = [
            (name, TensorView::new(Dtype::U8, vec![8], &packed).unwrap()),
            (
                "w.weight_scale",
                TensorView::new(Dtype::F32, vec![1], &scale).unwrap(),
            ),
        ];
        let header = HashMap::from([("ryzq".to_owned(), (*text).to_owned())]);
        let src = dir.path().join(format!("in{i}.safetensors"));
        safetensors::serialize_to_file(tensors, Some(header), &src).unwrap();
        let dst = dir.path().join(format!("out{i}.safetensors"));
        let request = convert::DequantizeRequest {
            dtype: None,
            source_linear_class: None,
            level: SimdLevel::SCALAR,
            threads: Some(1),
        };
        let e =
            convert::dequantize(&src, &dst, false, &request, &mut |_, _, _| Ok(())).unwrap_err();
        assert!(
            matches!(e.kind(), "bad_size" | "bad_shape"),
            "{}: {e}",
            e.kind()
        );
        assert_eq!(e.tensor(), Some(name), "{e}");
        assert!(!dst.exists());
    }
}

/// A row so long that its packed bytes overflow, though its values do not: the block layouts
/// multiplied the number of blocks by their bytes unchecked (q8_0: 2^59 blocks of 34 bytes).
#[test]
fn a_row_whose_packed_bytes_overflow_is_an_error() {
    let shape = [usize::MAX / 256 * 256];
    let e = Layout::Q8_0.get().packed_shape(&shape).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    for &layout in Layout::ALL {
        let e = unpack(&[0x55; 66], &shape, layout, SimdLevel::SCALAR).unwrap_err();
        assert!(
            matches!(e.kind(), "bad_shape" | "bad_size"),
            "{layout:?}: {e}"
        );
    }
}

/// corpus/safetensors_header/regress-scale-of-a-missing-tensor: ryzq metadata describing a
/// packed tensor the file does not have, whose scale is missing too: the check of the scales
/// looked the described tensor up and expected it there.
#[test]
fn a_description_of_tensors_the_file_lacks_is_an_error() {
    use ryzq_core::plan::Plan;
    use ryzq_core::sink::OutputKind;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.safetensors");
    std::fs::write(
        &path,
        include_bytes!("../fuzz/corpus/safetensors_header/regress-scale-of-a-missing-tensor"),
    )
    .unwrap();
    let source = ryzq_core::source::Source::open_file(&path).unwrap();
    let described = |e: &ryzq_core::Error| {
        let text = e.to_string();
        text.contains("is missing") || text.contains("the file has no such tensor")
    };
    let e = Plan::dequantize(&source, None, None, OutputKind::File).unwrap_err();
    assert!(described(&e), "{e}");
    let request = ryzq_core::plan::QuantizeRequest {
        layout: Layout::T1,
        method: ryzq_core::Method::AbsMean,
        granularity: Granularity::Tensor,
        linear_class: ryzq_core::plan::LinearClass::BitLinear,
        selection: ryzq_core::plan::Selection::default(),
        level: SimdLevel::SCALAR,
        threads: Some(1),
        copy_also: Vec::new(),
        gguf: ryzq_core::plan::gguf::GgufOptions::default(),
        source_linear_class: None,
    };
    let e = Plan::quantize(&source, &request, false).unwrap_err();
    assert!(described(&e), "{e}");
}
