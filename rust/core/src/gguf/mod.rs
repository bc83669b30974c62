//! The GGUF container (version 3, little-endian), as ggml's `gguf.cpp` reads it: a header of
//! typed key-value pairs and tensor infos, then the tensors' data, each aligned. [`value`] has
//! the pairs' encoding, [`types`] the GGML tensor types ryzq writes; the sink that lays out a
//! whole file is [`crate::sink::gguf`].

pub mod read;
pub mod types;
pub mod value;

pub use types::GgmlType;
pub use value::Value;

/// `GGUF` as a little-endian u32.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The only version current readers take.
pub const VERSION: u32 = 3;
/// The data alignment a reader assumes when the file has no `general.alignment`.
pub const ALIGNMENT: usize = 32;
/// Readers refuse tensor names this long or longer (`GGML_MAX_NAME`).
pub const MAX_NAME: usize = 64;
/// At most this many dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Appends a GGUF string: its byte length as u64, then its UTF-8 bytes.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}
