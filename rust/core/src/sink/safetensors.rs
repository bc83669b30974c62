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
use std::fs::File;
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};

use crate::dtype::StoredType;
use crate::error::{Error, Result};
use crate::sink::atomic::AtomicFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    pub name: String,
    pub dtype: StoredType,
    pub shape: Vec<usize>,
}

impl OutputTensor {
    #[must_use]
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bits() / 8
    }
}

pub struct SafetensorsWriter {
    file: AtomicFile,
    data_start: u64,
    /// name -> (offset in the data, length, written yet)
    slots: HashMap<String, (u64, usize, bool)>,
    size: u64,
}

fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
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

impl SafetensorsWriter {
    /// Creates the temporary file beside `dst` and writes the header.
    pub fn create(
        dst: &Path,
        tensors: &[OutputTensor],
        metadata: HashMap<String, String>,
    ) -> Result<Self> {
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
            if slots
                .insert(t.name.clone(), (offset as u64, n, false))
                .is_some()
            {
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

        let file = AtomicFile::create(dst)?;
        let data_start = 8 + header.len() as u64;
        let size = data_start + offset as u64;
        let f = file.file();
        let dst = file.dst().to_path_buf();
        write_at(f, &(header.len() as u64).to_le_bytes(), 0).map_err(|e| Error::io(&dst, e))?;
        write_at(f, &header, 8).map_err(|e| Error::io(&dst, e))?;
        f.set_len(size).map_err(|e| Error::io(&dst, e))?;
        Ok(Self {
            file,
            data_start,
            slots,
            size,
        })
    }

    /// Writes the data of the tensor `name`, which must have its planned size.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some((offset, len, written)) = self.slots.get_mut(name) else {
            return Err(Error::Format(format!("no output tensor is named {name:?}")));
        };
        Error::check_size(data.len(), *len, || format!("output tensor {name:?}"))?;
        *written = true;
        let at = self.data_start + *offset;
        write_at(self.file.file(), data, at).map_err(|e| Error::io(self.file.dst(), e))
    }

    /// Writes tensor `name` with `len` bytes of `src` from `offset`, copied by the kernel
    /// (`copy_file_range` where the system has it) without passing through this process.
    pub fn copy_from(&mut self, name: &str, src: &File, offset: u64, len: usize) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let Some((at, planned, written)) = self.slots.get_mut(name) else {
            return Err(Error::Format(format!("no output tensor is named {name:?}")));
        };
        Error::check_size(len, *planned, || format!("output tensor {name:?}"))?;
        *written = true;
        let dst = self.file.dst().to_path_buf();
        let mut reader = src;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&dst, e))?;
        let mut out = self.file.file();
        out.seek(SeekFrom::Start(self.data_start + *at))
            .map_err(|e| Error::io(&dst, e))?;
        let copied = std::io::copy(&mut reader.take(len as u64), &mut out)
            .map_err(|e| Error::io(&dst, e))?;
        if copied != len as u64 {
            return Err(Error::Format(format!(
                "tensor {name:?}: the input ended after {copied} of its {len} bytes"
            )));
        }
        Ok(())
    }

    /// Size of the finished file in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Renames the file into place once every tensor has been written.
    pub fn finish(self) -> Result<()> {
        if let Some((name, _)) = self.slots.iter().find(|(_, (_, _, w))| !w) {
            return Err(Error::Format(format!(
                "output tensor {name:?} was never written"
            )));
        }
        self.file.finish()
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
            },
            OutputTensor {
                name: "a".into(),
                dtype: StoredType::F32,
                shape: vec![2],
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
        }];
        let w = SafetensorsWriter::create(&path, &tensors, HashMap::new()).unwrap();
        assert!(w.finish().is_err());
        drop(SafetensorsWriter::create(&path, &tensors, HashMap::new()).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
