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

fn read_json(path: &Path, what: &str) -> Result<Value> {
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

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{}: not a folder",
                dir.display()
            )));
        }
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

    /// The folder's other entries (files and folders), which belong to the model but hold no
    /// weights ryzq converts, by name.
    pub fn other_entries(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == CONFIG || name == INDEX || self.shards.contains(&name) {
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }
}
