//! A GGUF file as a sink: its key-value pairs and tensor infos are laid out first, from the
//! plan, so every tensor's offset is known before any data is written; then each tensor is
//! written at its place as it is ready, like a safetensors file. Tensors follow one another
//! in the order of their infos, each padded to the alignment with zeros (readers check that
//! offsets are exactly consecutive).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::{self, GgmlType, Value, put_string};
use crate::sink::tensor_file::TensorFile;

/// Where and how an output tensor is stored in a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufPlacement {
    pub ggml_type: GgmlType,
    /// The tensor's logical shape, numpy order (the file stores it reversed, as `ne`).
    pub shape: Vec<usize>,
}

/// One tensor of a GGUF file: its name, type, logical shape and size in bytes.
#[derive(Debug, Clone)]
pub struct GgufTensor<'a> {
    pub name: &'a str,
    pub placement: &'a GgufPlacement,
    pub nbytes: usize,
}

/// Lays out GGUF files.
pub struct GgufWriter;

fn check_layout(kvs: &[(String, Value)], tensors: &[GgufTensor<'_>]) -> Result<()> {
    let mut keys = HashSet::new();
    for (key, _) in kvs {
        if key.is_empty() || !keys.insert(key.as_str()) {
            return Err(Error::Format(format!(
                "GGUF keys must be unique and not empty: {key:?}"
            )));
        }
    }
    let mut names = HashSet::new();
    for t in tensors {
        if t.name.len() >= gguf::MAX_NAME {
            return Err(Error::Format(format!(
                "tensor name {:?} has {} bytes; GGUF readers take names under {}",
                t.name,
                t.name.len(),
                gguf::MAX_NAME
            )));
        }
        if !names.insert(t.name) {
            return Err(Error::Format(format!(
                "two output tensors are named {:?}",
                t.name
            )));
        }
        let expected =
            crate::gguf::read::tensor_bytes(t.placement.ggml_type.id(), &t.placement.shape)
                .map_err(|e| Error::Format(format!("tensor {:?}: {e}", t.name)))?;
        if expected != t.nbytes {
            return Err(Error::Size {
                what: format!(
                    "tensor {:?} ({} {:?})",
                    t.name,
                    t.placement.ggml_type.name(),
                    t.placement.shape
                ),
                actual: t.nbytes,
                expected,
            });
        }
        let dims = t.placement.shape.len();
        if dims == 0 || dims > gguf::MAX_DIMS {
            return Err(Error::Shape(format!(
                "tensor {:?} has {dims} dimensions; GGUF takes 1 to {}",
                t.name,
                gguf::MAX_DIMS
            )));
        }
    }
    Ok(())
}

impl GgufWriter {
    /// Creates the temporary file beside `dst` and writes the header: `kvs` in order, then
    /// the infos of `tensors` in order, which is the order of their data.
    pub fn create(
        dst: &Path,
        kvs: &[(String, Value)],
        tensors: &[GgufTensor<'_>],
    ) -> Result<TensorFile> {
        check_layout(kvs, tensors)?;
        let mut header = Vec::new();
        header.extend_from_slice(gguf::MAGIC);
        header.extend_from_slice(&gguf::VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            put_string(&mut header, key);
            header.extend_from_slice(&value.type_id().to_le_bytes());
            value.put(&mut header);
        }
        let mut offset = 0usize;
        let mut slots = HashMap::with_capacity(tensors.len());
        for t in tensors {
            put_string(&mut header, t.name);
            header.extend_from_slice(&(t.placement.shape.len() as u32).to_le_bytes());
            for &n in t.placement.shape.iter().rev() {
                header.extend_from_slice(&(n as u64).to_le_bytes());
            }
            header.extend_from_slice(&t.placement.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            slots.insert(t.name.to_owned(), (offset as u64, t.nbytes));
            offset += t.nbytes.next_multiple_of(gguf::ALIGNMENT);
        }
        let data_start = header.len().next_multiple_of(gguf::ALIGNMENT);
        header.resize(data_start, 0);
        TensorFile::create(dst, &header, data_start as u64, slots, offset as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_gguf_py_s_hexdump() {
        // FORMATS.md §1: gguf-py 0.19's GGUFWriter output for an f16 (2, 3) and an f32 (3,)
        // tensor is 416 bytes with data at 0x160; this file has the same tensors and keys.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        let kvs = vec![
            ("general.architecture".to_owned(), Value::from("bitnet")),
            ("bitnet.block_count".to_owned(), Value::U32(1)),
            ("a".to_owned(), Value::from("b")),
            (
                "tokenizer.ggml.tokens".to_owned(),
                Value::Array(gguf::value::Array::String(vec!["a".into(), "bc".into()])),
            ),
            ("c".to_owned(), Value::U32(7)),
        ];
        let f16 = GgufPlacement {
            ggml_type: GgmlType::F16,
            shape: vec![2, 3],
        };
        let f32 = GgufPlacement {
            ggml_type: GgmlType::F32,
            shape: vec![3],
        };
        let tensors = [
            GgufTensor {
                name: "token_embd.weight",
                placement: &f16,
                nbytes: 12,
            },
            GgufTensor {
                name: "blk.0.attn_norm.weight",
                placement: &f32,
                nbytes: 12,
            },
        ];
        let mut w = GgufWriter::create(&path, &kvs, &tensors).unwrap();
        w.write("token_embd.weight", &[1; 12]).unwrap();
        w.write("blk.0.attn_norm.weight", &[2; 12]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"GGUF\x03\0\0\0");
        assert_eq!(bytes.len() % 32, 0);
        let data = bytes.len() - 64;
        assert_eq!(&bytes[data..data + 12], &[1; 12]);
        assert_eq!(&bytes[data + 12..data + 32], &[0; 20]);
        assert_eq!(&bytes[data + 32..data + 44], &[2; 12]);
        // ne is reversed: [3, 2] for the (2, 3) tensor.
        let name = b"token_embd.weight";
        let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        assert_eq!(&bytes[at..at + 4], &2u32.to_le_bytes());
        assert_eq!(&bytes[at + 4..at + 12], &3u64.to_le_bytes());
        assert_eq!(&bytes[at + 12..at + 20], &2u64.to_le_bytes());
    }

    #[test]
    fn long_and_repeated_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = GgufPlacement {
            ggml_type: GgmlType::F32,
            shape: vec![1],
        };
        let long = "x".repeat(64);
        let t = |name| GgufTensor {
            name,
            placement: &p,
            nbytes: 4,
        };
        let path = dir.path().join("x.gguf");
        assert!(GgufWriter::create(&path, &[], &[t(&long)]).is_err());
        assert!(GgufWriter::create(&path, &[], &[t("a"), t("a")]).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
