//! An output file whose layout is fixed before any tensor is written: the container's header
//! first, then each tensor's bytes at its planned place, in any order, by positioned writes.
//! Safetensors and GGUF files are both written this way; each lays out its own header.
//! The file is an [`AtomicFile`]: it appears at its path only when [`TensorFile::finish`]
//! succeeds, and dropped unfinished it is removed.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sink::atomic::AtomicFile;

/// Where a tensor's bytes go, and whether they have been written.
struct Slot {
    offset: u64,
    len: usize,
    written: bool,
}

pub struct TensorFile {
    file: AtomicFile,
    data_start: u64,
    slots: HashMap<String, Slot>,
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

impl TensorFile {
    /// Creates the temporary file beside `dst` with `header` at its start and room for
    /// `data_len` bytes of data from `data_start`; `slots` maps each tensor's name to its
    /// offset in the data and its length. What no tensor covers (padding) stays zero.
    pub fn create(
        dst: &Path,
        header: &[u8],
        data_start: u64,
        slots: HashMap<String, (u64, usize)>,
        data_len: u64,
    ) -> Result<Self> {
        let file = AtomicFile::create(dst)?;
        let size = data_start + data_len;
        let f = file.file();
        let path = file.dst().to_path_buf();
        write_at(f, header, 0).map_err(|e| Error::io(&path, e))?;
        f.set_len(size).map_err(|e| Error::io(&path, e))?;
        let slots = slots
            .into_iter()
            .map(|(name, (offset, len))| {
                let slot = Slot {
                    offset,
                    len,
                    written: false,
                };
                (name, slot)
            })
            .collect();
        Ok(Self {
            file,
            data_start,
            slots,
            size,
        })
    }

    fn slot(&mut self, name: &str, len: usize) -> Result<u64> {
        let Some(slot) = self.slots.get_mut(name) else {
            return Err(Error::Format(format!("no output tensor is named {name:?}")));
        };
        Error::check_size(len, slot.len, || format!("output tensor {name:?}"))?;
        slot.written = true;
        Ok(self.data_start + slot.offset)
    }

    /// Writes the data of the tensor `name`, which must have its planned size.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let at = self.slot(name, data.len())?;
        write_at(self.file.file(), data, at).map_err(|e| Error::io(self.file.dst(), e))
    }

    /// Writes tensor `name` with `len` bytes of `src` from `offset`, copied by the kernel
    /// (`copy_file_range` where the system has it) without passing through this process.
    pub fn copy_from(&mut self, name: &str, src: &File, offset: u64, len: usize) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let at = self.slot(name, len)?;
        let dst = self.file.dst().to_path_buf();
        let mut reader = src;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&dst, e))?;
        let mut out = self.file.file();
        out.seek(SeekFrom::Start(at))
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
        if let Some((name, _)) = self.slots.iter().find(|(_, s)| !s.written) {
            return Err(Error::Format(format!(
                "output tensor {name:?} was never written"
            )));
        }
        self.file.finish()
    }
}
