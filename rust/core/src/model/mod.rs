//! What ryzq knows of model architectures, from a model folder's `config.json`: one small
//! entry per architecture, the way llama.cpp's converter registers its model classes. Today an
//! entry says whether the architecture is trained the BitNet b1.58 way (it computes with one
//! absmean scale per weight matrix); the GGUF writer adds its keys and tensor names here.

pub mod tokenizer;

use serde_json::{Map, Value, json};

use crate::method::{Granularity, Method};
use crate::plan::{LinearClass, QuantizeRequest};

pub mod gguf;

/// One architecture, by the names `config.json` gives it.
pub struct Architecture {
    /// `architectures` entries of `config.json`.
    pub classes: &'static [&'static str],
    /// `model_type` of `config.json`.
    pub model_type: &'static str,
    /// Trained with ternary weights, one absmean scale per weight matrix; in GGUF, BitNet's
    /// graph: sub-norms after attention and before `ffn_down`, rotary pairs in NEOX order
    /// (HF's `rotate_half`), no output head of its own and no biases.
    pub bitnet: bool,
}

pub const ARCHITECTURES: &[Architecture] = &[
    // transformers' BitNet (microsoft/bitnet-b1.58-2B-4T) and 1bitLLM's.
    Architecture {
        classes: &["BitNetForCausalLM", "BitnetForCausalLM"],
        model_type: "bitnet",
        bitnet: true,
    },
    Architecture {
        classes: &["LlamaForCausalLM"],
        model_type: "llama",
        bitnet: false,
    },
];

/// The module transformers keeps unconverted by default, and must be told to keep whenever
/// `modules_to_not_convert` is given: with tied embeddings it has no weight of its own in the
/// checkpoint, and converting it breaks loading.
pub const OUTPUT_HEAD: &str = "lm_head";

/// The `architectures` entries of `config`.
#[must_use]
pub fn classes(config: &Map<String, Value>) -> Vec<&str> {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The architecture `config` names, if ryzq knows it.
#[must_use]
pub fn architecture(config: &Map<String, Value>) -> Option<&'static Architecture> {
    let classes = classes(config);
    let model_type = config.get("model_type").and_then(Value::as_str);
    ARCHITECTURES.iter().find(|a| {
        classes.iter().any(|c| a.classes.contains(c))
            || model_type.is_some_and(|t| t.eq_ignore_ascii_case(a.model_type))
    })
}

/// Whether `config` describes a model trained the BitNet b1.58 way: a BitNet architecture or
/// `model_type`, or a bitnet `quantization_config`.
#[must_use]
pub fn is_bitnet(config: &Map<String, Value>) -> bool {
    let bitnet_quantization = config
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(Value::as_str)
        == Some("bitnet");
    let bitnet_class = classes(config).into_iter().any(|c| {
        ARCHITECTURES
            .iter()
            .any(|a| a.bitnet && a.classes.contains(&c))
    });
    let bitnet_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .is_some_and(|t| {
            ARCHITECTURES
                .iter()
                .any(|a| a.bitnet && t.eq_ignore_ascii_case(a.model_type))
        });
    bitnet_quantization || bitnet_class || bitnet_type
}

/// What to tell a user who quantizes a BitNet model with absmean at another granularity than
/// the one it was trained with, if that is what they asked for.
#[must_use]
pub fn granularity_warning(
    config: &Map<String, Value>,
    method: Method,
    granularity: Granularity,
) -> Option<String> {
    if method != Method::AbsMean || granularity == Granularity::Tensor || !is_bitnet(config) {
        return None;
    }
    Some(format!(
        "this is a BitNet model, which computes with one absmean scale per weight matrix; \
         absmean per {} gives other codes than the model was trained with, and its lower \
         weight error does not make a better model (leave --granularity at its default, \
         tensor, to reproduce the trained model)",
        granularity.name()
    ))
}

/// The `quantization_config` of the converted model, from the names of its 2-D `*.weight`
/// tensors kept as they are and quantized.
#[must_use]
pub fn quantization_config(
    kept: &[String],
    quantized: &[String],
    request: &QuantizeRequest,
) -> Value {
    let mut keep: Vec<String> = kept
        .iter()
        .map(|n| n.strip_suffix(".weight").unwrap_or(n).to_owned())
        .collect();
    let head_quantized = quantized
        .iter()
        .any(|n| n.strip_suffix(".weight") == Some(OUTPUT_HEAD));
    if !head_quantized {
        keep.push(OUTPUT_HEAD.to_owned());
    }
    keep.sort();
    keep.dedup();
    if request.layout == crate::layout::Layout::Bitnet {
        let linear_class = match request.linear_class {
            LinearClass::BitLinear => "bitlinear",
            LinearClass::AutoBitLinear => "autobitlinear",
        };
        return json!({
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": "offline",
            "modules_to_not_convert": keep,
        });
    }
    // The other layouts (i2, t1 and GGUF's blocks in safetensors) are for ryzq, whose
    // dequantize reads each file's own metadata; transformers cannot load them.
    json!({
        "quant_method": "ryzq",
        "layout": request.layout.name(),
        "method": request.method.name(),
        "granularity": request.granularity.name(),
        "modules_to_not_convert": keep,
    })
}
