//! Floating-point element types ryzq reads and writes.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatDType {
    F32,
    F16,
    BF16,
}

impl FloatDType {
    pub const ALL: [FloatDType; 3] = [FloatDType::F32, FloatDType::F16, FloatDType::BF16];

    #[must_use]
    pub fn size(self) -> usize {
        match self {
            FloatDType::F32 => 4,
            FloatDType::F16 | FloatDType::BF16 => 2,
        }
    }

    /// The numpy name of the type.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FloatDType::F32 => "float32",
            FloatDType::F16 => "float16",
            FloatDType::BF16 => "bfloat16",
        }
    }

    /// Accepts numpy names (`float32`) and safetensors names (`F32`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "float32" | "F32" | "f32" => Ok(FloatDType::F32),
            "float16" | "F16" | "f16" => Ok(FloatDType::F16),
            "bfloat16" | "BF16" | "bf16" => Ok(FloatDType::BF16),
            other => Err(Error::InvalidArgument(format!(
                "unsupported dtype {other:?}: ryzq reads float32, float16 and bfloat16"
            ))),
        }
    }
}
