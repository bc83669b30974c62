//! A safetensors file as a sink: its tensors arrive one at a time, in any order.
//!
//! The whole layout (header and every tensor's offsets) is fixed first, so each tensor is
//! written at its place as soon as it is ready and never held for later. The `safetensors`
//! crate's serializer instead pulls every tensor through an infallible `View::data`, which
//! leaves no way to report an error in the middle of a tensor. Tensors are laid out by
//! decreasing alignment, as that serializer does, so every one starts at an offset aligned for
//! its dtype. The file is written through an [`AtomicFile`] and appears at its path only when
//! [`SafetensorsWriter::finish`] succeeds; dropped unfinished, it is removed.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};

use crate::dtype::StoredType;
use crate::error::{Error, Result};
use crate::sink::gguf::GgufPlacement;
use crate::sink::tensor_file::TensorFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub name: String,
    /// The type and shape of its bytes in a safetensors file (`uint8`, the packed shape, for
    /// packed tensors).
    pub dtype: StoredType,
    pub shape: Vec<usize>,
    /// Its GGML type and logical shape, for a GGUF file.
    pub gguf: Option<GgufPlacement>,
}

impl OutputTensor {
    #[must_use]
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bits() / 8
    }
}

/// `value` with the keys of every object in sorted order.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}

/// Lays out safetensors files.
pub struct SafetensorsWriter;

impl SafetensorsWriter {
    /// Creates the temporary file beside `dst` and writes the header.
    pub fn create(
        dst: &Path,
        tensors: &[OutputTensor],
        metadata: HashMap<String, String>,
    ) -> Result<TensorFile> {
        let mut order: Vec<&OutputTensor> = tensors.iter().collect();
        order.sort_by_key(|t| std::cmp::Reverse(t.dtype.bits()));
        let mut offset = 0usize;
        let mut infos = Vec::with_capacity(order.len());
        let mut slots = HashMap::with_capacity(order.len());
        for t in order {
            let n = t.nbytes();
            infos.push((
                t.name.clone(),
                TensorInfo {
                    dtype: t.dtype.to_safetensors(),
                    shape: t.shape.clone(),
                    data_offsets: (offset, offset + n),
                },
            ));
            if slots.insert(t.name.clone(), (offset as u64, n)).is_some() {
                return Err(Error::Format(format!(
                    "two output tensors are named {:?}",
                    t.name
                )));
            }
            offset += n;
        }
        let metadata = Metadata::new(Some(metadata), infos)
            .map_err(|e| Error::Format(format!("cannot lay out the output: {e}")))?;
        // Through a JSON value with its keys sorted, so that the same input gives the same
        // bytes: the crate keeps `__metadata__` in a HashMap of random order.
        let mut header = serde_json::to_value(&metadata)
            .map(sorted_keys)
            .and_then(|v| serde_json::to_vec(&v))
            .map_err(|e| Error::Format(format!("cannot write the output header: {e}")))?;
        header.resize(header.len().next_multiple_of(8), b' ');

        let data_start = 8 + header.len() as u64;
        let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
        prefix.extend_from_slice(&header);
        TensorFile::create(dst, &prefix, data_start, slots, offset as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = vec![
            OutputTensor {
                name: "b".into(),
                dtype: StoredType::U8,
                shape: vec![3],
                gguf: None,
            },
            OutputTensor {
                name: "a".into(),
                dtype: StoredType::F32,
                shape: vec![2],
                gguf: None,
            },
        ];
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let metadata = (0..8)
                    .map(|k| (format!("key{k}"), format!("v{k}")))
                    .collect();
                let path = dir.path().join(format!("{i}.safetensors"));
                let mut w = SafetensorsWriter::create(&path, &tensors, metadata).unwrap();
                w.write("b", &[1, 2, 3]).unwrap();
                w.write("a", &[0; 8]).unwrap();
                w.finish().unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        // The float tensor comes first, aligned; the bytes follow.
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(&files[0][8 + n + 8..], &[1, 2, 3]);
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let tensors = [OutputTensor {
            name: "a".into(),
            dtype: StoredType::U8,
            shape: vec![2],
            gguf: None,
        }];
        let w = SafetensorsWriter::create(&path, &tensors, HashMap::new()).unwrap();
        assert!(w.finish().is_err());
        drop(SafetensorsWriter::create(&path, &tensors, HashMap::new()).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
