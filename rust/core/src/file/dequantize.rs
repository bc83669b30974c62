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

/// Dequantizes `src` into `dst`, every quantized tensor in `dtype` or, by default, its
/// original dtype. Returns the number of tensors dequantized.
pub fn dequantize_file(
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
                dtype: t.dtype,
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
        let Some(q) = description.quantized.get(&t.name) else {
            writer.write(&t.name, checkpoint.bytes(t))?;
            checkpoint.release(t);
            continue;
        };
        let err = |e: Error| e.in_file(src, Some(&t.name));
        let layout = Layout::parse(&q.layout).map_err(err)?;
        let stored = match &q.scale {
            None => layout.get().block_scales(checkpoint.bytes(t)),
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
        let granularity = Granularity::parse(&q.granularity).map_err(err)?;
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
