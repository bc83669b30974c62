//! The tokenizer of a Hugging Face model folder, as the values of GGUF's `tokenizer.*` keys.
//!
//! It is read the way llama.cpp's converter (`convert_hf_to_gguf.py`: `_set_vocab_sentencepiece`,
//! `_set_vocab_gpt2`) and gguf-py's `SpecialVocab` read it, so that llama.cpp and bitnet.cpp load
//! the same vocabulary from ryzq's GGUF files as from the converter's. Which kind, as in the
//! converter's `LlamaModel.set_vocab`: a SentencePiece `tokenizer.model` if there is one (GGUF
//! model `llama`), else the byte-level BPE of `tokenizer.json` (`gpt2`).
//!
//! Where the converter would write a file that loads but tokenizes differently from the model's
//! own tokenizer, ryzq refuses instead: a pre-tokenizer llama.cpp has no regex for, a SentencePiece
//! Unigram model (llama.cpp's `llama` tokenizer is BPE), tokens beyond the embedding's rows.

mod bpe;
mod sentencepiece;
mod special;

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::source::folder::{CONFIG, read_json};

pub use bpe::KNOWN_PRE_TOKENIZERS;

/// A SentencePiece model (protobuf `ModelProto`).
pub const SENTENCEPIECE_MODEL: &str = "tokenizer.model";
/// A Hugging Face `tokenizers` tokenizer.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// transformers' tokenizer settings: special tokens, `add_bos_token`, the chat template.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Tokens added to a SentencePiece model, `{text: id}`.
pub const ADDED_TOKENS: &str = "added_tokens.json";

/// The tokenizer llama.cpp runs: `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModel {
    /// Byte-level BPE with merges, from `tokenizer.json`.
    Gpt2,
    /// SentencePiece BPE with scores, from `tokenizer.model`.
    Llama,
}

impl TokenizerModel {
    /// The value of `tokenizer.ggml.model`.
    #[must_use]
    pub fn gguf_name(self) -> &'static str {
        match self {
            TokenizerModel::Gpt2 => "gpt2",
            TokenizerModel::Llama => "llama",
        }
    }
}

/// A token's type, an element of `tokenizer.ggml.token_type` (written as i32: the reader casts
/// the array's data to `int*` whatever its declared type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// The value written in `tokenizer.ggml.token_type`.
    #[must_use]
    pub fn gguf_value(self) -> i32 {
        self as i32
    }
}

/// A special token GGUF has a key for. (`SpecialVocab` also finds `cls`, which no GGUF key
/// holds; ryzq uses it only where the post-processor rules need it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialToken {
    Bos,
    Eos,
    Unknown,
    Separator,
    Padding,
    Mask,
    /// End of turn, found when a `TemplateProcessing` post-processor ends with another token
    /// than `eos_token`.
    Eot,
    /// End of message, the same for a second such token.
    Eom,
}

impl SpecialToken {
    pub const ALL: [SpecialToken; 8] = [
        SpecialToken::Bos,
        SpecialToken::Eos,
        SpecialToken::Unknown,
        SpecialToken::Separator,
        SpecialToken::Padding,
        SpecialToken::Mask,
        SpecialToken::Eot,
        SpecialToken::Eom,
    ];

    /// The name `tokenizer_config.json` (`<name>_token`), `config.json` (`<name>_token_id`)
    /// and gguf-py's `SpecialVocab` give it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SpecialToken::Bos => "bos",
            SpecialToken::Eos => "eos",
            SpecialToken::Unknown => "unk",
            SpecialToken::Separator => "sep",
            SpecialToken::Padding => "pad",
            SpecialToken::Mask => "mask",
            SpecialToken::Eot => "eot",
            SpecialToken::Eom => "eom",
        }
    }

    /// Its GGUF key, a u32 (the reader checks the type of these).
    #[must_use]
    pub fn gguf_key(self) -> &'static str {
        match self {
            SpecialToken::Bos => "tokenizer.ggml.bos_token_id",
            SpecialToken::Eos => "tokenizer.ggml.eos_token_id",
            SpecialToken::Unknown => "tokenizer.ggml.unknown_token_id",
            // Sic: the key is spelled this way in gguf-py and llama.cpp.
            SpecialToken::Separator => "tokenizer.ggml.seperator_token_id",
            SpecialToken::Padding => "tokenizer.ggml.padding_token_id",
            SpecialToken::Mask => "tokenizer.ggml.mask_token_id",
            SpecialToken::Eot => "tokenizer.ggml.eot_token_id",
            SpecialToken::Eom => "tokenizer.ggml.eom_token_id",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A model's vocabulary as the values of GGUF's `tokenizer.*` keys. Every `Option` that is
/// `None` is a key not to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model` (str).
    pub model: TokenizerModel,
    /// `tokenizer.ggml.pre` (str): `default` for SentencePiece, the pre-tokenizer's llama.cpp
    /// name for BPE (one of [`KNOWN_PRE_TOKENIZERS`]).
    pub pre: String,
    /// `tokenizer.ggml.tokens` (array of str), one per embedding row: ids without a token are
    /// `[PAD{id}]`, empty ones `[EMPTY_{id}]` (what llama.cpp reads them as).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (array of **f32**), SentencePiece only: piece scores, −1000 for
    /// added tokens, −10000 for `[PAD{id}]`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (array of **i32**, [`TokenType::gguf_value`]).
    pub token_types: Vec<TokenType>,
    /// `tokenizer.ggml.merges` (array of str), BPE only: `"left right"`, in rank order.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.<…>_token_id` (u32 each, [`SpecialToken::gguf_key`]), in the order found.
    pub special_ids: Vec<(SpecialToken, u32)>,
    /// `tokenizer.ggml.add_bos_token` (bool).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (bool).
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_sep_token` (bool).
    pub add_sep: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (bool): `tokenizer_config.json`'s `add_prefix_space`,
    /// else for SentencePiece the model's `add_dummy_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template` (str).
    pub chat_template: Option<String>,
    /// `tokenizer.chat_template.<name>` (str) each, and their names as `tokenizer.chat_templates`
    /// (array of str): the other templates of a list of named ones.
    pub named_chat_templates: Vec<(String, String)>,
}

impl Vocab {
    /// The id of a special token, if the tokenizer names one.
    #[must_use]
    pub fn special_id(&self, which: SpecialToken) -> Option<u32> {
        self.special_ids
            .iter()
            .find(|(t, _)| *t == which)
            .map(|&(_, id)| id)
    }
}

/// Score of the tokens a SentencePiece vocabulary gets from `added_tokens.json` and
/// `added_tokens_decoder`.
pub(crate) const ADDED_TOKEN_SCORE: f32 = -1000.0;
/// Score of the `[PAD{id}]` slots of a SentencePiece vocabulary (upstream converter).
pub(crate) const PAD_SCORE: f32 = -10000.0;

/// The vocabulary of the model folder `dir`, whose `config.json` is `config`, for an embedding
/// of `n_vocab` rows.
///
/// Exactly `n_vocab` tokens, as llama.cpp requires (`token_embd` is checked against the token
/// count): config's `vocab_size` must equal `n_vocab`, and a token id at or beyond it is an
/// error.
pub fn read_vocab(dir: &Path, config: &Map<String, Value>, n_vocab: usize) -> Result<Vocab> {
    if n_vocab == 0 || n_vocab > i32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "an embedding of {n_vocab} rows: a vocabulary has 1 to {} tokens",
            i32::MAX
        )));
    }
    check_vocab_size(dir, config, n_vocab)?;
    let tokenizer_config = read_object(&dir.join(TOKENIZER_CONFIG), "a tokenizer config")?;
    let tokenizer_json_path = dir.join(TOKENIZER_JSON);
    let tokenizer_json = read_object(&tokenizer_json_path, "a tokenizer")?;
    let spm_path = dir.join(SENTENCEPIECE_MODEL);

    let mut vocab = if spm_path.is_file() {
        let spm = sentencepiece::read(
            &spm_path,
            dir,
            tokenizer_config.as_ref().map(|(c, p)| (c, p.as_path())),
            n_vocab,
        )?;
        let add_space_prefix =
            add_prefix_space(tokenizer_config.as_ref()).or(Some(spm.add_dummy_prefix));
        Vocab {
            model: TokenizerModel::Llama,
            pre: "default".to_owned(),
            tokens: spm.tokens,
            scores: Some(spm.scores),
            token_types: spm.types,
            merges: Vec::new(),
            special_ids: Vec::new(),
            add_bos: None,
            add_eos: None,
            add_sep: None,
            add_space_prefix,
            chat_template: None,
            named_chat_templates: Vec::new(),
        }
    } else if let Some((tokenizer, path)) = &tokenizer_json {
        let bpe = bpe::read(path, tokenizer, n_vocab)?;
        Vocab {
            model: TokenizerModel::Gpt2,
            pre: bpe.pre.to_owned(),
            tokens: bpe.tokens,
            scores: None,
            token_types: bpe.types,
            merges: bpe.merges,
            special_ids: Vec::new(),
            add_bos: None,
            add_eos: None,
            add_sep: None,
            add_space_prefix: add_prefix_space(tokenizer_config.as_ref()),
            chat_template: None,
            named_chat_templates: Vec::new(),
        }
    } else {
        return Err(Error::Format(format!(
            "no {SENTENCEPIECE_MODEL} and no {TOKENIZER_JSON}: ryzq writes the vocabulary of a \
             SentencePiece model or of a byte-level BPE tokenizer.json"
        ))
        .in_file(dir, None));
    };

    let special = special::read(
        dir,
        tokenizer_json.as_ref().map(|(t, p)| (t, p.as_path())),
        tokenizer_config.as_ref().map(|(c, p)| (c, p.as_path())),
        config,
        n_vocab,
    )?;
    vocab.special_ids = special.ids;
    vocab.add_bos = special.add_bos;
    vocab.add_eos = special.add_eos;
    vocab.add_sep = special.add_sep;
    vocab.chat_template = special.chat_template;
    vocab.named_chat_templates = special.named_chat_templates;

    for (id, token) in vocab.tokens.iter_mut().enumerate() {
        if token.is_empty() {
            *token = format!("[EMPTY_{id}]");
        }
    }
    check_unique(dir, &vocab.tokens)?;
    Ok(vocab)
}

/// `config.json`'s `vocab_size`, where it has one, is the embedding's row count: llama.cpp's
/// old fork reads `{arch}.vocab_size` as the token count.
fn check_vocab_size(dir: &Path, config: &Map<String, Value>, n_vocab: usize) -> Result<()> {
    let Some(value) = config.get("vocab_size") else {
        return Ok(());
    };
    let path = dir.join(CONFIG);
    match value.as_u64() {
        Some(size) if size == n_vocab as u64 => Ok(()),
        Some(size) => Err(Error::Format(format!(
            "vocab_size is {size} but the embedding has {n_vocab} rows; a GGUF file needs them \
             equal (llama.cpp checks token_embd against the token count)"
        ))
        .in_file(&path, None)),
        None => {
            Err(Error::Format(format!("vocab_size {value} is not a count")).in_file(&path, None))
        }
    }
}

/// A JSON object file of the folder, with its path, if the file exists.
fn read_object(
    path: &Path,
    what: &str,
) -> Result<Option<(Map<String, Value>, std::path::PathBuf)>> {
    if !path.is_file() {
        return Ok(None);
    }
    match read_json(path, what)? {
        Value::Object(map) => Ok(Some((map, path.to_path_buf()))),
        _ => Err(Error::Format(format!("{what} that is not a JSON object")).in_file(path, None)),
    }
}

/// `LlamaModel.set_vocab` writes `add_space_prefix` from `tokenizer_config.json`'s
/// `add_prefix_space` whatever the tokenizer.
fn add_prefix_space(
    tokenizer_config: Option<&(Map<String, Value>, std::path::PathBuf)>,
) -> Option<bool> {
    tokenizer_config
        .and_then(|(c, _)| c.get("add_prefix_space"))
        .and_then(Value::as_bool)
}

/// llama.cpp maps each token's text to its id and asserts that no two tokens share a text.
fn check_unique(dir: &Path, tokens: &[String]) -> Result<()> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        if let Some(earlier) = first.insert(token, id) {
            return Err(Error::Format(format!(
                "tokens {earlier} and {id} are both {token:?}; llama.cpp refuses a vocabulary \
                 with a token twice"
            ))
            .in_file(dir, None));
        }
    }
    Ok(())
}

/// The checks of gguf-py's `does_token_look_special`: added tokens that some models leave
/// unmarked but that are control tokens (command-r, deepseek-coder, gemma).
pub(crate) fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// The converter writes user-defined added tokens with SentencePiece's `▁` as a plain space:
/// llama.cpp matches them against the raw text.
pub(crate) fn user_defined_text(token: &str) -> String {
    token.replace('\u{2581}', " ")
}
