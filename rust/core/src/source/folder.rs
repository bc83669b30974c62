//! A Hugging Face model folder: `config.json`, and `model.safetensors` or the shards named by
//! `model.safetensors.index.json`. The other files (tokenizer and the rest) belong to the
//! model too; sinks copy them.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const INDEX: &str = "model.safetensors.index.json";
pub const SINGLE: &str = "model.safetensors";

pub struct ModelFolder {
    dir: PathBuf,
    config: Map<String, Value>,
    /// The index, for a sharded model.
    index: Option<Map<String, Value>>,
    shards: Vec<String>,
}

/// The most a `config.json` or an index may hold: far more than any model's, little enough
/// that a hostile one cannot exhaust memory. (serde_json also refuses nesting over 128 deep.)
pub const MAX_JSON_BYTES: u64 = 100_000_000;

/// A JSON file of a model folder, refused over [`MAX_JSON_BYTES`]; `what` names it in errors
/// ("a config").
pub(crate) fn read_json(path: &Path, what: &str) -> Result<Value> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_JSON_BYTES {
        return Err(Error::Format(format!(
            "{what} of {size} bytes, over the {MAX_JSON_BYTES} bytes ryzq reads"
        ))
        .in_file(path, None));
    }
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::Format(format!("{what} that is not valid JSON ({e})")).in_file(path, None)
    })
}

/// Refuses a file name taken from a file's content unless it is a plain name inside its
/// folder: no separator, no `..`, not absolute, not empty.
pub fn check_plain_name(name: &str, named_in: &Path) -> Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains(':')
        && !name.contains('\0');
    if plain {
        Ok(())
    } else {
        Err(Error::UnsafePath(format!(
            "names the file {name:?}, which is not a plain file name inside the folder"
        ))
        .in_file(named_in, None))
    }
}

/// The `config.json` of the model folder `dir`, its keys in their order.
pub fn read_config(dir: &Path) -> Result<Map<String, Value>> {
    let config_path = dir.join(CONFIG);
    if !config_path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: no config.json, so not a model folder",
            dir.display()
        )));
    }
    let Value::Object(config) = read_json(&config_path, "a config")? else {
        return Err(Error::Format("not a JSON object".into()).in_file(&config_path, None));
    };
    Ok(config)
}

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{}: not a folder",
                dir.display()
            )));
        }
        let config = read_config(dir)?;
        let index_path = dir.join(INDEX);
        let (index, shards) = if index_path.is_file() {
            let not_index = || {
                Error::Format("not a safetensors index (no weight_map of file names)".into())
                    .in_file(&index_path, None)
            };
            let Value::Object(index) = read_json(&index_path, "a safetensors index")? else {
                return Err(not_index());
            };
            let Some(Value::Object(weight_map)) = index.get("weight_map") else {
                return Err(not_index());
            };
            let mut shards: Vec<String> = Vec::new();
            for file in weight_map.values() {
                let Value::String(file) = file else {
                    return Err(not_index());
                };
                if !shards.contains(file) {
                    shards.push(file.clone());
                }
            }
            shards.sort();
            for shard in &shards {
                check_plain_name(shard, &index_path)?;
                if !dir.join(shard).is_file() {
                    let names: Vec<&String> = weight_map
                        .iter()
                        .filter(|(_, f)| f.as_str() == Some(shard))
                        .map(|(n, _)| n)
                        .collect();
                    return Err(Error::Format(format!(
                        "shard {shard:?} (holding {:?} and {} more tensors) does not exist",
                        names[0],
                        names.len() - 1
                    ))
                    .in_file(&index_path, None));
                }
            }
            (Some(index), shards)
        } else if dir.join(SINGLE).is_file() {
            (None, vec![SINGLE.to_owned()])
        } else {
            let pickles = pickled_files(dir);
            if let Some(first) = pickles.first() {
                return Err(Error::Format(format!(
                    "no {SINGLE} and no {INDEX}, only {first:?}{}: a pickled checkpoint, which \
                     ryzq never loads (loading a pickle runs code from the file); convert it \
                     to safetensors first",
                    if pickles.len() > 1 { " and others" } else { "" }
                ))
                .in_file(dir, None));
            }
            return Err(Error::InvalidArgument(format!(
                "{}: no {SINGLE} and no {INDEX}",
                dir.display()
            )));
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            index,
            shards,
        })
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`, its keys in their order.
    #[must_use]
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    #[must_use]
    pub fn index(&self) -> Option<&Map<String, Value>> {
        self.index.as_ref()
    }

    /// The safetensors files of the model, by name.
    #[must_use]
    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    /// The folder's other files, which belong to the model but hold no weights ryzq
    /// converts, as paths relative to the folder; and those left out, with why. Left out:
    /// version-control folders, and other weight files (pickles, GGUF, safetensors files the
    /// model does not list), which would make the output larger than the model, unless a
    /// pattern of `also` matches them.
    pub fn other_files(&self, also: &[glob::Pattern]) -> Result<OtherFiles> {
        let mut files = OtherFiles::default();
        self.walk(&self.dir, "", also, &mut files)?;
        Ok(files)
    }

    fn walk(
        &self,
        dir: &Path,
        prefix: &str,
        also: &[glob::Pattern],
        out: &mut OtherFiles,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(dir, e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            if prefix.is_empty() && (name == CONFIG || name == INDEX || self.shards.contains(&name))
            {
                continue;
            }
            let path = entry.path();
            let asked = also.iter().any(|p| p.matches(&relative));
            // Followed like `cp` does, so the Hub cache's links into its blobs work; a link to
            // nothing is found here, before any work.
            let meta = std::fs::metadata(&path).map_err(|e| {
                Error::UnsafePath(format!("{relative}: cannot be read ({e}); a broken link?"))
                    .in_file(&self.dir, None)
            })?;
            if meta.is_dir() {
                if VERSION_CONTROL.contains(&name.as_str()) && !asked {
                    out.skipped
                        .push((relative, "a version-control folder".into()));
                    continue;
                }
                self.walk(&path, &format!("{relative}/"), also, out)?;
            } else if meta.is_file() {
                match weight_file_kind(&name) {
                    Some(kind) if !asked => out.skipped.push((relative, kind.into())),
                    _ => out.copied.push(relative),
                }
            } else {
                return Err(Error::UnsafePath(format!(
                    "{relative}: not a regular file or a folder (a device, FIFO or socket), so \
                     not part of a model"
                ))
                .in_file(&self.dir, None));
            }
        }
        Ok(())
    }
}

/// The files of a model folder besides its weights and config.
#[derive(Debug, Clone, Default)]
pub struct OtherFiles {
    /// Copied into the output, relative to the folder.
    pub copied: Vec<String>,
    /// Left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// Folders of version-control systems, never part of a model's output.
const VERSION_CONTROL: &[&str] = &[".git", ".hg", ".svn"];

/// Why a file of this name is another copy of the weights, if it is one.
fn weight_file_kind(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "pth" | "pt" | "bin" | "ckpt" => Some("a pickled checkpoint (another copy of the weights)"),
        "gguf" => Some("a GGUF file (another copy of the weights)"),
        "safetensors" => Some("a safetensors file the model's index does not list"),
        _ => None,
    }
}

/// The pickled checkpoints in `dir`, by name.
fn pickled_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| weight_file_kind(n).is_some_and(|k| k.starts_with("a pickled")))
        .collect();
    names.sort();
    names
}

/// Refuses a file ryzq must never load: a pickled checkpoint (loading it runs its code).
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if weight_file_kind(&name).is_some_and(|k| k.starts_with("a pickled")) {
        return Err(Error::Format(
            "a pickled checkpoint, which ryzq never loads (loading a pickle runs code from the \
             file); convert it to safetensors first"
                .into(),
        )
        .in_file(path, None));
    }
    Ok(())
}
