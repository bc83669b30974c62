//! A safetensors file as a source: the header is validated by the `safetensors` crate's rules;
//! when it fails, ryzq looks again to say which tensor and what is wrong. Tensors are read from
//! a memory map, one at a time, and their pages released after.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors};

use crate::dtype::StoredType;
use crate::model::gguf::HeadPermutation;

use crate::error::{Error, Result};

/// The header length field, and the most the format allows.
const LEN_BYTES: usize = 8;
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: StoredType,
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub range: Range<usize>,
    /// The permutation that gives its rows in Hugging Face's order, where they are stored in
    /// another (llama's q and k in a GGUF file).
    pub row_order: Option<HeadPermutation>,
}

impl StoredTensor {
    #[must_use]
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A memory-mapped, validated safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    map: Mmap,
    tensors: Vec<StoredTensor>,
    metadata: HashMap<String, String>,
    size: u64,
}

/// Opens `path` for reading, if it is a regular file: opening a FIFO would wait for a writer,
/// and a device is no checkpoint (links to regular files are read).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::UnsafePath(
            "not a regular file (a folder, FIFO, device or socket), so not a checkpoint".into(),
        )
        .in_file(path, None));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

impl SafetensorsFile {
    /// A file of tensors read from another container (GGUF), with `metadata` describing them
    /// as ryzq's own `__metadata__` would.
    pub(crate) fn from_parts(
        path: &Path,
        file: File,
        map: Mmap,
        tensors: Vec<StoredTensor>,
        metadata: HashMap<String, String>,
    ) -> Self {
        let size = map.len() as u64;
        Self {
            path: path.to_path_buf(),
            file,
            map,
            tensors,
            metadata,
            size,
        }
    }

    pub fn open(path: &Path) -> Result<Self> {
        let file = open_regular(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size < LEN_BYTES as u64 {
            return Err(truncated_error(
                path,
                None,
                format!(
                    "truncated file: {size} bytes, but a safetensors file starts with an \
                     8-byte header length"
                ),
            ));
        }
        // SAFETY: the map is only read. Another process truncating or rewriting the file
        // while ryzq reads it is outside what any reader can guard against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| diagnose(path, &map, &e.to_string()))?;
        let data_start = LEN_BYTES + header_len;
        let info = meta.tensors();
        let tensors = meta
            .offset_keys()
            .into_iter()
            .map(|name| {
                let t = info[&name];
                StoredTensor {
                    dtype: StoredType::from_safetensors(t.dtype),
                    shape: t.shape.clone(),
                    range: data_start + t.data_offsets.0..data_start + t.data_offsets.1,
                    name,
                    row_order: None,
                }
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
            size,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in the order of their data in the file.
    #[must_use]
    pub fn tensors(&self) -> &[StoredTensor] {
        &self.tensors
    }

    #[must_use]
    pub fn tensor(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The header's `__metadata__` map.
    #[must_use]
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file, for copies that need not pass through memory.
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    #[must_use]
    pub fn bytes(&self, tensor: &StoredTensor) -> &[u8] {
        &self.map[tensor.range.clone()]
    }

    /// The tensor's bytes, its pages mapped in now (read from disk if needed) so that the file
    /// is read here and not in the middle of the kernels: one `MADV_POPULATE_READ` call where
    /// Linux has it, else a read of one byte per page.
    ///
    /// A file another program truncated since it was opened would end the process with SIGBUS
    /// on the first access past its new end; that is found here instead, and is an error: the
    /// file's size is checked first, and the kernel's populate call refuses (`EFAULT`) pages
    /// past the end. A file cut between this call and the kernels' reads remains out of reach
    /// of any reader of a mapping.
    pub fn read(&self, tensor: &StoredTensor) -> Result<&[u8]> {
        let now = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if now < self.size {
            return Err(self.shrank(now));
        }
        if tensor.range.is_empty() {
            return Ok(&[]);
        }
        #[cfg(target_os = "linux")]
        match self.map.advise_range(
            memmap2::Advice::PopulateRead,
            tensor.range.start,
            tensor.range.len(),
        ) {
            Ok(()) => return Ok(self.bytes(tensor)),
            Err(e) if e.raw_os_error() == Some(14) => {
                // EFAULT: a page past the end of the file.
                let now = self.file.metadata().map_or(0, |m| m.len());
                return Err(self.shrank(now));
            }
            Err(_) => {} // a kernel without MADV_POPULATE_READ
        }
        let touched = self
            .bytes(tensor)
            .iter()
            .step_by(4096)
            .fold(0u8, |acc, &b| acc ^ b);
        std::hint::black_box(touched);
        Ok(self.bytes(tensor))
    }

    fn shrank(&self, now: u64) -> Error {
        Error::Truncated(format!(
            "the file shrank from {} to {now} bytes while ryzq was reading it: another program \
             is changing it",
            self.size
        ))
        .in_file(&self.path, None)
    }

    /// Drops the tensor's pages from this process's memory (the page cache keeps them), so
    /// that resident memory does not grow with the file.
    pub fn release(&self, tensor: &StoredTensor) {
        if tensor.range.is_empty() {
            return;
        }
        // SAFETY: the map is a read-only, file-backed mapping: dropping its pages only makes
        // the next read fetch them from the file again. No slice of the map outlives this
        // call in a way that depends on the pages staying resident.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                tensor.range.start,
                tensor.range.len(),
            )
        };
    }
}

fn format_error(path: &Path, tensor: Option<&str>, message: String) -> Error {
    Error::Format(message).in_file(path, tensor)
}

fn truncated_error(path: &Path, tensor: Option<&str>, message: String) -> Error {
    Error::Truncated(message).in_file(path, tensor)
}

/// Says what is wrong with a header the `safetensors` crate refused, naming the tensor where
/// there is one; falls back to the crate's own message.
fn diagnose(path: &Path, file: &[u8], crate_message: &str) -> Error {
    let size = file.len();
    let n = u64::from_le_bytes(file[..LEN_BYTES].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return format_error(
            path,
            None,
            format!("header length {n} is over the format's limit of {MAX_HEADER} bytes"),
        );
    }
    let n = n as usize;
    if LEN_BYTES + n > size {
        return truncated_error(
            path,
            None,
            format!(
                "header length {n} runs past the end of the file ({size} bytes): the file is \
                 truncated or not a safetensors file"
            ),
        );
    }
    let header: serde_json::Value = match serde_json::from_slice(&file[LEN_BYTES..LEN_BYTES + n]) {
        Ok(v) => v,
        Err(e) => {
            return format_error(path, None, format!("header is not valid JSON: {e}"));
        }
    };
    let Some(entries) = header.as_object() else {
        return format_error(path, None, "header is not a JSON object".into());
    };
    let data_len = size - LEN_BYTES - n;
    let mut spans: Vec<(usize, usize, &str)> = Vec::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: String| format_error(path, Some(name), what);
        let Some(dtype) = entry.get("dtype") else {
            return bad("no dtype".into());
        };
        let dtype: Dtype = match serde_json::from_value(dtype.clone()) {
            Ok(d) => d,
            Err(_) => return bad(format!("unknown dtype {dtype}")),
        };
        let Some(shape) = entry
            .get("shape")
            .and_then(|s| serde_json::from_value::<Vec<usize>>(s.clone()).ok())
        else {
            return bad("shape is missing or not a list of sizes".into());
        };
        let Some((start, end)) = entry
            .get("data_offsets")
            .and_then(|s| serde_json::from_value::<(usize, usize)>(s.clone()).ok())
        else {
            return bad("data_offsets is missing or not [start, end]".into());
        };
        if end < start {
            return bad(format!(
                "data_offsets [{start}, {end}] end before they start"
            ));
        }
        let need = shape
            .iter()
            .try_fold(dtype.bitsize(), |a, &d| a.checked_mul(d))
            .map(|bits| bits / 8);
        if need != Some(end - start) {
            return bad(format!(
                "data_offsets [{start}, {end}] hold {} bytes, but {dtype:?} of shape {shape:?} \
                 needs {}",
                end - start,
                need.map_or("more than fits in memory".into(), |b| b.to_string())
            ));
        }
        if end > data_len {
            return truncated_error(
                path,
                Some(name),
                format!(
                    "data_offsets [{start}, {end}] run past the end of the data ({data_len} \
                     bytes): the file is truncated"
                ),
            );
        }
        spans.push((start, end, name));
    }
    spans.sort_unstable();
    let mut next = 0;
    for &(start, end, name) in &spans {
        if start < next {
            return format_error(
                path,
                Some(name),
                format!("data_offsets [{start}, {end}] overlap the previous tensor's data"),
            );
        }
        if start > next {
            return format_error(
                path,
                Some(name),
                format!("data_offsets [{start}, {end}] leave a gap after byte {next}"),
            );
        }
        next = end;
    }
    if next != data_len {
        return format_error(
            path,
            None,
            format!(
                "the tensors' data ends at byte {next}, but the file holds {data_len} bytes of data"
            ),
        );
    }
    format_error(
        path,
        None,
        format!("invalid safetensors file: {crate_message}"),
    )
}
