//! Sources: what lists the tensors of a checkpoint and yields them one at a time. A source is
//! a safetensors file, or a Hugging Face model folder (its shards, index and `config.json`).
//! Packed, GGUF and Hub sources are more implementations of the same lists.

pub mod folder;
pub mod gguf;
pub mod packed;
pub mod safetensors;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use folder::ModelFolder;
pub use safetensors::{SafetensorsFile, StoredTensor};

use crate::error::{Error, Result};

/// Where a tensor of a [`Source`] is: its file, and its place in that file's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorRef {
    pub file: usize,
    pub index: usize,
}

/// The input of a conversion: one safetensors file, or the shards of a model folder.
pub struct Source {
    path: PathBuf,
    files: Vec<SafetensorsFile>,
    folder: Option<ModelFolder>,
    /// For a GGUF file of an architecture ryzq writes: the `config.json` its keys describe.
    gguf_config: Option<serde_json::Map<String, serde_json::Value>>,
    by_name: HashMap<String, TensorRef>,
}

impl Source {
    /// A single safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{}: a folder, not a safetensors file; give model folders as folders \
                 (quantize_model)",
                path.display()
            )));
        }
        folder::refuse_pickle(path)?;
        let (file, gguf_config) = if crate::sink::is_gguf(path) {
            gguf::open(path)?
        } else {
            (SafetensorsFile::open(path)?, None)
        };
        let mut source = Self::new(path, vec![file], None)?;
        source.gguf_config = gguf_config;
        Ok(source)
    }

    /// A Hugging Face model folder: `config.json`, and `model.safetensors` or the shards its
    /// `model.safetensors.index.json` names.
    pub fn open_folder(dir: &Path) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let files = folder
            .shards()
            .iter()
            .map(|shard| SafetensorsFile::open(&dir.join(shard)))
            .collect::<Result<Vec<_>>>()?;
        Self::new(dir, files, Some(folder))
    }

    fn new(path: &Path, files: Vec<SafetensorsFile>, folder: Option<ModelFolder>) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            for (index, t) in file.tensors().iter().enumerate() {
                let place = TensorRef { file: f, index };
                if let Some(first) = by_name.insert(t.name.clone(), place) {
                    return Err(Error::Format(format!(
                        "tensor {:?} is in both {} and {}",
                        t.name,
                        files[first.file].path().display(),
                        file.path().display()
                    ))
                    .in_file(path, None));
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            files,
            folder,
            gguf_config: None,
            by_name,
        })
    }

    /// The file or folder this source was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The safetensors files, in order: one, or the folder's shards by name.
    #[must_use]
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// The model folder, for a folder source.
    #[must_use]
    pub fn folder(&self) -> Option<&ModelFolder> {
        self.folder.as_ref()
    }

    /// The `config.json` of the model a GGUF source holds, where its architecture is one
    /// ryzq writes.
    #[must_use]
    pub fn gguf_config(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.gguf_config.as_ref()
    }

    /// The `config.json` of the model: the folder's, or the one a GGUF file's keys describe.
    #[must_use]
    pub fn config(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.folder
            .as_ref()
            .map(ModelFolder::config)
            .or(self.gguf_config.as_ref())
    }

    /// Every tensor, file by file, each in the order of its data.
    pub fn tensors(&self) -> impl Iterator<Item = (TensorRef, &StoredTensor)> {
        self.files.iter().enumerate().flat_map(|(f, file)| {
            file.tensors()
                .iter()
                .enumerate()
                .map(move |(index, t)| (TensorRef { file: f, index }, t))
        })
    }

    /// The tensor named `name`, in whichever file holds it.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<(TensorRef, &StoredTensor)> {
        self.by_name.get(name).map(|&r| (r, self.tensor(r)))
    }

    #[must_use]
    pub fn tensor(&self, r: TensorRef) -> &StoredTensor {
        &self.files[r.file].tensors()[r.index]
    }

    #[must_use]
    pub fn file(&self, r: TensorRef) -> &SafetensorsFile {
        &self.files[r.file]
    }

    /// Bytes of all the source's safetensors files.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.files.iter().map(SafetensorsFile::size).sum()
    }
}
