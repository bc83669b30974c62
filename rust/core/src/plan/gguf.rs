//! Plans for a GGUF model file: every tensor of a model folder under its GGUF name and type,
//! the linear weights in the request's layout (or a fallback where their rows do not split
//! into its blocks), embeddings and norms in float, and the file's key-value pairs.

use serde_json::Value as Json;

use super::{
    Action, GeneratedTensor, OutputFile, PackedSource, Plan, PlannedTensor, QuantizeRequest,
};
use crate::dtype::{FloatDType, StoredType};
use crate::error::{Error, Result};
use crate::gguf::value::Array;
use crate::gguf::{GgmlType, Value};
use crate::layout::Layout;
use crate::method::Granularity;
use crate::model::gguf::{GgufName, Hyperparameters, Role, Runtime, gguf_architecture};
use crate::model::tokenizer::{SpecialToken, TokenizerModel, Vocab, read_vocab};
use crate::sink::{GgufPlacement, OutputTensor};
use crate::source::folder::OtherFiles;
use crate::source::packed::describe;
use crate::source::{Source, StoredTensor};

/// Where a linear weight goes when its rows do not split into the layout's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The smallest GGML type that holds the ternary weights exactly: Q2_0 (rows a multiple
    /// of 64), then Q8_0 (of 32), then F16.
    Q2_0,
    /// Q8_0, then F16.
    Q8_0,
    /// F16, as llama.cpp's converter does.
    F16,
    /// No fallback: such a row is an error.
    Error,
}

impl Fallback {
    pub const NAMES: [&'static str; 4] = ["q2_0", "q8_0", "f16", "error"];

    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "q2_0" => Ok(Fallback::Q2_0),
            "q8_0" => Ok(Fallback::Q8_0),
            "f16" | "float16" => Ok(Fallback::F16),
            "error" => Ok(Fallback::Error),
            other => Err(Error::InvalidArgument(format!(
                "unknown fallback {other:?}: expected {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Q2_0 => "q2_0",
            Fallback::Q8_0 => "q8_0",
            Fallback::F16 => "f16",
            Fallback::Error => "error",
        }
    }

    /// The default for a layout: bitnet.cpp, which runs I2_S, has no Q2_0.
    #[must_use]
    pub fn default_for(runtime: Runtime) -> Self {
        match runtime {
            Runtime::LlamaCpp => Fallback::Q2_0,
            Runtime::BitnetCpp => Fallback::Q8_0,
        }
    }

    /// The packed layouts to try, in order, before F16.
    fn layouts(self) -> &'static [Layout] {
        match self {
            Fallback::Q2_0 => &[Layout::Q2_0, Layout::Q8_0],
            Fallback::Q8_0 => &[Layout::Q8_0],
            Fallback::F16 | Fallback::Error => &[],
        }
    }
}

/// What a GGUF file holds besides the linear weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufOptions {
    /// `None`: the layout's runtime's default.
    pub fallback: Option<Fallback>,
    /// The type of the token embeddings (and of an output head of its own).
    pub embeddings: FloatDType,
    /// Whether to write the folder's tokenizer.
    pub tokenizer: bool,
}

impl Default for GgufOptions {
    fn default() -> Self {
        Self {
            fallback: None,
            embeddings: FloatDType::F16,
            tokenizer: true,
        }
    }
}

/// The runtime that runs `layout`'s blocks.
#[must_use]
pub fn runtime_of(layout: Layout) -> Runtime {
    match layout {
        Layout::I2S | Layout::I2SArm => Runtime::BitnetCpp,
        _ => Runtime::LlamaCpp,
    }
}

/// `general.file_type` (llama.cpp's `llama_ftype`) of a file mostly in `layout`, where it has
/// one. Only informational: loaders guess it when it is absent.
fn file_type(layout: Layout) -> Option<u32> {
    match layout {
        Layout::Tq1_0 => Some(36),
        Layout::Tq2_0 => Some(37),
        Layout::Q8_0 => Some(7),
        Layout::Q2_0 => Some(41),
        Layout::I2S | Layout::I2SArm => Some(40),
        _ => None,
    }
}

/// The `tokenizer.*` keys of `vocab`, typed as llama.cpp's loader reads them (token types
/// i32, scores f32, special ids u32); a key the folder gives no value for is left out.
fn tokenizer_kvs(vocab: Vocab) -> Vec<(String, Value)> {
    let mut kvs: Vec<(String, Value)> = vec![
        (
            "tokenizer.ggml.model".into(),
            vocab.model.gguf_name().into(),
        ),
        ("tokenizer.ggml.pre".into(), vocab.pre.into()),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(vocab.tokens)),
        ),
    ];
    if let Some(scores) = vocab.scores {
        kvs.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(Array::F32(scores)),
        ));
    }
    let types = vocab.token_types.iter().map(|t| t.gguf_value()).collect();
    kvs.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(Array::I32(types)),
    ));
    if !vocab.merges.is_empty() {
        let merges = Value::Array(Array::String(vocab.merges));
        kvs.push(("tokenizer.ggml.merges".into(), merges));
    }
    for (which, id) in vocab.special_ids {
        kvs.push((which.gguf_key().into(), Value::U32(id)));
    }
    for (key, flag) in [
        ("tokenizer.ggml.add_bos_token", vocab.add_bos),
        ("tokenizer.ggml.add_eos_token", vocab.add_eos),
        ("tokenizer.ggml.add_sep_token", vocab.add_sep),
        ("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix),
    ] {
        if let Some(flag) = flag {
            kvs.push((key.into(), Value::Bool(flag)));
        }
    }
    if let Some(template) = vocab.chat_template {
        kvs.push(("tokenizer.chat_template".into(), template.into()));
    }
    if !vocab.named_chat_templates.is_empty() {
        let names = vocab
            .named_chat_templates
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for (name, template) in vocab.named_chat_templates {
            kvs.push((format!("tokenizer.chat_template.{name}"), template.into()));
        }
        kvs.push((
            "tokenizer.chat_templates".into(),
            Value::Array(Array::String(names)),
        ));
    }
    kvs
}

/// A float output of `t` as `to`.
fn float_action(t: &StoredTensor, to: FloatDType) -> Result<Action> {
    let from = t.dtype.float().ok_or_else(|| {
        Error::Format(format!(
            "dtype {}: GGUF takes float tensors here (float32, float16, bfloat16)",
            t.dtype
        ))
    })?;
    Ok(Action::ConvertFloat {
        from,
        to,
        factor: None,
    })
}

/// The packed layout and granularity of a linear weight; `None` for F16.
type LinearType = Option<(Layout, Granularity)>;

/// A weight written in its fallback type: its name, and why and how (the same words for every
/// weight of one shape, so that the warning says them once).
type FallbackNote = (String, String);

/// The warning of the weights that fell back to `fallback`: those alike said together.
fn fallback_warning(notes: &[FallbackNote], fallback: Fallback) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, how) in notes {
        match groups.iter_mut().find(|(h, _)| h == how) {
            Some((_, names)) => names.push(name),
            None => groups.push((how, vec![name])),
        }
    }
    let said: Vec<String> = groups
        .iter()
        .map(|(how, names)| match names.as_slice() {
            [one] => format!("{one}: {how}"),
            [a, b] => format!("{a} and {b}: {how}, each"),
            [first, .., last] => {
                format!("{} weights ({first} ... {last}): {how}, each", names.len())
            }
            [] => unreachable!("a group has a weight"),
        })
        .collect();
    format!(
        "{} weight{} fell back to another type (fallback {}): {}",
        notes.len(),
        if notes.len() == 1 { "" } else { "s" },
        fallback.name(),
        said.join("; ")
    )
}

/// The type a linear weight of `shape` is written in and, for a fallback, what to tell the
/// user.
fn linear_layout(
    name: &str,
    shape: &[usize],
    request: &QuantizeRequest,
    fallback: Fallback,
) -> Result<(LinearType, Option<FallbackNote>)> {
    let fits = |layout: Layout, granularity: Granularity| {
        layout.get().packed_shape(shape).is_ok()
            && crate::quantize::check_granularity(layout, granularity).is_ok()
            && granularity.groups(shape).is_ok()
    };
    if fits(request.layout, request.granularity) {
        return Ok((Some((request.layout, request.granularity)), None));
    }
    let why = match request.layout.get().packed_shape(shape) {
        Err(e) => e.to_string(),
        Ok(_) => format!(
            "granularity {} does not fit its rows of {} values",
            request.granularity.name(),
            shape.last().copied().unwrap_or(0)
        ),
    };
    if fallback == Fallback::Error {
        let takes: Vec<&str> = Layout::ALL
            .iter()
            .filter(|l| l.get().gguf_type().is_some() && l.get().packed_shape(shape).is_ok())
            .map(|l| l.name())
            .collect();
        return Err(Error::Shape(format!(
            "{why}; with fallback error it cannot be written (layouts that take it: {}; or \
             leave --fallback at its default)",
            if takes.is_empty() {
                "none".to_owned()
            } else {
                takes.join(", ")
            }
        )));
    }
    for &layout in fallback.layouts() {
        let granularity = if fits(layout, request.granularity) {
            request.granularity
        } else {
            layout.default_granularity(request.method)
        };
        if fits(layout, granularity) {
            let bytes: usize = layout.get().packed_shape(shape)?.iter().product();
            let note = format!(
                "{why}; written as {} ({granularity}), {}",
                layout.name(),
                cost(request.layout, shape, bytes),
                granularity = granularity.name(),
            );
            return Ok((Some((layout, granularity)), Some((name.to_owned(), note))));
        }
    }
    let bytes = shape.iter().product::<usize>() * 2;
    let cost = cost(request.layout, shape, bytes);
    Ok((
        None,
        Some((name.to_owned(), format!("{why}; written as F16, {cost}"))),
    ))
}

/// What a fallback of `bytes` costs against `layout`'s bits per value for a tensor of `shape`.
fn cost(layout: Layout, shape: &[usize], bytes: usize) -> String {
    let wanted = shape.iter().product::<usize>() as f64 * layout.get().bits_per_value() / 8.0;
    format!(
        "{bytes} bytes where {} would take {:.0} (+{:.0})",
        layout.name(),
        wanted,
        bytes as f64 - wanted
    )
}

/// Whether the model's `lm_head.weight` holds the same bytes as its embedding.
fn head_repeats_embedding(source: &Source) -> Result<bool> {
    let (Some((h, head)), Some((e, embedding))) = (
        source.find("lm_head.weight"),
        source.find("model.embed_tokens.weight"),
    ) else {
        return Ok(false);
    };
    if head.dtype != embedding.dtype || head.shape != embedding.shape {
        return Ok(false);
    }
    let (head_file, embedding_file) = (source.file(h), source.file(e));
    let same = head_file.read(head)? == embedding_file.read(embedding)?;
    head_file.release(head);
    embedding_file.release(embedding);
    Ok(same)
}

/// An output tensor of a GGUF file.
fn output(name: &str, ggml_type: GgmlType, shape: &[usize]) -> Result<OutputTensor> {
    let (dtype, stored_shape) = match ggml_type {
        GgmlType::Packed(layout) => (StoredType::U8, layout.get().packed_shape(shape)?),
        float => (
            float.float().expect("a float GGML type").into(),
            shape.to_vec(),
        ),
    };
    Ok(OutputTensor {
        name: name.to_owned(),
        dtype,
        shape: stored_shape,
        gguf: Some(GgufPlacement {
            ggml_type,
            shape: shape.to_vec(),
        }),
    })
}

impl Plan {
    /// Plans writing the model folder `source` as one GGUF model file.
    pub fn gguf(source: &Source, request: &QuantizeRequest, options: &GgufOptions) -> Result<Plan> {
        let folder = source.folder().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: a GGUF model file is made from a model folder (with its config.json), \
                 not from a single safetensors file",
                source.path().display()
            ))
        })?;
        let in_config = |e: Error| e.in_file(&folder.dir().join("config.json"), None);
        let config = folder.config();
        let arch = gguf_architecture(config).map_err(in_config)?;
        let mut hp = Hyperparameters::read(config).map_err(in_config)?;
        if !hp.tied_embeddings && head_repeats_embedding(source)? {
            // Saved twice but one matrix (1bitLLM's checkpoints): the graphs that compute the
            // logits with token_embd lose nothing.
            hp.tied_embeddings = true;
        }
        if config
            .get("quantization_config")
            .and_then(|q| q.get("use_rms_norm"))
            .and_then(Json::as_bool)
            == Some(true)
        {
            return Err(in_config(Error::Format(
                "quantization_config.use_rms_norm: its per-linear input norms have no place \
                 in llama.cpp's or bitnet.cpp's graphs"
                    .into(),
            )));
        }
        GgmlType::of_layout(request.layout)?;
        crate::quantize::check_granularity(request.layout, request.granularity)?;
        let runtime = runtime_of(request.layout);
        let arch_name = arch.gguf_name(runtime, &hp.hidden_act);
        let fallback = options
            .fallback
            .unwrap_or_else(|| Fallback::default_for(runtime));
        let mut warnings = Vec::new();
        if arch.bitnet && hp.hidden_act != "silu" {
            warnings.push(match runtime {
                Runtime::LlamaCpp => format!(
                    "this model's FFN activation is {:?}, but llama.cpp's bitnet graph runs \
                     SiLU: the file loads there and gives wrong outputs; \
                     {arch_name}.hidden_activation records the activation for the runtimes \
                     that read it",
                    hp.hidden_act
                ),
                Runtime::BitnetCpp => format!(
                    "this model's FFN activation is {:?}: bitnet.cpp's llama.cpp fork of \
                     2024-25 runs {arch_name} with it, but the fork it pins since July 2026 runs \
                     SiLU (microsoft/BitNet #588) and gives wrong outputs; \
                     {arch_name}.hidden_activation records the activation for the runtimes \
                     that read it",
                    hp.hidden_act
                ),
            });
        } else if !arch.bitnet && hp.hidden_act != "silu" {
            warnings.push(format!(
                "this model's FFN activation is {:?}, but llama.cpp's llama graph runs SiLU: \
                 the file loads and gives wrong outputs",
                hp.hidden_act
            ));
        }
        if !arch.bitnet && hp.head_dim % 2 != 0 {
            return Err(in_config(Error::Format(format!(
                "head_dim {} is odd; llama's rotary permutation pairs its rows",
                hp.head_dim
            ))));
        }
        let packed = describe(source, request.source_linear_class)?;
        packed.check(source)?;
        warnings.extend(packed.warnings.iter().cloned());
        let scale_names = packed.scale_names();
        let mut tensors = Vec::new();
        let mut fallback_notes = Vec::new();
        let mut n_vocab = None;
        let mut present = std::collections::HashSet::new();
        for (place, t) in source.tensors() {
            let holder = source.file(place);
            let in_file = |e: Error| e.in_file(holder.path(), Some(&t.name));
            if scale_names.contains_key(t.name.as_str()) {
                continue;
            }
            if t.row_order.is_some() {
                return Err(in_file(Error::Format(
                    "its rows are in a GGUF file's order; ryzq writes GGUF files from model \
                     folders"
                        .into(),
                )));
            }
            let from = packed
                .packed(place.file, &t.name)
                .map(|q| PackedSource::of(t, q))
                .transpose()
                .map_err(in_file)?;
            if packed.divided_bias(&t.name).is_some() {
                return Err(in_file(Error::Format(
                    "a bias stored divided by its weight's scale (for autobitlinear): \
                     ryzq does not restore such biases into GGUF files"
                        .into(),
                )));
            }
            let Some(GgufName { name, role, shape }) =
                arch.tensor(&t.name, &hp).map_err(in_file)?
            else {
                continue;
            };
            present.insert(name.clone());
            // A packed tensor is checked by the shape of the weight it holds.
            let weight_shape = &from
                .as_ref()
                .map_or_else(|| t.shape.clone(), |f| f.shape.clone());
            if let Some(expected) = shape
                && *weight_shape != expected
            {
                return Err(in_file(Error::Shape(format!(
                    "shape {weight_shape:?}, but config.json's sizes give {expected:?} for \
                     {name}, which llama.cpp's loader checks"
                ))));
            }
            if from.is_some() && !matches!(role, Role::Linear { .. }) {
                return Err(in_file(Error::Format(format!(
                    "packed in the source, but {name} is written in float; dequantize the \
                     source first (ryzq dequantize)"
                ))));
            }
            let (action, ggml_type, permute_heads) = match role {
                Role::Embedding | Role::Output => {
                    if t.shape.len() != 2 || t.shape[1] != hp.embedding_length as usize {
                        return Err(in_file(Error::Shape(format!(
                            "shape {:?}, but config.json's hidden_size is {}",
                            t.shape, hp.embedding_length
                        ))));
                    }
                    if role == Role::Embedding {
                        n_vocab = Some(t.shape[0]);
                    }
                    let action = float_action(t, options.embeddings).map_err(in_file)?;
                    (action, GgmlType::from_float(options.embeddings), None)
                }
                Role::Norm | Role::Bias { .. } => {
                    let heads = match role {
                        Role::Bias { permute_heads } => permute_heads,
                        _ => None,
                    };
                    let action = float_action(t, FloatDType::F32).map_err(in_file)?;
                    (action, GgmlType::F32, heads)
                }
                Role::Linear { permute_heads } => {
                    if weight_shape.len() != 2 {
                        return Err(in_file(Error::Shape(format!(
                            "shape {weight_shape:?}: a linear weight is 2-D"
                        ))));
                    }
                    // Excluded linear weights are written in float16, as llama.cpp's
                    // converter writes weights it does not quantize.
                    let (chosen, note) = if request.selection.excluded_by(&t.name).is_some() {
                        (None, None)
                    } else {
                        linear_layout(&t.name, weight_shape, request, fallback).map_err(in_file)?
                    };
                    fallback_notes.extend(note);
                    if let Some(from) = from {
                        let ggml_type = match chosen {
                            Some((layout, _)) => GgmlType::Packed(layout),
                            None => GgmlType::F16,
                        };
                        let action = match chosen {
                            Some((layout, granularity)) => Action::Transcode {
                                from,
                                layout,
                                granularity: super::carried_granularity(layout, granularity),
                                scale: None,
                            },
                            None => Action::Dequantize {
                                from,
                                dtype: FloatDType::F16,
                            },
                        };
                        (action, ggml_type, permute_heads)
                    } else if let Some((layout, granularity)) = chosen {
                        float_action(t, FloatDType::F32).map_err(in_file)?;
                        let action = Action::Quantize {
                            layout,
                            granularity,
                            scale: None,
                        };
                        (action, GgmlType::Packed(layout), permute_heads)
                    } else {
                        let action = float_action(t, FloatDType::F16).map_err(in_file)?;
                        (action, GgmlType::F16, permute_heads)
                    }
                }
            };
            let out = output(&name, ggml_type, weight_shape).map_err(in_file)?;
            tensors.push(PlannedTensor {
                source: place,
                name: t.name.clone(),
                action,
                outputs: vec![out],
                row_order: permute_heads,
            });
        }
        let n_vocab = n_vocab.ok_or_else(|| {
            Error::Format("the model has no model.embed_tokens.weight".into())
                .in_file(folder.dir(), None)
        })?;
        if n_vocab == 0 {
            return Err(in_config(Error::Shape(
                "model.embed_tokens.weight has no rows: a model without tokens".into(),
            )));
        }
        if let Some(declared) = config.get("vocab_size").and_then(Json::as_u64)
            && declared as usize != n_vocab
        {
            return Err(in_config(Error::Format(format!(
                "vocab_size is {declared}, but model.embed_tokens.weight has {n_vocab} rows"
            ))));
        }
        let mut missing = Vec::new();
        for block in 0..hp.block_count {
            for name in arch.required_block_tensors() {
                let name = format!("blk.{block}.{name}");
                if !present.contains(&name) {
                    missing.push(name);
                }
            }
        }
        if !present.contains("output_norm.weight") {
            missing.push("output_norm.weight".into());
        }
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
            return Err(Error::Format(format!(
                "the GGUF graph needs {} tensor{} the model does not have: {}{}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ))
            .in_file(folder.dir(), None));
        }
        if !fallback_notes.is_empty() {
            warnings.push(fallback_warning(&fallback_notes, fallback));
        }

        // llama.cpp scales llama3's rotary frequencies by this tensor at every position; the
        // bitnet graphs have no place for it.
        let mut generated = Vec::new();
        if let Some(factors) = &hp.rope_factors {
            if arch.bitnet {
                return Err(in_config(Error::Format(
                    "llama3 RoPE scaling, which BitNet's GGUF graphs cannot hold (they have no \
                     rope_freqs)"
                        .into(),
                )));
            }
            generated.push(GeneratedTensor {
                output: output("rope_freqs.weight", GgmlType::F32, &[factors.len()])?,
                data: FloatDType::F32.encode(factors),
                why: "llama3 RoPE scaling from config.json's rope_scaling".into(),
            });
        }
        let mut kvs: Vec<(String, Value)> = vec![
            ("general.architecture".into(), arch_name.into()),
            ("general.type".into(), "model".into()),
        ];
        if let Some(name) = folder.dir().file_name().and_then(|n| n.to_str()) {
            kvs.push(("general.name".into(), name.into()));
        }
        if let Some(ft) = file_type(request.layout) {
            kvs.push(("general.file_type".into(), Value::U32(ft)));
        }
        kvs.push(("general.quantization_version".into(), Value::U32(2)));
        kvs.extend(arch.hyperparameters(arch_name, &hp, n_vocab as u32));
        kvs.push(("ryzq.version".into(), env!("CARGO_PKG_VERSION").into()));
        kvs.push(("ryzq.layout".into(), request.layout.name().into()));
        kvs.push(("ryzq.method".into(), request.method.name().into()));
        kvs.push(("ryzq.granularity".into(), request.granularity.name().into()));
        if options.tokenizer {
            let vocab = read_vocab(folder.dir(), config, n_vocab)?;
            let missing: Vec<&str> = [SpecialToken::Bos, SpecialToken::Eos]
                .into_iter()
                .filter(|t| vocab.special_id(*t).is_none())
                .map(SpecialToken::name)
                .collect();
            if vocab.model == TokenizerModel::Gpt2 && !missing.is_empty() {
                warnings.push(format!(
                    "the folder's tokenizer names no {} token (tokenizer_config.json, \
                     config.json): llama.cpp then takes token 11 for it",
                    missing.join(" or ")
                ));
            }
            kvs.extend(tokenizer_kvs(vocab));
        } else {
            // Loaders need a tokenizer model; "none" is llama.cpp's word for a file without one.
            kvs.push(("tokenizer.ggml.model".into(), "none".into()));
            warnings.push(
                "no tokenizer written (tokenizer=False, --no-tokenizer): runtimes take token \
                 ids, not text"
                    .into(),
            );
        }

        Ok(Plan {
            files: vec![OutputFile {
                shard: None,
                tensors,
                generated,
                metadata: std::collections::HashMap::new(),
            }],
            config: None,
            other_files: OtherFiles::default(),
            warnings,
            gguf_kvs: kvs,
        })
    }
}
