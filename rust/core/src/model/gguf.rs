//! How a Hugging Face model becomes a GGUF model file that llama.cpp and bitnet.cpp load: per
//! architecture, the GGUF architecture name, the tensor names, the transforms (llama's q/k
//! permutation) and the hyperparameter keys, as llama.cpp's converter registers its model
//! classes (`conversion/bitnet.py`, `conversion/llama.py`) and its loader reads them
//! (`src/llama-model.cpp`).

use serde_json::{Map, Value as Json};

use super::{ARCHITECTURES, Architecture};
use crate::error::{Error, Result};
use crate::gguf::Value;

/// Which runtime a GGUF file is written for: they name the architectures differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// llama.cpp (TQ1_0, TQ2_0, Q2_0 blocks).
    LlamaCpp,
    /// bitnet.cpp (I2_S blocks), whose llama.cpp fork has its own BitNet graphs.
    BitnetCpp,
}

/// What a tensor is in the GGUF graph, which decides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `token_embd.weight`.
    Embedding,
    /// `output.weight`, an output head of its own.
    Output,
    /// A normalization weight: float32, as every ggml kernel that reads norms needs.
    Norm,
    /// A linear layer's weight: ternary. Q and K of `llama` carry the head count their rows
    /// are permuted by.
    Linear {
        permute_heads: Option<HeadPermutation>,
    },
    /// A linear layer's bias (`llama` only): float32, permuted like its weight.
    Bias {
        permute_heads: Option<HeadPermutation>,
    },
}

/// A tensor of the GGUF file: its name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufName {
    pub name: String,
    pub role: Role,
    /// The shape (HF order) llama.cpp's loader checks it against, where it checks one here.
    pub shape: Option<Vec<usize>>,
}

/// The hyperparameters the graph needs, read once from `config.json`.
#[derive(Debug, Clone)]
pub struct Hyperparameters {
    pub context_length: u32,
    pub embedding_length: u32,
    pub block_count: u32,
    pub feed_forward_length: u32,
    pub head_count: u32,
    pub head_count_kv: u32,
    pub rms_epsilon: f32,
    pub rope_freq_base: f32,
    pub head_dim: u32,
    /// Whether `config.json` gives `head_dim` itself.
    pub explicit_head_dim: bool,
    pub hidden_act: String,
    pub tied_embeddings: bool,
    /// For llama3-type RoPE scaling: the factor each rotary frequency's wavelength is
    /// multiplied by, one per pair of a head's dimensions (`rope_freqs.weight`).
    pub rope_factors: Option<Vec<f32>>,
}

fn get<'a>(config: &'a Map<String, Json>, key: &str) -> Option<&'a Json> {
    config.get(key).filter(|v| !v.is_null())
}

fn count(config: &Map<String, Json>, key: &str) -> Result<u32> {
    let value = get(config, key).ok_or_else(|| {
        Error::Format(format!(
            "config.json has no {key:?}, which the GGUF file needs"
        ))
    })?;
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::Format(format!(
                "config.json's {key:?} is {value}, not a positive integer"
            ))
        })
}

/// llama3's RoPE scaling as llama.cpp takes it, a factor per rotary frequency by which its
/// wavelength grows (transformers' `_compute_llama3_parameters` divides the frequency by
/// it): 1 for wavelengths shorter than `original / high_freq_factor`, `factor` for those
/// longer than `original / low_freq_factor`, and in between the smooth blend of the two.
/// The arithmetic is float32 where transformers' is (its frequencies), float64 elsewhere,
/// as in llama.cpp's converter.
fn llama3_rope_factors(
    scaling: &Map<String, Json>,
    config: &Map<String, Json>,
    theta: f32,
    head_dim: u32,
) -> Result<Vec<f32>> {
    let number = |key: &str, default: f64| -> Result<f64> {
        match get(scaling, key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    Error::Format(format!(
                        "config.json's RoPE scaling {key:?} is {v}, not a positive number"
                    ))
                }),
        }
    };
    let factor = number("factor", 8.0)?;
    let low = number("low_freq_factor", 1.0)?;
    let high = number("high_freq_factor", 4.0)?;
    let fallback = get(config, "original_max_position_embeddings")
        .and_then(Json::as_f64)
        .unwrap_or(8192.0);
    let original = number("original_max_position_embeddings", fallback)?;
    if high <= low {
        return Err(Error::Format(format!(
            "config.json's llama3 RoPE scaling has high_freq_factor {high} not above \
             low_freq_factor {low}"
        )));
    }
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    let dim = head_dim as usize;
    let factors: Vec<f32> = (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            let freq = 1.0 / theta.powf(exponent);
            let wavelen = 2.0 * std::f64::consts::PI / f64::from(freq);
            let multiplier = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            multiplier as f32
        })
        .collect();
    if let Some(bad) = factors.iter().find(|f| !f.is_finite() || **f <= 0.0) {
        return Err(Error::Format(format!(
            "config.json's llama3 RoPE scaling (factor {factor}) gives a rope_freqs factor of \
             {bad}, which float32 cannot hold"
        )));
    }
    Ok(factors)
}

fn float(config: &Map<String, Json>, key: &str) -> Option<Result<f32>> {
    get(config, key).map(|value| {
        value
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| {
                Error::Format(format!(
                    "config.json's {key:?} is {value}, not a positive number a float32 holds"
                ))
            })
    })
}

impl Hyperparameters {
    pub fn read(config: &Map<String, Json>) -> Result<Self> {
        let embedding_length = count(config, "hidden_size")?;
        let head_count = count(config, "num_attention_heads")?;
        let head_count_kv = match get(config, "num_key_value_heads") {
            Some(_) => count(config, "num_key_value_heads")?,
            None => head_count,
        };
        let explicit_head_dim = get(config, "head_dim").is_some();
        let head_dim = if explicit_head_dim {
            count(config, "head_dim")?
        } else if embedding_length.is_multiple_of(head_count) {
            embedding_length / head_count
        } else {
            return Err(Error::Format(format!(
                "config.json's hidden_size {embedding_length} is not a multiple of \
                 num_attention_heads {head_count}, and it gives no head_dim"
            )));
        };
        if !head_count.is_multiple_of(head_count_kv) {
            return Err(Error::Format(format!(
                "config.json's num_attention_heads {head_count} is not a multiple of \
                 num_key_value_heads {head_count_kv}"
            )));
        }
        // transformers 5 keeps RoPE under `rope_parameters`; a missing base would run with
        // llama.cpp's default of 10000, silently wrong for most models.
        let rope = get(config, "rope_parameters").and_then(Json::as_object);
        let rope_scaling = get(config, "rope_scaling")
            .and_then(Json::as_object)
            .or(rope);
        let rope_type = rope_scaling
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Json::as_str)
            .filter(|k| *k != "default");
        if let Some(kind) = rope_type.filter(|k| *k != "llama3") {
            return Err(Error::Format(format!(
                "config.json asks for RoPE scaling of type {kind:?}, which ryzq does not \
                 write to GGUF yet (it writes llama3's)"
            )));
        }
        if let (None, Some(factor)) = (
            rope_type,
            rope_scaling
                .and_then(|r| r.get("factor"))
                .and_then(Json::as_f64)
                .filter(|f| (*f - 1.0).abs() > f64::EPSILON),
        ) {
            return Err(Error::Format(format!(
                "config.json asks for RoPE scaling by {factor} without a type, which ryzq \
                 does not write to GGUF"
            )));
        }
        let rope_freq_base = match (
            float(config, "rope_theta"),
            rope.map(|r| float(r, "rope_theta")),
        ) {
            (Some(theta), _) | (None, Some(Some(theta))) => theta?,
            _ => 10_000.0,
        };
        let rope_factors = match (rope_type, rope_scaling) {
            (Some(_), Some(scaling)) => Some(llama3_rope_factors(
                scaling,
                config,
                rope_freq_base,
                head_dim,
            )?),
            _ => None,
        };
        let rms_epsilon = float(config, "rms_norm_eps").ok_or_else(|| {
            Error::Format("config.json has no \"rms_norm_eps\", which the GGUF file needs".into())
        })??;
        let hidden_act = get(config, "hidden_act")
            .or_else(|| get(config, "hidden_activation"))
            .and_then(Json::as_str)
            .unwrap_or("silu")
            .to_owned();
        Ok(Self {
            context_length: count(config, "max_position_embeddings")?,
            embedding_length,
            block_count: count(config, "num_hidden_layers")?,
            feed_forward_length: count(config, "intermediate_size")?,
            head_count,
            head_count_kv,
            rms_epsilon,
            rope_freq_base,
            head_dim,
            explicit_head_dim,
            hidden_act,
            tied_embeddings: get(config, "tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            rope_factors,
        })
    }
}

/// The architecture `config` names, if ryzq writes it to GGUF, or an error listing those it
/// writes.
pub fn gguf_architecture(config: &Map<String, Json>) -> Result<&'static Architecture> {
    super::architecture(config).ok_or_else(|| {
        let classes = super::classes(config);
        let known: Vec<&str> = ARCHITECTURES
            .iter()
            .flat_map(|a| a.classes.iter().copied())
            .collect();
        Error::Format(format!(
            "config.json names architecture {} (model_type {}), which ryzq does not write to \
             GGUF; it writes {}",
            if classes.is_empty() {
                "none".to_owned()
            } else {
                classes.join(", ")
            },
            get(config, "model_type")
                .and_then(Json::as_str)
                .unwrap_or("none"),
            known.join(", ")
        ))
    })
}

/// Per block: the HF name after `model.layers.N.`, its GGUF name after `blk.N.`, and whether
/// only BitNet's graph has it. Both HF spellings of BitNet's sub-norms are here: 1bitLLM's
/// (`inner_attn_ln`, `ffn_layernorm`) and transformers' (`attn_sub_norm`, `ffn_sub_norm`).
const BLOCK_TENSORS: &[(&str, &str, bool)] = &[
    ("input_layernorm.weight", "attn_norm.weight", false),
    ("self_attn.q_proj.weight", "attn_q.weight", false),
    ("self_attn.k_proj.weight", "attn_k.weight", false),
    ("self_attn.v_proj.weight", "attn_v.weight", false),
    ("self_attn.o_proj.weight", "attn_output.weight", false),
    (
        "self_attn.inner_attn_ln.weight",
        "attn_sub_norm.weight",
        true,
    ),
    (
        "self_attn.attn_sub_norm.weight",
        "attn_sub_norm.weight",
        true,
    ),
    ("post_attention_layernorm.weight", "ffn_norm.weight", false),
    ("mlp.gate_proj.weight", "ffn_gate.weight", false),
    ("mlp.up_proj.weight", "ffn_up.weight", false),
    ("mlp.down_proj.weight", "ffn_down.weight", false),
    ("mlp.ffn_layernorm.weight", "ffn_sub_norm.weight", true),
    ("mlp.ffn_sub_norm.weight", "ffn_sub_norm.weight", true),
];

/// Biases `llama`'s graph takes (each optional there); BitNet's has none.
const BLOCK_BIASES: &[(&str, &str)] = &[
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("mlp.gate_proj.bias", "ffn_gate.bias"),
    ("mlp.up_proj.bias", "ffn_up.bias"),
    ("mlp.down_proj.bias", "ffn_down.bias"),
];

/// The shape (HF order, `[out, in]`) llama.cpp's loader expects of the tensor named `gguf`
/// (its name after `blk.N.`, or a global one), from the hyperparameters; `None` for a name
/// whose shape it does not check here.
#[must_use]
fn expected_shape(gguf: &str, hp: &Hyperparameters) -> Option<Vec<usize>> {
    let e = hp.embedding_length as usize;
    let f = hp.feed_forward_length as usize;
    let q = (hp.head_count * hp.head_dim) as usize;
    let kv = (hp.head_count_kv * hp.head_dim) as usize;
    Some(match gguf {
        "attn_norm.weight" | "ffn_norm.weight" | "output_norm.weight" | "attn_output.bias"
        | "ffn_down.bias" => vec![e],
        "attn_sub_norm.weight" | "attn_q.bias" => vec![q],
        "ffn_sub_norm.weight" | "ffn_gate.bias" | "ffn_up.bias" => vec![f],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "attn_q.weight" => vec![q, e],
        "attn_k.weight" | "attn_v.weight" => vec![kv, e],
        "attn_output.weight" => vec![e, q],
        "ffn_gate.weight" | "ffn_up.weight" => vec![f, e],
        "ffn_down.weight" => vec![e, f],
        _ => return None,
    })
}

impl Architecture {
    /// `general.architecture` for `runtime`: llama.cpp runs BitNet only as `bitnet`;
    /// bitnet.cpp runs relu² models (2B-4T) as `bitnet-b1.58` and SiLU ones as `bitnet`.
    #[must_use]
    pub fn gguf_name(&self, runtime: Runtime, hidden_act: &str) -> &'static str {
        match (self.bitnet, runtime) {
            (false, _) => "llama",
            (true, Runtime::BitnetCpp) if hidden_act == "relu2" => "bitnet-b1.58",
            (true, _) => "bitnet",
        }
    }

    /// What the HF tensor `name` becomes, or why the GGUF graph has no place for it.
    pub fn tensor(&self, name: &str, hp: &Hyperparameters) -> Result<Option<GgufName>> {
        // `gguf` is the name after `blk.N.` for a block's tensor; `block` the block.
        let role_name = |gguf: &str, block: Option<u32>, role| {
            Ok(Some(GgufName {
                name: block.map_or_else(|| gguf.to_owned(), |b| format!("blk.{b}.{gguf}")),
                role,
                shape: expected_shape(gguf, hp),
            }))
        };
        match name {
            "model.embed_tokens.weight" => {
                return role_name("token_embd.weight", None, Role::Embedding);
            }
            "model.norm.weight" => return role_name("output_norm.weight", None, Role::Norm),
            "lm_head.weight" if hp.tied_embeddings => return Ok(None),
            "lm_head.weight" if !self.bitnet => {
                return role_name("output.weight", None, Role::Output);
            }
            "lm_head.weight" => {
                return Err(Error::Format(
                    "an output head of its own (tie_word_embeddings is false), which BitNet's \
                     GGUF graph cannot hold: it computes the logits with token_embd"
                        .into(),
                ));
            }
            _ => {}
        }
        let no_place = || {
            Error::Format(format!(
                "the GGUF graph of {} has no place for this tensor",
                if self.bitnet { "bitnet" } else { "llama" }
            ))
        };
        let rest = name.strip_prefix("model.layers.").ok_or_else(no_place)?;
        let (block, suffix) = rest.split_once('.').ok_or_else(no_place)?;
        let block: u32 = block.parse().map_err(|_| no_place())?;
        if block >= hp.block_count {
            return Err(Error::Format(format!(
                "block {block}, but config.json's num_hidden_layers is {}",
                hp.block_count
            )));
        }
        let permute = |gguf: &str| {
            if self.bitnet {
                None
            } else if gguf.starts_with("attn_q.") {
                Some(HeadPermutation::to_gguf(hp.head_count as usize))
            } else if gguf.starts_with("attn_k.") {
                Some(HeadPermutation::to_gguf(hp.head_count_kv as usize))
            } else {
                None
            }
        };
        if let Some(&(_, gguf, _)) = BLOCK_TENSORS
            .iter()
            .find(|(hf, _, bitnet_only)| *hf == suffix && (self.bitnet || !bitnet_only))
        {
            let role = if gguf.contains("norm") {
                Role::Norm
            } else {
                Role::Linear {
                    permute_heads: permute(gguf),
                }
            };
            return role_name(gguf, Some(block), role);
        }
        if !self.bitnet
            && let Some(&(_, gguf)) = BLOCK_BIASES.iter().find(|(hf, _)| *hf == suffix)
        {
            let role = Role::Bias {
                permute_heads: permute(gguf),
            };
            return role_name(gguf, Some(block), role);
        }
        if suffix.ends_with("rotary_emb.inv_freq") {
            // Recomputed by every runtime from rope.freq_base.
            return Ok(None);
        }
        Err(no_place())
    }

    /// The tensors every block must have, by GGUF name (after `blk.N.`).
    #[must_use]
    pub fn required_block_tensors(&self) -> Vec<&'static str> {
        let mut names: Vec<&str> = BLOCK_TENSORS
            .iter()
            .filter(|(_, _, bitnet_only)| self.bitnet || !bitnet_only)
            .map(|(_, gguf, _)| *gguf)
            .collect();
        names.dedup();
        names
    }

    /// The hyperparameter keys, typed as the loader reads them.
    #[must_use]
    pub fn hyperparameters(
        &self,
        arch: &str,
        hp: &Hyperparameters,
        n_vocab: u32,
    ) -> Vec<(String, Value)> {
        let key = |k: &str| format!("{arch}.{k}");
        let mut kvs = vec![
            (key("vocab_size"), Value::U32(n_vocab)),
            (key("context_length"), Value::U32(hp.context_length)),
            (key("embedding_length"), Value::U32(hp.embedding_length)),
            (key("block_count"), Value::U32(hp.block_count)),
            (
                key("feed_forward_length"),
                Value::U32(hp.feed_forward_length),
            ),
            (key("rope.dimension_count"), Value::U32(hp.head_dim)),
            (key("attention.head_count"), Value::U32(hp.head_count)),
            (key("attention.head_count_kv"), Value::U32(hp.head_count_kv)),
            (
                key("attention.layer_norm_rms_epsilon"),
                Value::F32(hp.rms_epsilon),
            ),
            (key("rope.freq_base"), Value::F32(hp.rope_freq_base)),
        ];
        if hp.explicit_head_dim {
            kvs.push((key("attention.key_length"), Value::U32(hp.head_dim)));
            kvs.push((key("attention.value_length"), Value::U32(hp.head_dim)));
        }
        // No loader reads it yet; the proposed fixes for relu² BitNet models read this key.
        kvs.push((
            key("hidden_activation"),
            Value::from(hp.hidden_act.as_str()),
        ));
        kvs
    }
}

/// llama.cpp's q/k row order for its `llama` graph, which rotates adjacent pairs where HF
/// rotates halves: row `h*D + 2i + j` of GGUF's order is row `h*D + j*D/2 + i` of HF's, for
/// `n_head` heads of `D` rows. `inverse` gives HF's order back from GGUF's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadPermutation {
    pub n_head: usize,
    pub inverse: bool,
}

impl HeadPermutation {
    /// HF's order into GGUF's.
    #[must_use]
    pub fn to_gguf(n_head: usize) -> Self {
        Self {
            n_head,
            inverse: false,
        }
    }

    /// GGUF's order back into HF's.
    #[must_use]
    pub fn from_gguf(n_head: usize) -> Self {
        Self {
            n_head,
            inverse: true,
        }
    }

    /// Fails unless `rows` split into the heads, each of an even number of rows.
    pub fn check(self, rows: usize) -> Result<()> {
        let n_head = self.n_head;
        if n_head == 0
            || n_head
                .checked_mul(2)
                .is_none_or(|n| !rows.is_multiple_of(n))
        {
            return Err(Error::Shape(format!(
                "{rows} rows do not split into {n_head} heads of an even number of rows, as \
                 llama's rotary permutation needs"
            )));
        }
        Ok(())
    }

    /// `data`, `rows` rows of `row_len` items each, in the other order.
    pub fn apply<T: Copy + Default>(
        self,
        data: &[T],
        rows: usize,
        row_len: usize,
    ) -> Result<Vec<T>> {
        self.check(rows)?;
        let n_head = self.n_head;
        if data.len() != rows * row_len {
            return Err(Error::Shape(format!(
                "{} items are not {rows} rows of {row_len}",
                data.len()
            )));
        }
        let d = rows / n_head;
        let mut out = vec![T::default(); data.len()];
        for h in 0..n_head {
            for i in 0..d / 2 {
                for j in 0..2 {
                    let (mut to, mut from) = (h * d + 2 * i + j, h * d + j * (d / 2) + i);
                    if self.inverse {
                        std::mem::swap(&mut to, &mut from);
                    }
                    out[to * row_len..(to + 1) * row_len]
                        .copy_from_slice(&data[from * row_len..(from + 1) * row_len]);
                }
            }
        }
        Ok(out)
    }
}

/// The Hugging Face name of the tensor `name` of a GGUF file of architecture `arch`
/// (`general.architecture`), and the permutation that gives its rows in HF's order; `None`
/// for an architecture or a name ryzq does not write. BitNet's sub-norms take transformers'
/// spelling.
#[must_use]
pub fn hf_name(
    name: &str,
    arch: &str,
    head_count: usize,
    head_count_kv: usize,
) -> Option<(String, Option<HeadPermutation>)> {
    let bitnet = match arch {
        "llama" => false,
        "bitnet" | "bitnet-b1.58" => true,
        _ => return None,
    };
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(hf) = global {
        return Some((hf.to_owned(), None));
    }
    let rest = name.strip_prefix("blk.")?;
    let (block, suffix) = rest.split_once('.')?;
    let block: u32 = block.parse().ok()?;
    let hf = BLOCK_TENSORS
        .iter()
        .rev()
        .find(|(_, gguf, bitnet_only)| *gguf == suffix && (bitnet || !bitnet_only))
        .map(|(hf, _, _)| *hf)
        .or_else(|| {
            (!bitnet)
                .then(|| BLOCK_BIASES.iter().find(|(_, gguf)| *gguf == suffix))
                .flatten()
                .map(|(hf, _)| *hf)
        })?;
    let permutation = match suffix.split_once('.').map(|(module, _)| module) {
        Some("attn_q") if !bitnet => Some(HeadPermutation::from_gguf(head_count)),
        Some("attn_k") if !bitnet => Some(HeadPermutation::from_gguf(head_count_kv)),
        _ => None,
    };
    Some((format!("model.layers.{block}.{hf}"), permutation))
}

/// The `config.json` of the Hugging Face model a GGUF file of an architecture ryzq writes
/// holds, from its keys (the inverse of [`Architecture::hyperparameters`]); `None` for
/// another architecture, or a file without the keys the graph needs. `tied`: the file has no
/// `output.weight`, so the logits use the token embeddings.
#[must_use]
pub fn hf_config(header: &crate::gguf::read::Header, tied: bool) -> Option<Map<String, Json>> {
    let arch = header.string("general.architecture")?;
    let (class, model_type, default_act) = match arch {
        "llama" => ("LlamaForCausalLM", "llama", "silu"),
        // llama.cpp's bitnet graph runs SiLU; bitnet.cpp's bitnet-b1.58 (2B-4T) relu².
        "bitnet" => ("BitNetForCausalLM", "bitnet", "silu"),
        "bitnet-b1.58" => ("BitNetForCausalLM", "bitnet", "relu2"),
        _ => return None,
    };
    let number = |key: &str| -> Option<f64> {
        match header.get(key)? {
            Value::U32(n) => Some(f64::from(*n)),
            Value::I32(n) => Some(f64::from(*n)),
            Value::U64(n) => Some(*n as f64),
            Value::I64(n) => Some(*n as f64),
            Value::F32(x) => Some(f64::from(*x)),
            Value::F64(x) => Some(*x),
            _ => None,
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| number(&key(k)).map(|n| Json::from(n as u64));
    let mut config = Map::new();
    config.insert("architectures".into(), Json::from(vec![class]));
    config.insert("model_type".into(), model_type.into());
    config.insert("hidden_size".into(), int("embedding_length")?);
    config.insert("intermediate_size".into(), int("feed_forward_length")?);
    config.insert("num_hidden_layers".into(), int("block_count")?);
    config.insert("num_attention_heads".into(), int("attention.head_count")?);
    let kv = int("attention.head_count_kv").or_else(|| int("attention.head_count"))?;
    config.insert("num_key_value_heads".into(), kv);
    if let Some(head_dim) = int("attention.key_length") {
        config.insert("head_dim".into(), head_dim);
    }
    if let Some(n) = int("context_length") {
        config.insert("max_position_embeddings".into(), n);
    }
    if let Some(n) = int("vocab_size") {
        config.insert("vocab_size".into(), n);
    }
    let eps = number(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5);
    config.insert("rms_norm_eps".into(), Json::from(f64::from(eps as f32)));
    let theta = number(&key("rope.freq_base")).unwrap_or(10_000.0);
    config.insert("rope_theta".into(), Json::from(f64::from(theta as f32)));
    let act = header
        .string(&key("hidden_activation"))
        .unwrap_or(default_act);
    config.insert("hidden_act".into(), act.into());
    config.insert("tie_word_embeddings".into(), tied.into());
    for (token, name) in [("bos", "bos_token_id"), ("eos", "eos_token_id")] {
        if let Some(id) = number(&format!("tokenizer.ggml.{token}_token_id")) {
            config.insert(name.into(), Json::from(id as u64));
        }
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_the_converter_s_reshape() {
        // LlamaModel.permute: reshape(n, 2, rows/n/2, ...).swapaxes(1, 2).reshape(...)
        let (n_head, rows) = (2, 8);
        let data: Vec<u8> = (0..rows as u8).collect();
        let out = HeadPermutation::to_gguf(n_head)
            .apply(&data, rows, 1)
            .unwrap();
        let mut expected = Vec::new();
        for h in 0..n_head {
            let half = rows / n_head / 2;
            for i in 0..half {
                for j in 0..2 {
                    expected.push((h * rows / n_head + j * half + i) as u8);
                }
            }
        }
        assert_eq!(out, expected);
        assert_eq!(out, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert!(HeadPermutation::to_gguf(3).apply(&data, rows, 1).is_err());
        let back = HeadPermutation::from_gguf(n_head)
            .apply(&out, rows, 1)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn gguf_names_map_back_to_hugging_face_names() {
        for (arch, gguf, hf) in [
            (
                "bitnet",
                "blk.3.attn_sub_norm.weight",
                "model.layers.3.self_attn.attn_sub_norm.weight",
            ),
            (
                "bitnet-b1.58",
                "blk.0.ffn_sub_norm.weight",
                "model.layers.0.mlp.ffn_sub_norm.weight",
            ),
            (
                "llama",
                "blk.1.ffn_down.bias",
                "model.layers.1.mlp.down_proj.bias",
            ),
            ("llama", "token_embd.weight", "model.embed_tokens.weight"),
            ("llama", "output.weight", "lm_head.weight"),
        ] {
            assert_eq!(hf_name(gguf, arch, 4, 2).unwrap().0, hf, "{gguf}");
        }
        // Every name the writer gives maps back to the name it came from.
        for &(hf, gguf, bitnet_only) in BLOCK_TENSORS {
            let arch = if bitnet_only { "bitnet" } else { "llama" };
            let (back, _) = hf_name(&format!("blk.7.{gguf}"), arch, 4, 2).unwrap();
            let canonical = hf.replace("inner_attn_ln", "attn_sub_norm");
            let canonical = canonical.replace("ffn_layernorm", "ffn_sub_norm");
            assert_eq!(back, format!("model.layers.7.{canonical}"));
        }
        assert_eq!(
            hf_name("blk.0.attn_k.weight", "llama", 4, 2).unwrap().1,
            Some(HeadPermutation::from_gguf(2))
        );
        assert_eq!(
            hf_name("blk.0.attn_k.weight", "bitnet", 4, 2).unwrap().1,
            None
        );
        assert!(hf_name("blk.0.attn_sub_norm.weight", "llama", 4, 2).is_none());
        assert!(hf_name("rope_freqs.weight", "llama", 4, 2).is_none());
        assert!(hf_name("blk.0.attn_q.weight", "qwen2", 4, 2).is_none());
    }
}
