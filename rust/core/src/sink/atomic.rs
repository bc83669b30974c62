//! The one way ryzq writes an output: under a temporary name beside the destination, renamed
//! over it only when complete. Dropped unfinished, the temporary file or folder is removed, so
//! an error, an interrupt or a panic leaves the destination as it was.

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::error::{Error, Result};

/// The suffix of every temporary output, so that leftovers of a killed run are recognizable.
pub const PARTIAL_SUFFIX: &str = ".ryzq-partial";

/// The folder `dst` will be in (`.` for a bare name).
fn parent(dst: &Path) -> PathBuf {
    match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn prefix(dst: &Path) -> String {
    format!(
        ".{}.",
        dst.file_name()
            .map_or("out".into(), |n| n.to_string_lossy())
    )
}

/// A file being written for `dst`.
pub struct AtomicFile {
    file: NamedTempFile,
    dst: PathBuf,
}

impl AtomicFile {
    pub fn create(dst: &Path) -> Result<Self> {
        let dir = parent(dst);
        let file = tempfile::Builder::new()
            .prefix(&prefix(dst))
            .suffix(PARTIAL_SUFFIX)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        // Temporary files are private (0600); the result is an ordinary, readable file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io(file.path(), e))?;
        }
        Ok(Self {
            file,
            dst: dst.to_path_buf(),
        })
    }

    #[must_use]
    pub fn file(&self) -> &File {
        self.file.as_file()
    }

    /// The temporary path, for messages.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Renames the file over `dst`.
    pub fn finish(self) -> Result<()> {
        let dst = self.dst;
        self.file
            .persist(&dst)
            .map_err(|e| Error::io(&dst, e.error))?;
        Ok(())
    }
}

/// A folder being written for `dst`, which must not exist or be an empty folder.
pub struct AtomicDir {
    dir: TempDir,
    dst: PathBuf,
}

impl AtomicDir {
    pub fn create(dst: &Path) -> Result<Self> {
        let parent_dir = parent(dst);
        let dir = tempfile::Builder::new()
            .prefix(&prefix(dst))
            .suffix(PARTIAL_SUFFIX)
            .tempdir_in(&parent_dir)
            .map_err(|e| Error::io(&parent_dir, e))?;
        Ok(Self {
            dir,
            dst: dst.to_path_buf(),
        })
    }

    /// Where the entry `name` of the output folder is written now.
    #[must_use]
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Renames the folder over `dst` (an empty folder there is replaced).
    pub fn finish(self) -> Result<()> {
        if self.dst.is_dir() {
            std::fs::remove_dir(&self.dst).map_err(|e| Error::io(&self.dst, e))?;
        }
        let work = self.dir.keep();
        std::fs::rename(&work, &self.dst).map_err(|e| {
            let _ = std::fs::remove_dir_all(&work);
            Error::io(&self.dst, e)
        })
    }
}
