//! Streaming safetensors checkpoints: read one tensor at a time from a memory map, write the
//! output to a temporary file beside the destination, rename it into place at the end.

pub mod dequantize;
pub mod metadata;
pub mod quantize;
pub mod reader;
pub mod report;
pub mod select;
pub mod writer;

pub use dequantize::dequantize_file;
pub use quantize::{FileOptions, LinearClass, quantize_file};
pub use reader::{Checkpoint, StoredTensor};
pub use report::{FileReport, TensorReport};
pub use select::{Decision, Selection};
pub use writer::{OutputTensor, SafetensorsWriter};

use safetensors::Dtype;

use crate::dtype::FloatDType;

/// The float type ryzq quantizes, if `dtype` is one.
#[must_use]
pub fn float_dtype(dtype: Dtype) -> Option<FloatDType> {
    match dtype {
        Dtype::F32 => Some(FloatDType::F32),
        Dtype::F16 => Some(FloatDType::F16),
        Dtype::BF16 => Some(FloatDType::BF16),
        _ => None,
    }
}

#[must_use]
pub fn safetensors_dtype(dtype: FloatDType) -> Dtype {
    match dtype {
        FloatDType::F32 => Dtype::F32,
        FloatDType::F16 => Dtype::F16,
        FloatDType::BF16 => Dtype::BF16,
    }
}

/// The safetensors name of a dtype (`BF16`).
#[must_use]
pub fn dtype_name(dtype: Dtype) -> String {
    format!("{dtype:?}")
}
