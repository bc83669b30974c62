//! Reads a GGUF file's header: its key-value pairs and tensor infos, checked the way ggml's
//! `gguf.cpp` checks them (magic, version 3, string and array lengths within the file, at most
//! four dimensions, offsets consecutive and aligned, data within the file), so that a bad
//! file is one error and never a huge allocation or a read past its end.

use std::path::Path;

use super::value::{Array, Value};
use crate::error::{Error, Result};

/// GGML tensor types by id: name, values per block, bytes per block (gguf-py's
/// `GGML_QUANT_SIZES`), so that a file of any type can be listed. I2_S (36) is sized apart.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (36, "I2_S", 1, 1),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

/// The name ggml gives the type `id`.
#[must_use]
pub fn type_name(id: u32) -> Option<&'static str> {
    GGML_TYPES.iter().find(|t| t.0 == id).map(|t| t.1)
}

/// Bytes of a tensor of type `id` and `shape` (numpy order), or why it has no size.
pub fn tensor_bytes(id: u32, shape: &[usize]) -> Result<usize> {
    let &(_, name, block, block_bytes) = GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .ok_or_else(|| Error::Format(format!("GGML type {id}, which ryzq does not know")))?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::Format(format!("shape {shape:?} is too large")))?;
    let too_large = || Error::Format(format!("shape {shape:?} is too large"));
    if numel > i64::MAX as usize {
        return Err(too_large());
    }
    if id == 36 {
        // bitnet.cpp's I2_S: 2 bits per value, then a float32 scale padded to 32 bytes.
        return Ok(numel / 4 + 32);
    }
    let row = shape.last().copied().unwrap_or(1);
    if !row.is_multiple_of(block) {
        return Err(Error::Format(format!(
            "{name} rows are whole blocks of {block} values, but shape {shape:?} has rows of \
             {row}"
        )));
    }
    (numel / block)
        .checked_mul(block_bytes)
        .ok_or_else(too_large)
}

/// One tensor's info.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML type id.
    pub ggml_type: u32,
    /// Logical shape, numpy order (the file's `ne` reversed).
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// A GGUF file's header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub kvs: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    pub data_start: usize,
}

impl Header {
    /// The value of `key`, if the file has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The string value of `key`.
    #[must_use]
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(Error::Truncated(format!(
                "the file ends inside its header, in {what} at byte {}",
                self.pos
            )));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// A count of items of at least `min_bytes` each, which the rest of the file must hold.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.data.len() - self.pos) as u64;
        if n.checked_mul(min_bytes.max(1) as u64)
            .is_none_or(|b| b > left)
        {
            return Err(Error::Format(format!(
                "{what} is {n}, more than the {left} bytes left in the file can hold"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Format(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, type_id: u32, what: &str) -> Result<Value> {
        Ok(match type_id {
            0 => Value::U8(self.take(1, what)?[0]),
            1 => Value::I8(self.take(1, what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(
                self.take(2, what)?.try_into().expect("2"),
            )),
            3 => Value::I16(i16::from_le_bytes(
                self.take(2, what)?.try_into().expect("2"),
            )),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.take(1, what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::Format(format!("{what}: bool byte {b}, not 0 or 1"))),
            },
            8 => Value::String(self.string(what)?),
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            9 => {
                let element = self.u32(what)?;
                let size = match element {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => {
                        return Err(Error::Format(format!(
                            "{what}: an array of value type {element}, which GGUF does not have \
                             (arrays do not nest)"
                        )));
                    }
                };
                let n = self.count(what, size)?;
                match element {
                    8 => Value::Array(Array::String(
                        (0..n).map(|_| self.string(what)).collect::<Result<_>>()?,
                    )),
                    6 => Value::Array(Array::F32(
                        (0..n)
                            .map(|_| self.u32(what).map(f32::from_bits))
                            .collect::<Result<_>>()?,
                    )),
                    5 => Value::Array(Array::I32(
                        (0..n)
                            .map(|_| self.u32(what).map(|v| v as i32))
                            .collect::<Result<_>>()?,
                    )),
                    4 => Value::Array(Array::U32(
                        (0..n).map(|_| self.u32(what)).collect::<Result<_>>()?,
                    )),
                    _ => Value::Array(Array::Other {
                        element,
                        values: (0..n)
                            .map(|_| self.value(element, what))
                            .collect::<Result<_>>()?,
                    }),
                }
            }
            other => {
                return Err(Error::Format(format!(
                    "{what}: value type {other}, which GGUF does not have"
                )));
            }
        })
    }
}

/// Reads and checks the header of the GGUF file whose bytes are `data`.
pub fn read_header(data: &[u8]) -> Result<Header> {
    let mut c = Cursor { data, pos: 0 };
    if c.take(4, "the magic")? != super::MAGIC {
        return Err(Error::Format(
            "not a GGUF file: it does not start with GGUF".into(),
        ));
    }
    let version = c.u32("the version")?;
    if version != super::VERSION {
        return Err(Error::Format(format!(
            "GGUF version {version}; ryzq reads version {}",
            super::VERSION
        )));
    }
    // The smallest tensor info and pair: an empty name, a dimension and its size, the type
    // and the offset; an empty key, its type and a byte.
    let n_tensors = c.u64("the tensor count")?;
    let n_kv = c.count("the key-value count", 8 + 4 + 1)?;
    let mut kvs = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("key {i}"))?;
        if key.is_empty() || kvs.iter().any(|(k, _): &(String, Value)| *k == key) {
            return Err(Error::Format(format!(
                "key {key:?} is empty or appears twice"
            )));
        }
        let type_id = c.u32(&key)?;
        let value = c.value(type_id, &key)?;
        kvs.push((key, value));
    }
    let alignment = match kvs.iter().find(|(k, _)| k == "general.alignment") {
        None => super::ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => *a as usize,
        Some((_, v)) => {
            return Err(Error::Format(format!(
                "general.alignment is {v:?}; it must be a u32 power of two"
            )));
        }
    };
    let left = (data.len() - c.pos) as u64;
    if n_tensors
        .checked_mul(8 + 4 + 8 + 4 + 8)
        .is_none_or(|b| b > left)
    {
        return Err(Error::Format(format!(
            "the tensor count is {n_tensors}, more than the rest of the file can hold"
        )));
    }
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("the name of tensor {i}"))?;
        if name.is_empty() || name.len() >= super::MAX_NAME {
            return Err(Error::Format(format!(
                "tensor {i}'s name {name:?} is empty or has {} bytes; GGUF takes names of 1 to \
                 {} bytes",
                name.len(),
                super::MAX_NAME - 1
            )));
        }
        let dims = c.u32(&name)? as usize;
        if dims == 0 || dims > super::MAX_DIMS {
            return Err(Error::Format(format!(
                "tensor {name:?} has {dims} dimensions; GGUF takes 1 to {}",
                super::MAX_DIMS
            )));
        }
        let mut shape = Vec::with_capacity(dims);
        for _ in 0..dims {
            let n = c.u64(&name)?;
            shape.push(
                usize::try_from(n).map_err(|_| {
                    Error::Format(format!("tensor {name:?} has a dimension of {n}"))
                })?,
            );
        }
        shape.reverse();
        let ggml_type = c.u32(&name)?;
        let offset = c.u64(&name)?;
        infos.push((name, ggml_type, shape, offset));
    }
    let data_start = c.pos.next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    let mut expected = 0u64;
    for (name, ggml_type, shape, offset) in infos {
        let in_tensor = |e: Error| Error::Format(format!("tensor {name:?}: {e}"));
        if tensors.iter().any(|t: &TensorInfo| t.name == name) {
            return Err(Error::Format(format!("two tensors are named {name:?}")));
        }
        if offset != expected {
            return Err(Error::Format(format!(
                "tensor {name:?} is at offset {offset}, but the tensors before it end at \
                 {expected}"
            )));
        }
        let nbytes = tensor_bytes(ggml_type, &shape).map_err(in_tensor)?;
        let start = data_start as u64 + offset;
        let end = start + nbytes as u64;
        if end > data.len() as u64 {
            return Err(Error::Truncated(format!(
                "tensor {name:?} ends at byte {end}, but the file has {} bytes",
                data.len()
            )));
        }
        expected = offset + (nbytes as u64).next_multiple_of(alignment as u64);
        tensors.push(TensorInfo {
            name,
            ggml_type,
            shape,
            range: start as usize..end as usize,
        });
    }
    Ok(Header {
        version,
        kvs,
        tensors,
        alignment,
        data_start,
    })
}

/// Reads the header of the GGUF file at `path`.
pub fn read_file_header(path: &Path) -> Result<Header> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read only; ryzq does not write its inputs, and a file changed under
    // it is read as it is then, as by any reader.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    read_header(&map).map_err(|e| e.in_file(path, None))
}
