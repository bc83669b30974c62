//! A GGUF file as a source: its tensors under their Hugging Face names where its architecture
//! is one ryzq writes (else their GGUF names), their rows marked for reordering back where
//! llama's graph permuted them, the float ones as they are and the packed ones (every GGML
//! type that is one of ryzq's layouts) described as ryzq describes the packed tensors of its
//! own safetensors files, so that dequantizing or converting a GGUF file is the same plan as
//! for a ryzq file.

use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;
use serde_json::{Map, Value as Json};

use super::safetensors::{SafetensorsFile, StoredTensor, open_regular};
use crate::dtype::StoredType;
use crate::error::{Error, Result};
use crate::gguf::read::{read_header, type_name};
use crate::gguf::{GgmlType, Value};
use crate::layout::Layout;
use crate::metadata::{self, QuantizedTensor, RyzqMetadata, ScaleConvention};
use crate::model::gguf::{hf_config, hf_name};

/// Opens the GGUF file `path`; with it, the `config.json` of the model it holds, where its
/// architecture is one ryzq writes.
pub fn open(path: &Path) -> Result<(SafetensorsFile, Option<Map<String, Json>>)> {
    let file = open_regular(path)?;
    // SAFETY: the map is only read; see `SafetensorsFile::open`.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let header = read_header(&map).map_err(|e| e.in_file(path, None))?;
    let method = header.string("ryzq.method").unwrap_or("absmean").to_owned();
    let written_in = header.string("ryzq.layout");
    let arch = header.string("general.architecture").unwrap_or("");
    let count = |key: &str| match header.get(&format!("{arch}.{key}")) {
        Some(Value::U32(n)) => Some(*n as usize),
        Some(Value::I32(n)) => usize::try_from(*n).ok(),
        Some(Value::U64(n)) => usize::try_from(*n).ok(),
        _ => None,
    };
    let head_count = count("attention.head_count").unwrap_or(0);
    let head_count_kv = count("attention.head_count_kv").unwrap_or(head_count);
    let mut seen = std::collections::HashSet::new();
    let mut description = RyzqMetadata {
        version: metadata::VERSION,
        ..RyzqMetadata::default()
    };
    let mut tensors = Vec::with_capacity(header.tensors.len());
    for t in &header.tensors {
        let in_file = |e: Error| e.in_file(path, Some(&t.name));
        let (name, row_order) =
            hf_name(&t.name, arch, head_count, head_count_kv).unwrap_or((t.name.clone(), None));
        if !seen.insert(name.clone()) {
            return Err(in_file(Error::Format(format!(
                "two tensors of the file are {name:?} once named as Hugging Face names them"
            ))));
        }
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
                name.clone(),
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
            name,
            dtype,
            shape,
            range: t.range.clone(),
            row_order,
        });
    }
    let metadata = HashMap::from([(metadata::KEY.to_owned(), description.to_json())]);
    let tied = !tensors.iter().any(|t| t.name == "lm_head.weight");
    let config = hf_config(&header, tied);
    let file = SafetensorsFile::from_parts(path, file, map, tensors, metadata);
    Ok((file, config))
}
