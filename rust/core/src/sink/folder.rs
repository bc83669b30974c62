//! A Hugging Face model folder as a sink: the shards under their names, an index that lists
//! every tensor with the right `total_size`, `config.json`, and the model's other files.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::sink::atomic::{AtomicDir, write_durable};
use crate::source::Source;
use crate::source::folder::{CONFIG, INDEX};

pub struct FolderSink {
    work: AtomicDir,
    dst: PathBuf,
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("plain data serializes");
    text.push('\n');
    write_durable(path, text.as_bytes())
}

/// Copies the file `from` to `to`, making its folders, and flushes it. Like `cp`, the copy
/// has the mode of `from` less the bits `umask` clears.
fn copy_file(from: &Path, to: &Path, umask: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(from)
            .map_err(|e| Error::io(from, e))?
            .permissions()
            .mode();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode & 0o777 & !umask))
            .map_err(|e| Error::io(to, e))?;
    }
    #[cfg(not(unix))]
    let _ = umask;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(to, e))
}

impl FolderSink {
    /// `dst` must not exist, or be an empty folder.
    pub fn create(dst: &Path) -> Result<Self> {
        Self::check(dst)?;
        Ok(Self {
            work: AtomicDir::create(dst)?,
            dst: dst.to_path_buf(),
        })
    }

    /// Refuses a `dst` that exists and is not an empty folder.
    pub fn check(dst: &Path) -> Result<()> {
        let occupied = match std::fs::read_dir(dst) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => dst.exists(),
        };
        if occupied {
            return Err(Error::InvalidArgument(format!(
                "{}: exists and is not an empty folder",
                dst.display()
            )));
        }
        Ok(())
    }

    #[must_use]
    pub fn dst(&self) -> &Path {
        &self.dst
    }

    /// Where the output file `name` is written.
    #[must_use]
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Writes the index, `config.json` and `files` (relative to the source folder), then moves
    /// the folder into place.
    pub fn finish(self, source: &Source, plan: &Plan, files: &[String]) -> Result<()> {
        let folder = source.folder();
        if let Some(index) = folder.and_then(|f| f.index()) {
            let mut weight_map = Map::new();
            let mut names: Vec<(&str, &str)> = Vec::new();
            let mut total_size = 0u64;
            for file in &plan.files {
                let shard = file.shard.as_deref().unwrap_or_default();
                for out in file.outputs() {
                    names.push((&out.name, shard));
                    total_size += out.nbytes() as u64;
                }
            }
            names.sort_unstable();
            for (name, shard) in names {
                weight_map.insert(name.to_owned(), Value::String(shard.to_owned()));
            }
            let mut metadata = match index.get("metadata") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            metadata.insert("total_size".into(), Value::from(total_size));
            let mut new_index = Map::new();
            new_index.insert("metadata".into(), Value::Object(metadata));
            new_index.insert("weight_map".into(), Value::Object(weight_map));
            write_json(&self.work.join(INDEX), &Value::Object(new_index))?;
        }
        let config = plan
            .config
            .clone()
            .or_else(|| source.config().cloned())
            .ok_or_else(|| {
                Error::InvalidArgument("a model folder needs a config.json to write".into())
            })?;
        write_json(&self.work.join(CONFIG), &Value::Object(config))?;
        let umask = self.work.umask()?;
        if let Some(folder) = folder {
            for name in files {
                copy_file(&folder.dir().join(name), &self.work.join(name), umask)?;
            }
        }
        self.work.finish()
    }
}
