//! Which tensors are quantized: the one place where that rule lives.
//!
//! By default (the BitNet and transformers convention) the 2-D `*.weight` tensors of linear
//! layers are quantized; embeddings, the output head, normalization weights, biases, other
//! 1-D tensors and non-float tensors are kept. `include` and `exclude` glob patterns, matched
//! against the whole tensor name, override the default (exclude wins over include).

use glob::Pattern;

use crate::dtype::StoredType;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Quantize,
    /// Kept as it is, and why.
    Keep(String),
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

fn compile(patterns: &[String]) -> Result<Vec<Pattern>> {
    patterns
        .iter()
        .map(|p| {
            Pattern::new(p)
                .map_err(|e| Error::InvalidArgument(format!("bad glob pattern {p:?}: {e}")))
        })
        .collect()
}

/// The kind of module a default-kept weight belongs to, from its name's components.
fn kept_kind(name: &str) -> Option<&'static str> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.iter().any(|p| *p == "lm_head" || *p == "embed_out") {
        return Some("the output head (lm_head) is kept in full precision");
    }
    if parts
        .iter()
        .any(|p| p.contains("embed") || *p == "wte" || *p == "wpe")
    {
        return Some("embeddings are kept in full precision");
    }
    if parts
        .iter()
        .any(|p| p.contains("norm") || p.starts_with("ln_") || *p == "ln")
    {
        return Some("normalization weights are kept in full precision");
    }
    None
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Self {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// The `exclude` pattern that matches `name`, if any.
    #[must_use]
    pub fn excluded_by(&self, name: &str) -> Option<&str> {
        self.exclude
            .iter()
            .find(|p| p.matches(name))
            .map(Pattern::as_str)
    }

    #[must_use]
    pub fn decide(&self, name: &str, dtype: StoredType, shape: &[usize]) -> Decision {
        if let Some(p) = self.excluded_by(name) {
            return Decision::Keep(format!("excluded by pattern {p:?}"));
        }
        if dtype.float().is_none() {
            return Decision::Keep(format!(
                "dtype {dtype} is not one ryzq quantizes (float32, float16, bfloat16)"
            ));
        }
        if self.include.iter().any(|p| p.matches(name)) {
            return if shape.is_empty() {
                Decision::Keep("a 0-d tensor cannot be quantized".into())
            } else {
                Decision::Quantize
            };
        }
        if shape.len() != 2 {
            return Decision::Keep(format!(
                "{}-D tensor: only 2-D linear weights are quantized by default",
                shape.len()
            ));
        }
        if !name.ends_with(".weight") {
            return Decision::Keep("not a .weight tensor".into());
        }
        if let Some(why) = kept_kind(name) {
            return Decision::Keep(why.into());
        }
        Decision::Quantize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule() {
        let s = Selection::default();
        let q =
            |n: &str, shape: &[usize]| s.decide(n, StoredType::BF16, shape) == Decision::Quantize;
        assert!(q("model.layers.3.self_attn.q_proj.weight", &[64, 64]));
        assert!(q("model.layers.3.mlp.down_proj.weight", &[64, 256]));
        assert!(!q("model.embed_tokens.weight", &[100, 64]));
        assert!(!q("transformer.wte.weight", &[100, 64]));
        assert!(!q("lm_head.weight", &[100, 64]));
        assert!(!q("gpt_neox.embed_out.weight", &[100, 64]));
        assert!(!q("model.layers.3.input_layernorm.weight", &[64]));
        assert!(!q("model.layers.3.self_attn.q_norm.weight", &[8, 8]));
        assert!(!q("model.layers.3.self_attn.q_proj.bias", &[64]));
        assert!(!q("model.layers.3.self_attn.q_proj.weight_scale", &[64, 1]));
        assert!(!q("model.layers.0.conv.weight", &[4, 4, 3]));
        assert_eq!(
            s.decide("model.layers.0.mlp.up_proj.weight", StoredType::I8, &[4, 4]),
            Decision::Keep(
                "dtype int8 is not one ryzq quantizes (float32, float16, bfloat16)".into()
            )
        );
    }

    #[test]
    fn patterns_override() {
        let s = Selection::new(&["lm_head.*".into()], &["*.layers.0.*".into()]).unwrap();
        assert_eq!(
            s.decide("lm_head.weight", StoredType::F32, &[8, 4]),
            Decision::Quantize
        );
        assert!(matches!(
            s.decide(
                "model.layers.0.mlp.up_proj.weight",
                StoredType::F32,
                &[8, 4]
            ),
            Decision::Keep(_)
        ));
        assert!(Selection::new(&["[".into()], &[]).is_err());
    }
}
