//! The description ryzq writes into a quantized file's `__metadata__` (key `ryzq`, a JSON
//! string), so that the file says how to read it back without anything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const KEY: &str = "ryzq";
pub const VERSION: u32 = 1;

/// How a stored scale turns codes into weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleConvention {
    /// `w = code * scale` (absmean; transformers' `autobitlinear`, ryzq's own layouts)
    Multiply,
    /// `w = code / scale` (reciprocal; transformers' `bitlinear`)
    Divide,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    pub layout: String,
    pub method: String,
    pub granularity: String,
    /// safetensors dtype of the original tensor
    pub dtype: String,
    pub shape: Vec<usize>,
    /// name of the tensor holding the scales; none where the packed blocks hold them (GGUF)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    pub scale_convention: ScaleConvention,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RyzqMetadata {
    pub version: u32,
    /// transformers' layer class the `bitnet` layout's scales were written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_class: Option<String>,
    pub quantized: BTreeMap<String, QuantizedTensor>,
    /// Biases stored divided by their weight's scale (for transformers' `AutoBitLinear`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub divided_biases: BTreeMap<String, DividedBias>,
}

/// A bias stored as `bias / divisor`: `divisor` is the stored scale of `weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DividedBias {
    pub weight: String,
    pub divisor: f32,
}

impl RyzqMetadata {
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let meta: Self = serde_json::from_str(text)
            .map_err(|e| Error::Format(format!("unreadable ryzq metadata: {e}")))?;
        if meta.version != VERSION {
            return Err(Error::Format(format!(
                "ryzq metadata version {} is not one this ryzq reads ({VERSION})",
                meta.version
            )));
        }
        Ok(meta)
    }
}
