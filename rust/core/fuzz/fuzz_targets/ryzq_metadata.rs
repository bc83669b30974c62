//! Any bytes as the `ryzq` metadata of a file: parsing it, parsing its names, and, when it
//! parses, dequantizing a small file that holds the tensors it describes (packed codes of its
//! shapes where they are small, its scale tensors, its divided biases) must give errors, never
//! a panic, a crash, a hang or an allocation past the fuzzer's limit.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use ryzq_core::metadata::{self, RyzqMetadata};
use ryzq_core::plan::LinearClass;
use ryzq_core::source::Source;
use ryzq_core::{FloatDType, Granularity, Layout, SimdLevel};
use ryzq_core_fuzz::{
    MAX_VALUES, Tensor, dequantize_into, filler, fresh, plan_dequantize, safetensors_bytes,
    small_numel,
};
use safetensors::Dtype;

/// Tensors a file is made with at most.
const MAX_TENSORS: usize = 16;

/// The packed tensor of a quantized one: its codes packed where its shape and layout allow
/// (codes -1, 0, 1 in turn, block scales 1), else bytes of a small shape.
fn packed_tensor(name: &str, layout: Option<Layout>, shape: &[usize], seed: u8) -> Tensor {
    if let Some(layout) = layout
        && let Ok(packed_shape) = layout.get().packed_shape(shape)
        && let Some(numel) = small_numel(shape, MAX_VALUES)
    {
        let codes: Vec<i8> = (0..numel).map(|i| (i % 3) as i8 - 1).collect();
        let scales = layout
            .get()
            .packed_granularity()
            .and_then(|g| g.groups(shape).ok())
            .map(|(groups, _)| vec![1.0f32; groups]);
        if let Ok(data) =
            ryzq_core::pack(&codes, shape, layout, scales.as_deref(), SimdLevel::SCALAR)
        {
            return Tensor {
                name: name.to_owned(),
                dtype: Dtype::U8,
                shape: packed_shape,
                data,
            };
        }
    }
    let len = usize::from(seed % 64) + 1;
    Tensor {
        name: name.to_owned(),
        dtype: Dtype::U8,
        shape: vec![len],
        data: filler(Dtype::U8, len, 0.0, seed),
    }
}

/// Adds `t` unless the file is full or has a tensor of its name.
fn add(t: Tensor, tensors: &mut Vec<Tensor>) {
    if tensors.len() < MAX_TENSORS && tensors.iter().all(|o| o.name != t.name) {
        tensors.push(t);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(meta) = RyzqMetadata::from_json(text) else {
        return;
    };
    // The round trip through ryzq's own writer keeps every field (JSON has no infinity,
    // which a divisor past float32's range parses to).
    if meta.divided_biases.values().all(|b| b.divisor.is_finite()) {
        let again = RyzqMetadata::from_json(&meta.to_json()).expect("ryzq reads what it writes");
        assert_eq!(again, meta);
    }
    if let Some(class) = &meta.linear_class {
        let _ = LinearClass::parse(class);
    }
    let mut tensors: Vec<Tensor> = Vec::new();
    for (i, (name, q)) in meta.quantized.iter().enumerate() {
        let layout = Layout::parse(&q.layout).ok();
        let granularity = Granularity::parse(&q.granularity).ok();
        let dtype = FloatDType::parse(&q.dtype).ok();
        let _ = ryzq_core::Method::parse(&q.method);
        let seed = i as u8;
        add(packed_tensor(name, layout, &q.shape, seed), &mut tensors);
        if let Some(scale) = &q.scale {
            // One scale per group where the shape and granularity say how many, as the
            // original's dtype (float32 where it is none).
            let groups = granularity
                .and_then(|g| g.groups(&q.shape).ok())
                .map(|(groups, _)| groups)
                .filter(|&g| small_numel(&q.shape, MAX_VALUES).is_some() && g <= MAX_VALUES)
                .unwrap_or(usize::from(seed % 4) + 1);
            let dtype = dtype.map_or(Dtype::F32, |d| {
                ryzq_core::StoredType::from(d).to_safetensors()
            });
            add(
                Tensor {
                    name: scale.clone(),
                    dtype,
                    shape: vec![groups],
                    data: filler(dtype, groups, 0.5, seed),
                },
                &mut tensors,
            );
        }
    }
    for name in meta.divided_biases.keys() {
        add(
            Tensor {
                name: name.clone(),
                dtype: Dtype::F32,
                shape: vec![4],
                data: filler(Dtype::F32, 4, 0.25, 0),
            },
            &mut tensors,
        );
    }
    let header = HashMap::from([(metadata::KEY.to_owned(), text.to_owned())]);
    let Some(bytes) = safetensors_bytes(&tensors, header) else {
        return;
    };
    let path = fresh("in.safetensors");
    std::fs::write(&path, bytes).expect("write to the scratch folder");
    let source = Source::open_file(&path).expect("ryzq reads what the safetensors crate writes");
    plan_dequantize(&source);
    drop(source);
    dequantize_into(&path, "out.safetensors", false, None);
    dequantize_into(&path, "out.safetensors", false, Some(FloatDType::F32));
});
