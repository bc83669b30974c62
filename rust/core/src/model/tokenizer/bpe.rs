//! The byte-level BPE of a `tokenizer.json`, as the converter's `get_vocab_base` and
//! `SpecialVocab(load_merges=True)` read it, and its pre-tokenizer's llama.cpp name.

use std::path::Path;

use serde_json::{Map, Value};

use super::{TokenType, looks_special, user_defined_text};
use crate::error::{Error, Result};

/// LLaMA 3's split (`tokenizer.json` of Meta-Llama-3, microsoft/bitnet-b1.58-2B-4T,
/// HF1BitLLM/Llama3-8B-1.58), the original that llama.cpp's `LLAMA3` regex adapts.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: LLaMA 3's with single digits (llama.cpp's `QWEN2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One step of a pre-tokenizer, as far as it decides how text is split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `Split` on a regex, each match its own piece (`Isolated`, not inverted).
    SplitIsolated(String),
    /// `ByteLevel` without a prefix space; with `use_regex` it also splits with GPT-2's regex.
    ByteLevel { use_regex: bool },
    /// Anything else, described.
    Other(String),
}

/// The pre-tokenizers ryzq names, by their llama.cpp `tokenizer.ggml.pre` name: what
/// llama.cpp and bitnet.cpp select their pre-tokenization regex and flags by. Each is a name
/// both runtimes know.
pub const KNOWN_PRE_TOKENIZERS: &[(&str, &str)] = &[
    (
        "llama-bpe",
        "LLaMA 3's split regex then ByteLevel (Llama 3, bitnet-b1.58-2B-4T, Llama3-8B-1.58; \
         llama.cpp reads falcon3 and falcon-h1 as the same)",
    ),
    ("qwen2", "Qwen2's split regex then ByteLevel"),
    ("gpt-2", "ByteLevel with GPT-2's regex alone"),
];

fn known_steps(name: &str) -> Vec<Step> {
    match name {
        "llama-bpe" => vec![
            Step::SplitIsolated(LLAMA3_REGEX.to_owned()),
            Step::ByteLevel { use_regex: false },
        ],
        "qwen2" => vec![
            Step::SplitIsolated(QWEN2_REGEX.to_owned()),
            Step::ByteLevel { use_regex: false },
        ],
        "gpt-2" => vec![Step::ByteLevel { use_regex: true }],
        _ => unreachable!("every known pre-tokenizer has its steps"),
    }
}

pub(super) struct BpeVocab {
    pub pre: &'static str,
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub merges: Vec<String>,
}

/// The vocabulary of the `tokenizer.json` at `path`, parsed as `tokenizer`.
pub(super) fn read(
    path: &Path,
    tokenizer: &Map<String, Value>,
    n_vocab: usize,
) -> Result<BpeVocab> {
    let bad = |what: String| Error::Format(what).in_file(path, None);
    let Some(Value::Object(model)) = tokenizer.get("model") else {
        return Err(bad("no model object, so not a tokenizers tokenizer".into()));
    };
    let kind = model.get("type").and_then(Value::as_str);
    if kind != Some("BPE") {
        let what = kind.map_or_else(
            || "a model without a type".to_owned(),
            |k| format!("a {k} tokenizer"),
        );
        return Err(bad(format!(
            "{what}; ryzq writes the vocabulary of a byte-level BPE tokenizer.json or of a \
             SentencePiece tokenizer.model"
        )));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "a BPE with byte fallback, converted from a SentencePiece model (Llama 2, \
             Mistral); ryzq reads such vocabularies from their tokenizer.model, which this \
             folder lacks"
                .into(),
        ));
    }
    let decoder = tokenizer
        .get("decoder")
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str);
    if decoder != Some("ByteLevel") {
        return Err(bad(format!(
            "a BPE whose decoder is {}, not ByteLevel; ryzq writes byte-level BPE vocabularies",
            decoder.unwrap_or("missing")
        )));
    }
    let pre =
        pre_tokenizer_name(tokenizer.get("pre_tokenizer").unwrap_or(&Value::Null)).map_err(bad)?;

    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![TokenType::Unused; n_vocab];
    let Some(Value::Object(vocab)) = model.get("vocab") else {
        return Err(bad("the BPE model has no vocab map".into()));
    };
    for (text, id) in vocab {
        let id = token_id(id, text, n_vocab).map_err(bad)?;
        if let Some(earlier) = &tokens[id] {
            return Err(bad(format!(
                "tokens {earlier:?} and {text:?} both have id {id}"
            )));
        }
        tokens[id] = Some(text.clone());
        types[id] = TokenType::Normal;
    }

    let added = match tokenizer.get("added_tokens") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(added)) => added.as_slice(),
        Some(_) => return Err(bad("added_tokens is not a list".into())),
    };
    for token in added {
        let content = token.get("content").and_then(Value::as_str);
        let id = token.get("id");
        let (Some(content), Some(id)) = (content, id) else {
            return Err(bad(format!("added token {token} has no content or id")));
        };
        let id = token_id(id, content, n_vocab).map_err(bad)?;
        let special = token.get("special").and_then(Value::as_bool) == Some(true);
        // tokenizers' default for an added token: normalized unless special.
        let normalized = token
            .get("normalized")
            .and_then(Value::as_bool)
            .unwrap_or(!special);
        // The converter re-encodes a non-normalized added token and decodes it back: the text
        // llama.cpp matches it against. For a ByteLevel decoder that maps its characters back
        // to bytes (Falcon3's added "Ċ" becomes "\n").
        let text = if normalized {
            content.to_owned()
        } else {
            byte_level_decode(content)
        };
        if special || looks_special(&text) {
            tokens[id] = Some(text);
            types[id] = TokenType::Control;
        } else {
            tokens[id] = Some(user_defined_text(&text));
            types[id] = TokenType::UserDefined;
        }
    }

    let merges = merges(model).map_err(bad)?;
    if merges.is_empty() {
        return Err(bad(
            "a BPE without merges; llama.cpp refuses a gpt2 vocabulary without them".into(),
        ));
    }

    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| format!("[PAD{id}]")))
        .collect();
    Ok(BpeVocab {
        pre,
        tokens,
        types,
        merges,
    })
}

fn token_id(id: &Value, text: &str, n_vocab: usize) -> std::result::Result<usize, String> {
    match id.as_u64() {
        Some(id) if id < n_vocab as u64 => Ok(id as usize),
        Some(id) => Err(format!(
            "token {text:?} has id {id}, beyond the embedding's {n_vocab} rows"
        )),
        None => Err(format!("token {text:?} has id {id}, not a token id")),
    }
}

/// `model.merges` as llama.cpp's `"left right"` strings. tokenizers writes them as such strings,
/// or (since 0.20, so that a part may hold a space) as `[left, right]` pairs; a space inside a
/// part is then written as `Ġ` (U+0120), its byte-level character, as gguf-py does.
fn merges(model: &Map<String, Value>) -> std::result::Result<Vec<String>, String> {
    let Some(Value::Array(merges)) = model.get("merges") else {
        return Ok(Vec::new());
    };
    merges
        .iter()
        .enumerate()
        .map(|(rank, merge)| match merge {
            // llama.cpp splits at the first space after the first byte.
            Value::String(s) if s.bytes().skip(1).any(|b| b == b' ') => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                (Value::String(left), Value::String(right)) => Ok(format!(
                    "{} {}",
                    left.replace(' ', "\u{120}"),
                    right.replace(' ', "\u{120}")
                )),
                _ => Err(format!("merge {rank} ({merge}) is not a pair of strings")),
            },
            _ => Err(format!(
                "merge {rank} ({merge}) is neither \"left right\" nor [left, right]"
            )),
        })
        .collect()
}

/// The llama.cpp name of a `pre_tokenizer`, or why there is none.
fn pre_tokenizer_name(pre_tokenizer: &Value) -> std::result::Result<&'static str, String> {
    let mut found = Vec::new();
    flatten(pre_tokenizer, &mut found);
    for &(name, _) in KNOWN_PRE_TOKENIZERS {
        if found == known_steps(name) {
            return Ok(name);
        }
    }
    let described: Vec<String> = found
        .iter()
        .map(|step| match step {
            Step::SplitIsolated(regex) => {
                let shown: String = regex.chars().take(80).collect();
                let more = if shown.len() < regex.len() { "…" } else { "" };
                format!("Split({shown:?}{more})")
            }
            Step::ByteLevel { use_regex } => format!("ByteLevel(use_regex={use_regex})"),
            Step::Other(what) => what.clone(),
        })
        .collect();
    let known: Vec<String> = KNOWN_PRE_TOKENIZERS
        .iter()
        .map(|(name, what)| format!("{name} ({what})"))
        .collect();
    Err(format!(
        "pre_tokenizer [{}] is none ryzq knows; llama.cpp splits text with the regex its name \
         selects, so another would tokenize differently from the model. ryzq knows: {}",
        described.join(", "),
        known.join("; ")
    ))
}

/// The steps of a pre-tokenizer, `Sequence`s flattened. Defaults are tokenizers' own:
/// `ByteLevel` adds a prefix space and uses its regex unless told not to.
fn flatten(pre: &Value, out: &mut Vec<Step>) {
    let kind = pre.get("type").and_then(Value::as_str);
    match kind {
        Some("Sequence") => match pre.get("pretokenizers").and_then(Value::as_array) {
            Some(steps) => steps.iter().for_each(|s| flatten(s, out)),
            None => out.push(Step::Other("Sequence without pretokenizers".into())),
        },
        Some("Split") => {
            let regex = pre
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str);
            let isolated = pre.get("behavior").and_then(Value::as_str) == Some("Isolated");
            let inverted = pre.get("invert").and_then(Value::as_bool) == Some(true);
            match regex {
                Some(regex) if isolated && !inverted => out.push(Step::SplitIsolated(regex.into())),
                _ => out.push(Step::Other(format!("Split({})", compact(pre)))),
            }
        }
        Some("ByteLevel") => {
            let flag = |key: &str| pre.get(key).and_then(Value::as_bool).unwrap_or(true);
            if flag("add_prefix_space") {
                out.push(Step::Other(
                    "ByteLevel(add_prefix_space=true), a prefix space llama.cpp's BPE never adds"
                        .into(),
                ));
            } else {
                out.push(Step::ByteLevel {
                    use_regex: flag("use_regex"),
                });
            }
        }
        Some(other) => out.push(Step::Other(other.to_owned())),
        None if pre.is_null() => out.push(Step::Other("no pre_tokenizer".into())),
        None => out.push(Step::Other(compact(pre))),
    }
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 100 {
        text.chars().take(100).chain("…".chars()).collect()
    } else {
        text
    }
}

/// tokenizers' `ByteLevel` decoder on one token: each character back to the byte GPT-2's
/// `bytes_to_unicode` maps to it, or the token's UTF-8 as it is if any character is not one of
/// those 256; then the bytes as UTF-8 with invalid sequences replaced by U+FFFD.
pub(crate) fn byte_level_decode(token: &str) -> String {
    let bytes: Option<Vec<u8>> = token.chars().map(unicode_to_byte).collect();
    match bytes {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => token.to_owned(),
    }
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 stands for itself, the other
/// 68 bytes for U+0100 onwards in byte order.
fn unicode_to_byte(c: char) -> Option<u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let code = c as u32;
    if printable(code) {
        return Some(code as u8);
    }
    let offset = code.checked_sub(0x100)?;
    (0u32..=0xff)
        .filter(|&b| !printable(b))
        .nth(offset as usize)
        .map(|b| b as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_characters_map_back_to_their_bytes() {
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('!'), Some(b'!'));
        assert_eq!(unicode_to_byte('\u{100}'), Some(0));
        assert_eq!(unicode_to_byte('\u{143}'), Some(0xad));
        assert_eq!(unicode_to_byte('\u{144}'), None);
        assert_eq!(unicode_to_byte(' '), None);
        let all: std::collections::HashSet<u8> = (0u32..0x200)
            .filter_map(|c| char::from_u32(c).and_then(unicode_to_byte))
            .collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn byte_level_decode_follows_tokenizers() {
        assert_eq!(byte_level_decode("ĠĠ"), "  ");
        assert_eq!(byte_level_decode("Ċ"), "\n");
        // A character outside the 256 keeps the whole token as it is.
        assert_eq!(byte_level_decode("a b"), "a b");
        assert_eq!(byte_level_decode("▁x"), "▁x");
        // All inside, but not UTF-8 once mapped: é stands for the byte 0xE9.
        assert_eq!(byte_level_decode("café"), "caf\u{fffd}");
        assert_eq!(byte_level_decode("<|eot_id|>"), "<|eot_id|>");
    }
}
