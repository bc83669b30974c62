//! `dequantize_file`: a file written by `quantize_file` back to a plain float checkpoint with the
//! original names, shapes and (by default) dtypes.

use std::collections::HashSet;
use std::path::Path;

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::file::metadata::{self, RyzqMetadata, ScaleConvention};
use crate::file::quantize::check_distinct;
use crate::file::reader::Checkpoint;
use crate::file::writer::{OutputTensor, SafetensorsWriter};
use crate::file::{float_dtype, safetensors_dtype};
use crate::kernels::widen::widen;
use crate::layout::Layout;
use crate::method::Granularity;
use crate::simd::SimdLevel;

/// Dequantizes `src` into `dst`, each quantized tensor in its original dtype. With `dtype`,
/// every float tensor of the output (kept ones too) is written in `dtype`, so the output is a
/// checkpoint of one float type. Biases stored divided by their weight's scale (for
/// `AutoBitLinear`) are multiplied back. Returns the number of tensors dequantized.
pub fn dequantize_file(
    src: &Path,
    dst: &Path,
    dtype: Option<FloatDType>,
    level: SimdLevel,
    threads: Option<usize>,
) -> Result<usize> {
    crate::threads::run(threads, || dequantize_in_pool(src, dst, dtype, level))?.0
}

fn dequantize_in_pool(
    src: &Path,
    dst: &Path,
    dtype: Option<FloatDType>,
    level: SimdLevel,
) -> Result<usize> {
    check_distinct(src, dst)?;
    let checkpoint = Checkpoint::open(src)?;
    let description = checkpoint
        .metadata()
        .get(metadata::KEY)
        .ok_or_else(|| {
            Error::Format(
                "no ryzq metadata: this file was not written by ryzq's quantize_file".into(),
            )
            .in_file(src, None)
        })
        .and_then(|text| RyzqMetadata::from_json(text).map_err(|e| e.in_file(src, None)))?;
    let scale_names: HashSet<&str> = description
        .quantized
        .values()
        .filter_map(|q| q.scale.as_deref())
        .collect();

    let mut outputs = Vec::new();
    for t in checkpoint.tensors() {
        if scale_names.contains(t.name.as_str()) {
            continue;
        }
        let out = match description.quantized.get(&t.name) {
            Some(q) => {
                let original =
                    FloatDType::parse(&q.dtype).map_err(|e| e.in_file(src, Some(&t.name)))?;
                OutputTensor {
                    name: t.name.clone(),
                    dtype: safetensors_dtype(dtype.unwrap_or(original)),
                    shape: q.shape.clone(),
                }
            }
            None => OutputTensor {
                name: t.name.clone(),
                dtype: match (dtype, float_dtype(t.dtype)) {
                    (Some(wanted), Some(_)) => safetensors_dtype(wanted),
                    _ => t.dtype,
                },
                shape: t.shape.clone(),
            },
        };
        outputs.push(out);
    }
    let mut meta = checkpoint.metadata().clone();
    meta.remove(metadata::KEY);
    let mut writer =
        SafetensorsWriter::create(dst, &outputs, meta).map_err(|e| e.in_file(dst, None))?;

    let mut count = 0;
    for out in &outputs {
        let t = checkpoint.tensor(&out.name).expect("planned from the file");
        let err = |e: Error| e.in_file(src, Some(&t.name));
        let Some(q) = description.quantized.get(&t.name) else {
            let bytes = checkpoint.bytes(t);
            let bias = description.divided_biases.get(&t.name);
            match float_dtype(t.dtype) {
                Some(from) if bias.is_some() || out.dtype != t.dtype => {
                    let factor = bias.map(|b| b.divisor);
                    let to = float_dtype(out.dtype).expect("a float output");
                    writer.write(&t.name, &convert_float(level, from, to, bytes, factor))?;
                }
                _ => writer.write(&t.name, bytes)?,
            }
            checkpoint.release(t);
            continue;
        };
        let layout = Layout::parse(&q.layout).map_err(err)?;
        let mut granularity = Granularity::parse(&q.granularity).map_err(err)?;
        let stored = match &q.scale {
            None => {
                // The blocks hold the scales: dequantize with each block's own, as readers do.
                let block = layout.get().block().ok_or_else(|| {
                    err(Error::Format(format!(
                        "the {} layout keeps its scales apart, but no scale tensor is named",
                        layout.name()
                    )))
                })?;
                granularity = Granularity::Group(block);
                layout.get().block_scales(checkpoint.bytes(t))
            }
            Some(name) => {
                let scale_tensor = checkpoint.tensor(name).ok_or_else(|| {
                    err(Error::Format(format!(
                        "its scale tensor {name:?} is missing"
                    )))
                })?;
                let scale_dtype = float_dtype(scale_tensor.dtype).ok_or_else(|| {
                    err(Error::Format(format!(
                        "its scale tensor {name:?} has dtype {:?}, not a float",
                        scale_tensor.dtype
                    )))
                })?;
                let mut stored = vec![0f32; scale_tensor.numel()];
                widen(
                    level,
                    scale_dtype,
                    checkpoint.bytes(scale_tensor),
                    &mut stored,
                );
                stored
            }
        };
        let scales: Vec<f32> = match q.scale_convention {
            ScaleConvention::Multiply => stored,
            ScaleConvention::Divide => stored.iter().map(|s| 1.0 / s).collect(),
        };
        let out_dtype = float_dtype(out.dtype).expect("a float output");
        let bytes = crate::dequantize(
            checkpoint.bytes(t),
            &scales,
            &q.shape,
            layout,
            granularity,
            out_dtype,
            level,
        )
        .map_err(err)?;
        writer.write(&t.name, &bytes)?;
        checkpoint.release(t);
        count += 1;
    }
    writer.finish()?;
    Ok(count)
}

/// `bytes` of a `from` tensor as `to`, each value multiplied by `factor` (if any) in float32
/// and rounded to nearest.
fn convert_float(
    level: SimdLevel,
    from: FloatDType,
    to: FloatDType,
    bytes: &[u8],
    factor: Option<f32>,
) -> Vec<u8> {
    let mut values = vec![0f32; bytes.len() / from.size()];
    widen(level, from, bytes, &mut values);
    if let Some(factor) = factor {
        for v in &mut values {
            *v *= factor;
        }
    }
    to.encode(&values)
}
