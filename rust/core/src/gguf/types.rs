//! The GGML tensor types a ryzq GGUF file holds: floats for what is not ternary, and the
//! blocks of the layouts that have a GGML type (the registry says which).

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::layout::Layout;

/// A GGML tensor type: a float type, or the packed blocks of one of ryzq's layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Packed(Layout),
}

impl GgmlType {
    /// The type id in tensor infos.
    #[must_use]
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::BF16 => 30,
            GgmlType::Packed(layout) => layout
                .get()
                .gguf_type()
                .expect("only layouts with a GGML type are planned into GGUF"),
        }
    }

    /// The packed blocks of `layout`, or why it has none.
    pub fn of_layout(layout: Layout) -> Result<Self> {
        if layout.get().gguf_type().is_some() {
            Ok(GgmlType::Packed(layout))
        } else {
            let with: Vec<&str> = Layout::ALL
                .iter()
                .filter(|l| l.get().gguf_type().is_some())
                .map(|l| l.name())
                .collect();
            Err(Error::InvalidArgument(format!(
                "layout {} has no GGML type, so it cannot be written to GGUF; use one of {}",
                layout.name(),
                with.join(", ")
            )))
        }
    }

    /// The float type, for a float GGML type.
    #[must_use]
    pub fn float(self) -> Option<FloatDType> {
        match self {
            GgmlType::F32 => Some(FloatDType::F32),
            GgmlType::F16 => Some(FloatDType::F16),
            GgmlType::BF16 => Some(FloatDType::BF16),
            GgmlType::Packed(_) => None,
        }
    }

    /// The float type of the GGML type `id`, if it is one of the float types.
    #[must_use]
    pub fn float_of_id(id: u32) -> Option<FloatDType> {
        FloatDType::ALL
            .into_iter()
            .find(|&d| GgmlType::from_float(d).id() == id)
    }

    #[must_use]
    pub fn from_float(dtype: FloatDType) -> Self {
        match dtype {
            FloatDType::F32 => GgmlType::F32,
            FloatDType::F16 => GgmlType::F16,
            FloatDType::BF16 => GgmlType::BF16,
        }
    }

    /// The name ggml prints (`TQ2_0`, `F16`).
    #[must_use]
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Packed(layout) => layout.name().to_ascii_uppercase(),
        }
    }
}
