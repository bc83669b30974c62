//! Floating-point element types ryzq reads and writes.

use safetensors::Dtype;

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
        let mut out = vec![0u8; values.len() * self.size()];
        self.encode_into(values, &mut out);
        out
    }

    /// `values` rounded to this type (to nearest, ties to even), little-endian, into `out`
    /// (`values.len() * self.size()` bytes).
    pub fn encode_into(self, values: &[f32], out: &mut [u8]) {
        use half::slice::HalfFloatSliceExt;
        assert_eq!(out.len(), values.len() * self.size(), "encoded length");
        // Through a buffer of halves, converted a slice at a time: one check of the
        // processor's F16C per slice instead of one per value.
        let mut halves = [half::f16::ZERO; 1024];
        let mut brains = [half::bf16::ZERO; 1024];
        match self {
            FloatDType::F32 => out.copy_from_slice(bytemuck::cast_slice(values)),
            FloatDType::F16 => {
                for (v, o) in values.chunks(1024).zip(out.chunks_mut(2048)) {
                    let h = &mut halves[..v.len()];
                    h.convert_from_f32_slice(v);
                    o.copy_from_slice(bytemuck::cast_slice(h));
                }
            }
            FloatDType::BF16 => {
                for (v, o) in values.chunks(1024).zip(out.chunks_mut(2048)) {
                    let h = &mut brains[..v.len()];
                    h.convert_from_f32_slice(v);
                    o.copy_from_slice(bytemuck::cast_slice(h));
                }
            }
        }
    }
}

/// The element type of a stored tensor, ryzq's own at the edges of the core (sources and sinks
/// map it to their containers' types). Every type safetensors stores is one; ryzq quantizes the
/// three float types of [`FloatDType`] and copies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredType {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

/// Each type, its safetensors type, and the name ryzq prints (numpy's and ml_dtypes' names).
const STORED_TYPES: &[(StoredType, Dtype, &str)] = &[
    (StoredType::Bool, Dtype::BOOL, "bool"),
    (StoredType::F4, Dtype::F4, "float4_e2m1fn"),
    (StoredType::F6E2M3, Dtype::F6_E2M3, "float6_e2m3fn"),
    (StoredType::F6E3M2, Dtype::F6_E3M2, "float6_e3m2fn"),
    (StoredType::U8, Dtype::U8, "uint8"),
    (StoredType::I8, Dtype::I8, "int8"),
    (StoredType::F8E5M2, Dtype::F8_E5M2, "float8_e5m2"),
    (StoredType::F8E4M3, Dtype::F8_E4M3, "float8_e4m3fn"),
    (StoredType::F8E8M0, Dtype::F8_E8M0, "float8_e8m0fnu"),
    (
        StoredType::F8E4M3Fnuz,
        Dtype::F8_E4M3FNUZ,
        "float8_e4m3fnuz",
    ),
    (
        StoredType::F8E5M2Fnuz,
        Dtype::F8_E5M2FNUZ,
        "float8_e5m2fnuz",
    ),
    (StoredType::I16, Dtype::I16, "int16"),
    (StoredType::U16, Dtype::U16, "uint16"),
    (StoredType::F16, Dtype::F16, "float16"),
    (StoredType::BF16, Dtype::BF16, "bfloat16"),
    (StoredType::I32, Dtype::I32, "int32"),
    (StoredType::U32, Dtype::U32, "uint32"),
    (StoredType::F32, Dtype::F32, "float32"),
    (StoredType::C64, Dtype::C64, "complex64"),
    (StoredType::F64, Dtype::F64, "float64"),
    (StoredType::I64, Dtype::I64, "int64"),
    (StoredType::U64, Dtype::U64, "uint64"),
];

impl StoredType {
    fn entry(self) -> &'static (StoredType, Dtype, &'static str) {
        STORED_TYPES
            .iter()
            .find(|e| e.0 == self)
            .expect("every type is in the table")
    }

    /// The name ryzq prints: `bfloat16`, `int64`.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// The safetensors name (`BF16`), as files and ryzq's metadata record it.
    #[must_use]
    pub fn safetensors_name(self) -> String {
        format!("{:?}", self.entry().1)
    }

    /// Bits per element.
    #[must_use]
    pub fn bits(self) -> usize {
        self.entry().1.bitsize()
    }

    /// The float type ryzq quantizes, if this is one.
    #[must_use]
    pub fn float(self) -> Option<FloatDType> {
        match self {
            StoredType::F32 => Some(FloatDType::F32),
            StoredType::F16 => Some(FloatDType::F16),
            StoredType::BF16 => Some(FloatDType::BF16),
            _ => None,
        }
    }

    /// Any spelling: ryzq's names (`bfloat16`), safetensors' (`BF16`), in any case.
    pub fn parse(name: &str) -> Result<Self> {
        let wanted = name.trim().to_ascii_lowercase();
        STORED_TYPES
            .iter()
            .find(|(_, d, n)| *n == wanted || format!("{d:?}").to_ascii_lowercase() == wanted)
            .map(|e| e.0)
            .or_else(|| FloatDType::parse(name).ok().map(StoredType::from))
            .ok_or_else(|| Error::InvalidArgument(format!("unknown dtype {name:?}")))
    }

    #[must_use]
    pub fn from_safetensors(dtype: Dtype) -> Self {
        STORED_TYPES
            .iter()
            .find(|e| e.1 == dtype)
            .map(|e| e.0)
            .expect("every safetensors type is in the table")
    }

    #[must_use]
    pub fn to_safetensors(self) -> Dtype {
        self.entry().1
    }
}

impl From<FloatDType> for StoredType {
    fn from(dtype: FloatDType) -> Self {
        match dtype {
            FloatDType::F32 => StoredType::F32,
            FloatDType::F16 => StoredType::F16,
            FloatDType::BF16 => StoredType::BF16,
        }
    }
}

impl std::fmt::Display for StoredType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
