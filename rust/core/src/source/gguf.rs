//! A GGUF file as a source: its tensors under their GGUF names, the float ones as they are
//! and the packed ones (every GGML type that is one of ryzq's layouts) described as ryzq
//! describes the packed tensors of its own safetensors files, so that dequantizing a GGUF file
//! is the same plan as dequantizing a ryzq file.

use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;

use super::safetensors::{SafetensorsFile, StoredTensor, open_regular};
use crate::dtype::StoredType;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::gguf::read::{read_header, type_name};
use crate::layout::Layout;
use crate::metadata::{self, QuantizedTensor, RyzqMetadata, ScaleConvention};

/// Opens the GGUF file `path`.
pub fn open(path: &Path) -> Result<SafetensorsFile> {
    let file = open_regular(path)?;
    // SAFETY: the map is only read; see `SafetensorsFile::open`.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let header = read_header(&map).map_err(|e| e.in_file(path, None))?;
    let method = header.string("ryzq.method").unwrap_or("absmean").to_owned();
    let written_in = header.string("ryzq.layout");
    let mut description = RyzqMetadata {
        version: metadata::VERSION,
        ..RyzqMetadata::default()
    };
    let mut tensors = Vec::with_capacity(header.tensors.len());
    for t in &header.tensors {
        let in_file = |e: Error| e.in_file(path, Some(&t.name));
        let (dtype, shape) = if let Some(dtype) = GgmlType::float_of_id(t.ggml_type) {
            (dtype.into(), t.shape.clone())
        } else {
            // Layouts that share a GGML type (I2_S for x86 and for ARM builds) are told apart
            // by the layout the file says it was written in, else the first (x86, the build
            // bitnet.cpp makes by default).
            let sharing: Vec<Layout> = Layout::ALL
                .iter()
                .copied()
                .filter(|l| l.get().gguf_type() == Some(t.ggml_type))
                .collect();
            let layout = sharing
                .iter()
                .copied()
                .find(|l| Some(l.name()) == written_in)
                .or_else(|| sharing.first().copied())
                .ok_or_else(|| {
                    in_file(Error::Format(format!(
                        "GGML type {} ({}), which is none of ryzq's layouts",
                        t.ggml_type,
                        type_name(t.ggml_type).unwrap_or("unknown")
                    )))
                })?;
            let granularity = layout
                .get()
                .packed_granularity()
                .expect("layouts with a GGML type keep their scales in the packed data");
            description.quantized.insert(
                t.name.clone(),
                QuantizedTensor {
                    layout: layout.name().into(),
                    method: method.clone(),
                    granularity: granularity.name(),
                    dtype: "F32".into(),
                    shape: t.shape.clone(),
                    scale: None,
                    scale_convention: ScaleConvention::Multiply,
                },
            );
            let packed = layout.get().packed_shape(&t.shape).map_err(in_file)?;
            (StoredType::U8, packed)
        };
        tensors.push(StoredTensor {
            name: t.name.clone(),
            dtype,
            shape,
            range: t.range.clone(),
        });
    }
    let metadata = HashMap::from([(metadata::KEY.to_owned(), description.to_json())]);
    Ok(SafetensorsFile::from_parts(
        path, file, map, tensors, metadata,
    ))
}
