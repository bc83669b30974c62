//! ryzq's core: ternary (BitNet b1.58) quantization of float tensors into packed 2-bit and
//! 1.6-bit layouts, with exact error statistics.
//!
//! The crate has no Python in it; `ryzq-python` wraps it.

#[cfg(target_endian = "big")]
compile_error!(
    "ryzq reads and writes little-endian data in place and supports little-endian targets only"
);

pub mod convert;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod layout;
pub mod metadata;
pub mod method;
pub mod model;
pub mod optimal;
pub mod parts;
pub mod plan;
pub mod quantize;
pub mod report;
pub mod simd;
pub mod sink;
pub mod source;
pub mod stats;
pub mod tensor;
pub mod threads;
pub mod transcode;

pub use dtype::{FloatDType, StoredType};
pub use error::{Error, Index, Result};
pub use layout::Layout;
pub use method::{Granularity, Method, TernaryScale};
pub use quantize::{
    QuantizeOptions, Quantized, check_granularity, dequantize, dequantize_into, group_scales, pack,
    quantize, quantize_with_scales, repack, unpack,
};
pub use simd::SimdLevel;
pub use stats::ErrorStats;
pub use tensor::TensorView;
