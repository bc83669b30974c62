//! What is already packed in a source, and how to read it back: ryzq's own files and GGUF
//! files say so in their description (the `ryzq` metadata key, or the one the GGUF reader
//! makes); transformers' packed BitNet checkpoints (`quantization_config.quant_method:
//! "bitnet"`, a uint8 `X.weight` of shape `[out/4, in]` beside an `X.weight_scale`) are
//! described here the same way, so that every plan reads all of them alike: dequantized, or
//! their codes carried into another layout.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Source, StoredTensor};
use crate::dtype::StoredType;
use crate::error::{Error, Result};
use crate::kernels::widen::widen;
use crate::layout::Layout;
use crate::metadata::{self, DividedBias, QuantizedTensor, RyzqMetadata, ScaleConvention};
use crate::method::{Granularity, Method};
use crate::plan::LinearClass;
use crate::simd::SimdLevel;

/// The description of every file of a source, in the source's order, and what looks wrong
/// in them.
#[derive(Debug, Clone, Default)]
pub struct Descriptions {
    files: Vec<RyzqMetadata>,
    pub warnings: Vec<String>,
}

impl Descriptions {
    /// The packed tensor `name` of file `file`, if it is one.
    #[must_use]
    pub fn packed(&self, file: usize, name: &str) -> Option<&QuantizedTensor> {
        self.files[file].quantized.get(name)
    }

    /// Each scale tensor of a packed tensor, by name, with the packed tensor's name. A
    /// transformers checkpoint may keep a scale in another shard than its weight.
    #[must_use]
    pub fn scale_names(&self) -> BTreeMap<&str, &str> {
        self.files
            .iter()
            .flat_map(|d| d.quantized.iter())
            .filter_map(|(name, q)| q.scale.as_deref().map(|s| (s, name.as_str())))
            .collect()
    }

    /// The divisor of bias `name`, if it is stored divided by its weight's scale (for
    /// `AutoBitLinear`, which adds it before multiplying by that scale).
    #[must_use]
    pub fn divided_bias(&self, name: &str) -> Option<f32> {
        self.files
            .iter()
            .find_map(|d| d.divided_biases.get(name))
            .map(|b| b.divisor)
    }

    /// Fails where a description names what the source does not hold as it says (a
    /// description may name anything): a packed tensor its file lacks, a scale tensor that is
    /// missing, or one that is a packed tensor itself.
    pub fn check(&self, source: &Source) -> Result<()> {
        for (f, description) in self.files.iter().enumerate() {
            let file = &source.files()[f];
            for (name, q) in &description.quantized {
                let in_file = |e: Error| e.in_file(file.path(), Some(name));
                if file.tensor(name).is_none() {
                    return Err(in_file(Error::Format(format!(
                        "described as packed ({}), but the file has no such tensor",
                        q.layout
                    ))));
                }
                let Some(scale) = &q.scale else {
                    continue;
                };
                if scale == name || self.files.iter().any(|d| d.quantized.contains_key(scale)) {
                    return Err(in_file(Error::Format(format!(
                        "its scale tensor {scale:?} is a packed tensor itself"
                    ))));
                }
                if source.find(scale).is_none() {
                    return Err(in_file(Error::Format(format!(
                        "its scale tensor {scale:?} is missing"
                    ))));
                }
            }
        }
        Ok(())
    }

    /// Whether any tensor of the source is packed.
    #[must_use]
    pub fn any_packed(&self) -> bool {
        self.files.iter().any(|d| !d.quantized.is_empty())
    }
}

/// The transformers scale convention a folder's `config.json` declares, if it declares a
/// bitnet `quantization_config` (`linear_class` absent: `bitlinear`, transformers' default).
fn declared_in_config(source: &Source) -> Result<Option<LinearClass>> {
    let Some(folder) = source.folder() else {
        return Ok(None);
    };
    let Some(q) = folder.config().get("quantization_config") else {
        return Ok(None);
    };
    if q.get("quant_method").and_then(Value::as_str) != Some("bitnet") {
        return Ok(None);
    }
    match q.get("linear_class") {
        None | Some(Value::Null) => Ok(Some(LinearClass::BitLinear)),
        Some(Value::String(name)) => LinearClass::parse(name)
            .map(Some)
            .map_err(|e| e.in_file(&folder.dir().join("config.json"), None)),
        Some(other) => Err(Error::Format(format!(
            "quantization_config.linear_class is {other}, not a name"
        ))
        .in_file(&folder.dir().join("config.json"), None)),
    }
}

/// Describes what is packed in every file of `source`. `declared` is the scale convention of
/// transformers' packed weights when given (`source_linear_class`); else `config.json`'s
/// says it, and a packed checkpoint that says nothing is refused rather than guessed.
pub fn describe(source: &Source, declared: Option<LinearClass>) -> Result<Descriptions> {
    let in_config = declared_in_config(source)?;
    let mut out = Descriptions::default();
    if let (Some(given), Some(config)) = (declared, in_config)
        && given != config
    {
        out.warnings.push(format!(
            "source_linear_class {} overrides config.json's quantization_config.linear_class \
             {}: the stored weight_scale values are read as {}",
            given.name(),
            config.name(),
            match given {
                LinearClass::BitLinear => "1/absmean (divided by)",
                LinearClass::AutoBitLinear => "absmean (multiplied by)",
            }
        ));
    }
    let class = declared.or(in_config);
    let mut implausible: Vec<(String, f32)> = Vec::new();
    let mut described = 0usize;
    for file in source.files() {
        if let Some(text) = file.metadata().get(metadata::KEY) {
            let description =
                RyzqMetadata::from_json(text).map_err(|e| e.in_file(file.path(), None))?;
            out.files.push(description);
            continue;
        }
        let mut description = RyzqMetadata {
            version: metadata::VERSION,
            ..RyzqMetadata::default()
        };
        for t in file.tensors() {
            let in_file = |e: Error| e.in_file(file.path(), Some(&t.name));
            let Some(base) = t.name.strip_suffix(".weight") else {
                continue;
            };
            if t.dtype != StoredType::U8 {
                continue;
            }
            let scale_name = format!("{base}.weight_scale");
            let Some((place, scale)) = source.find(&scale_name) else {
                if in_config.is_some() && t.shape.len() == 2 {
                    return Err(in_file(Error::Format(format!(
                        "a uint8 weight without its {scale_name:?}, in a checkpoint whose \
                         config.json says it is packed (quant_method bitnet): the checkpoint \
                         is incomplete"
                    ))));
                }
                continue;
            };
            let class = class.ok_or_else(|| {
                in_file(Error::InvalidArgument(format!(
                    "a uint8 weight with a {scale_name:?} beside it: transformers' packed \
                     BitNet layout, but nothing says which of its two scale conventions it \
                     uses (no config.json with a bitnet quantization_config); give \
                     source_linear_class (--source-linear-class) bitlinear if the layers \
                     divide by weight_scale (1/absmean), autobitlinear if they multiply by it"
                )))
            })?;
            let shape = unpacked_shape(t).map_err(in_file)?;
            let value = scale_value(source, place, scale)?;
            let convention = match class {
                LinearClass::BitLinear => ScaleConvention::Divide,
                LinearClass::AutoBitLinear => ScaleConvention::Multiply,
            };
            let magnitude = match convention {
                ScaleConvention::Multiply => value,
                ScaleConvention::Divide => 1.0 / value,
            };
            if magnitude.abs() > 1.0 && (1.0 / magnitude).abs() < 1.0 {
                implausible.push((scale_name.clone(), value));
            }
            described += 1;
            let bias = format!("{base}.bias");
            if convention == ScaleConvention::Multiply && source.find(&bias).is_some() {
                description.divided_biases.insert(
                    bias,
                    DividedBias {
                        weight: t.name.clone(),
                        divisor: value,
                    },
                );
            }
            description.quantized.insert(
                t.name.clone(),
                QuantizedTensor {
                    layout: Layout::Bitnet.name().into(),
                    method: Method::AbsMean.name().into(),
                    granularity: Granularity::Tensor.name(),
                    dtype: scale.dtype.safetensors_name(),
                    shape,
                    scale: Some(scale_name),
                    scale_convention: convention,
                },
            );
        }
        if !description.quantized.is_empty() {
            description.linear_class = class.map(|c| c.name().into());
        }
        out.files.push(description);
    }
    if let (Some(class), Some((name, value))) = (class, implausible.first()) {
        let other = match class {
            LinearClass::BitLinear => LinearClass::AutoBitLinear,
            LinearClass::AutoBitLinear => LinearClass::BitLinear,
        };
        let (as_declared, as_other) = match class {
            LinearClass::BitLinear => (1.0 / value, *value),
            LinearClass::AutoBitLinear => (*value, 1.0 / value),
        };
        out.warnings.push(format!(
            "{} of {described} weight_scale values give weights of mean magnitude above 1 \
             under linear_class {} ({name} = {value}: |w| = {as_declared}; {} would give \
             {as_other}): linear weights are much smaller than 1, so the declared convention \
             is likely wrong; check the model, and give source_linear_class {} if it is",
            implausible.len(),
            class.name(),
            other.name(),
            other.name()
        ));
    }
    Ok(out)
}

/// The shape of the weight a transformers packed tensor of shape `[out/4, in]` holds.
fn unpacked_shape(t: &StoredTensor) -> Result<Vec<usize>> {
    match t.shape[..] {
        [rows, cols] if rows > 0 && cols > 0 => rows
            .checked_mul(4)
            .map(|out| vec![out, cols])
            .ok_or_else(|| Error::Shape(format!("packed shape {:?} overflows", t.shape))),
        _ => Err(Error::Shape(format!(
            "packed shape {:?}: transformers' packed BitNet weights are uint8 of shape \
             [out/4, in], four rows to a byte",
            t.shape
        ))),
    }
}

/// The one value of a transformers `weight_scale` (shape `[1]` or `[]`, a float).
fn scale_value(source: &Source, place: super::TensorRef, scale: &StoredTensor) -> Result<f32> {
    let holder = source.file(place);
    let in_file = |e: Error| e.in_file(holder.path(), Some(&scale.name));
    let dtype = scale.dtype.float().ok_or_else(|| {
        in_file(Error::Format(format!(
            "a weight_scale of dtype {}, not a float",
            scale.dtype
        )))
    })?;
    if scale.numel() != 1 || scale.shape.len() > 1 {
        return Err(in_file(Error::Shape(format!(
            "a weight_scale of shape {:?}: transformers' packed BitNet layout stores one scale \
             per weight, of shape [1]",
            scale.shape
        ))));
    }
    let mut value = [0f32];
    widen(SimdLevel::SCALAR, dtype, holder.read(scale)?, &mut value);
    holder.release(scale);
    if !value[0].is_finite() || value[0] == 0.0 {
        return Err(in_file(Error::ScaleRange(format!(
            "weight_scale is {}: a packed weight's scale is finite and not zero",
            value[0]
        ))));
    }
    Ok(value[0])
}
