//! The one way ryzq writes an output: under a temporary name beside the destination, flushed
//! to the disk, then renamed over it and the folder's entry flushed too. Dropped unfinished,
//! the temporary file or folder is removed, so an error, an interrupt or a panic leaves the
//! destination as it was; a power loss leaves the old state or the complete new one.
//!
//! Temporary files and folders are created with the modes `cp` gives (0666 and 0777, less the
//! user's umask), and named `.{destination}.{pid}-{n}.ryzq-partial`, so that what a killed run
//! leaves is recognizable.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The suffix of every temporary output.
pub const PARTIAL_SUFFIX: &str = ".ryzq-partial";

/// The folder `dst` will be in (`.` for a bare name).
pub(crate) fn parent(dst: &Path) -> PathBuf {
    match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh temporary name beside `dst`.
fn temp_path(dst: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = dst
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy());
    parent(dst).join(format!(
        ".{name}.{}-{n}-{nanos:08x}{PARTIAL_SUFFIX}",
        std::process::id()
    ))
}

/// Removes what killed runs of ryzq left for `dst`: temporary files or folders of its name
/// whose process is gone. Another process's (a run still going) and anything not named as
/// ryzq names them are left alone. Returns the names removed.
pub fn remove_stale(dst: &Path) -> Vec<String> {
    let Some(name) = dst.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.");
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent(dst)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = entry_name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(PARTIAL_SUFFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path).is_ok(),
            Ok(t) if t.is_file() => std::fs::remove_file(&path).is_ok(),
            _ => false,
        };
        if gone {
            removed.push(entry_name);
        }
    }
    removed.sort();
    removed
}

/// Whether process `pid` runs, where the system says (Linux's /proc); elsewhere assumed, so
/// that nothing is removed.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Flushes a folder's entries (a rename into it) to the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Refuses to replace `dst` when it exists and is not a regular file (a device such as
/// `/dev/null`, a FIFO, a folder): ryzq writes files, and only where it was asked to.
pub(crate) fn check_replaceable_file(dst: &Path) -> Result<()> {
    match std::fs::metadata(dst) {
        Ok(meta) if !meta.is_file() => Err(Error::UnsafePath(format!(
            "{}: exists and is not a regular file; ryzq replaces only files",
            dst.display()
        ))),
        _ => Ok(()),
    }
}

/// A file being written for `dst`.
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dst: PathBuf,
    finished: bool,
}

impl AtomicFile {
    pub fn create(dst: &Path) -> Result<Self> {
        check_replaceable_file(dst)?;
        loop {
            let tmp = temp_path(dst);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        tmp,
                        dst: dst.to_path_buf(),
                        finished: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&parent(dst), e)),
            }
        }
    }

    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temporary path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The destination, which errors name: the temporary file is ryzq's business.
    #[must_use]
    pub fn dst(&self) -> &Path {
        &self.dst
    }

    /// Flushes the file to the disk, renames it over `dst`, and flushes the folder's entry.
    pub fn finish(mut self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.dst, e))?;
        check_replaceable_file(&self.dst)?;
        std::fs::rename(&self.tmp, &self.dst).map_err(|e| Error::io(&self.dst, e))?;
        self.finished = true;
        sync_dir(&parent(&self.dst))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to the new file `path` (inside a folder being written) and flushes it.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// A folder being written for `dst`, which must not exist or be an empty folder.
pub struct AtomicDir {
    tmp: PathBuf,
    dst: PathBuf,
    finished: bool,
}

impl AtomicDir {
    pub fn create(dst: &Path) -> Result<Self> {
        loop {
            let tmp = temp_path(dst);
            match std::fs::create_dir(&tmp) {
                Ok(()) => {
                    return Ok(Self {
                        tmp,
                        dst: dst.to_path_buf(),
                        finished: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&parent(dst), e)),
            }
        }
    }

    /// The bits the user's umask clears, read from the mode this folder was created with
    /// (0777 less the umask).
    pub fn umask(&self) -> Result<u32> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.tmp)
                .map_err(|e| Error::io(&self.tmp, e))?
                .permissions()
                .mode();
            Ok(!mode & 0o777)
        }
        #[cfg(not(unix))]
        Ok(0)
    }

    /// Where the entry `name` of the output folder is written now.
    #[must_use]
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Flushes the folder's entries, renames it over `dst` (an empty folder there is
    /// replaced), and flushes the parent's entry.
    pub fn finish(mut self) -> Result<()> {
        sync_dir(&self.tmp)?;
        if self.dst.is_dir() {
            std::fs::remove_dir(&self.dst).map_err(|e| Error::io(&self.dst, e))?;
        }
        std::fs::rename(&self.tmp, &self.dst).map_err(|e| Error::io(&self.dst, e))?;
        self.finished = true;
        sync_dir(&parent(&self.dst))
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
