//! Sinks: where a conversion writes. A safetensors file, a Hugging Face model folder (its
//! shards under their names, an index, `config.json`, the model's other files), or a GGUF
//! model file. Every sink writes through [`atomic`]: nothing appears at the destination until
//! it is complete.

pub mod atomic;
pub mod folder;
pub mod gguf;
pub mod safetensors;
pub mod tensor_file;

use std::path::{Path, PathBuf};

pub use gguf::{GgufPlacement, GgufWriter};
pub use safetensors::{OutputTensor, SafetensorsWriter};
pub use tensor_file::TensorFile;

use crate::error::{Error, Result};
use crate::plan::{OutputFile, Plan};
use crate::source::Source;

/// The destination of a conversion.
pub enum Sink {
    /// One safetensors file.
    File { dst: PathBuf },
    /// A model folder, written in a temporary folder beside it.
    Folder(folder::FolderSink),
    /// One GGUF model file.
    Gguf { dst: PathBuf },
}

/// What a conversion writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One safetensors file.
    File,
    /// A Hugging Face model folder.
    Folder,
    /// One GGUF model file.
    Gguf,
}

/// What `source` becomes at `dst`: a GGUF model file for a `.gguf` destination; else a model
/// folder for a model folder, and for a GGUF model file (whose keys give its `config.json`)
/// unless `dst` ends in `.safetensors`; else a safetensors file.
#[must_use]
pub fn output_kind(source: &Source, dst: &Path) -> OutputKind {
    let safetensors = dst
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_gguf(dst) {
        OutputKind::Gguf
    } else if source.folder().is_some() || (source.gguf_config().is_some() && !safetensors) {
        OutputKind::Folder
    } else {
        OutputKind::File
    }
}

/// Whether `dst` names a GGUF file, by its extension.
#[must_use]
pub fn is_gguf(dst: &Path) -> bool {
    dst.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Refuses `dst` when it is `src` itself (or a link to it), or when its folder is missing.
pub fn check_destination(src: &Path, dst: &Path) -> Result<()> {
    let same = match (std::fs::metadata(src), std::fs::metadata(dst)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => std::fs::canonicalize(src).ok() == std::fs::canonicalize(dst).ok() && dst.exists(),
    };
    if same {
        return Err(Error::InvalidArgument(format!(
            "{}: the output would overwrite the input; choose another destination",
            dst.display()
        )));
    }
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: the output folder {} does not exist",
            dst.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses an output folder inside the source folder, which the copy of the model's other
/// files would then copy into itself.
fn check_outside(src_dir: &Path, dst: &Path) -> Result<()> {
    let (Ok(src), Ok(parent)) = (
        std::fs::canonicalize(src_dir),
        std::fs::canonicalize(atomic::parent(dst)),
    ) else {
        return Ok(());
    };
    if parent.starts_with(&src) {
        return Err(Error::UnsafePath(format!(
            "{}: inside the model folder {} it is made from; write it elsewhere",
            dst.display(),
            src_dir.display()
        )));
    }
    Ok(())
}

/// Refuses `dst` as a model-folder output of `source` where a one-process run would, without
/// making anything: the input itself, a folder inside the model's, a folder not empty.
pub fn check_folder_destination(source: &Source, dst: &Path) -> Result<()> {
    check_destination(source.path(), dst)?;
    if let Some(model) = source.folder() {
        check_outside(model.dir(), dst)?;
    }
    folder::FolderSink::check(dst)
}

impl Sink {
    /// A sink of the kind [`output_kind`] says.
    pub fn for_source(source: &Source, dst: &Path) -> Result<Self> {
        check_destination(source.path(), dst)?;
        if let Some(model) = source.folder() {
            check_outside(model.dir(), dst)?;
        }
        match output_kind(source, dst) {
            OutputKind::Gguf => {
                atomic::check_replaceable_file(dst)?;
                Ok(Sink::Gguf {
                    dst: dst.to_path_buf(),
                })
            }
            OutputKind::Folder => Ok(Sink::Folder(folder::FolderSink::create(dst)?)),
            OutputKind::File => {
                atomic::check_replaceable_file(dst)?;
                Ok(Sink::File {
                    dst: dst.to_path_buf(),
                })
            }
        }
    }

    /// Starts writing one output file of the plan.
    pub fn create(&self, plan: &Plan, file: &OutputFile) -> Result<TensorFile> {
        if let Sink::Gguf { dst } = self {
            let tensors = file
                .outputs()
                .map(|o| {
                    let placement = o.gguf.as_ref().ok_or_else(|| {
                        Error::Format(format!("output tensor {:?} has no GGML type", o.name))
                    })?;
                    Ok(gguf::GgufTensor {
                        name: &o.name,
                        placement,
                        nbytes: o.nbytes(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return GgufWriter::create(dst, &plan.gguf_kvs, &tensors)
                .map_err(|e| e.in_file(dst, None));
        }
        let outputs: Vec<OutputTensor> = file.outputs().cloned().collect();
        let path = match (self, &file.shard) {
            (Sink::File { dst } | Sink::Gguf { dst }, _) => dst.clone(),
            (Sink::Folder(folder), Some(shard)) => folder.path_of(shard),
            (Sink::Folder(_), None) => {
                return Err(Error::InvalidArgument(
                    "a model folder's files need names".into(),
                ));
            }
        };
        SafetensorsWriter::create(&path, &outputs, file.metadata.clone())
            .map_err(|e| e.in_file(&path, None))
    }

    /// Completes the output once every file is written: for a folder, its index,
    /// `config.json` and the model's other files, then the folder moved into place.
    pub fn finish(self, source: &Source, plan: &Plan) -> Result<()> {
        match self {
            Sink::File { .. } | Sink::Gguf { .. } => Ok(()),
            Sink::Folder(folder) => folder.finish(source, plan, &plan.other_files.copied),
        }
    }

    /// The destination.
    #[must_use]
    pub fn dst(&self) -> &Path {
        match self {
            Sink::File { dst } | Sink::Gguf { dst } => dst,
            Sink::Folder(folder) => folder.dst(),
        }
    }
}
