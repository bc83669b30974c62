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

    /// Accepts numpy names (`float32`) and safetensors names (`F32`), in any case.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "float32" | "f32" => Ok(FloatDType::F32),
            "float16" | "f16" => Ok(FloatDType::F16),
            "bfloat16" | "bf16" => Ok(FloatDType::BF16),
            other => Err(Error::InvalidArgument(format!(
                "unsupported dtype {other:?}: ryzq reads float32, float16 and bfloat16"
            ))),
        }
    }

    /// `value` rounded to this type (to nearest, ties to even), as a float32.
    #[must_use]
    pub fn round(self, value: f32) -> f32 {
        match self {
            FloatDType::F32 => value,
            FloatDType::F16 => half::f16::from_f32(value).to_f32(),
            FloatDType::BF16 => half::bf16::from_f32(value).to_f32(),
        }
    }

    /// `values` as little-endian bytes of this type, each rounded to nearest, ties to even.
    #[must_use]
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            FloatDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatDType::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            FloatDType::BF16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }
}

/// The float type ryzq quantizes, if `dtype` is one.
#[must_use]
pub fn float_dtype(dtype: safetensors::Dtype) -> Option<FloatDType> {
    use safetensors::Dtype;
    match dtype {
        Dtype::F32 => Some(FloatDType::F32),
        Dtype::F16 => Some(FloatDType::F16),
        Dtype::BF16 => Some(FloatDType::BF16),
        _ => None,
    }
}

/// The safetensors type of a float type.
#[must_use]
pub fn safetensors_dtype(dtype: FloatDType) -> safetensors::Dtype {
    use safetensors::Dtype;
    match dtype {
        FloatDType::F32 => Dtype::F32,
        FloatDType::F16 => Dtype::F16,
        FloatDType::BF16 => Dtype::BF16,
    }
}

/// The safetensors name of a stored type (`BF16`), as ryzq's metadata records it.
#[must_use]
pub fn dtype_name(dtype: safetensors::Dtype) -> String {
    format!("{dtype:?}")
}
