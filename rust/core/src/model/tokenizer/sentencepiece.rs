//! A SentencePiece `tokenizer.model` as the converter's `_create_vocab_sentencepiece` reads it:
//! pieces, scores and types, then `added_tokens.json` and `tokenizer_config.json`'s
//! `added_tokens_decoder` over them, in `n_vocab` slots pre-filled with `[PAD{id}]`.

use std::path::Path;

use prost::Message;
use serde_json::{Map, Value};

use super::{
    ADDED_TOKEN_SCORE, ADDED_TOKENS, PAD_SCORE, TokenType, looks_special, user_defined_text,
};
use crate::error::{Error, Result};
use crate::source::folder::{MAX_JSON_BYTES, read_json};

/// The parts of sentencepiece's `sentencepiece_model.proto` (proto2) that ryzq reads; prost
/// skips the other fields.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// `Type`: NORMAL 1 (the default), UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TrainerSpec {
    /// `ModelType`: UNIGRAM 1 (the default), BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NormalizerSpec {
    /// Default true: sentencepiece puts a `▁` before the text.
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
}

const MODEL_TYPE_BPE: i32 = 2;

/// SentencePiece pieces files are a few MB; this leaves room for any real one.
const MAX_MODEL_BYTES: u64 = MAX_JSON_BYTES;

pub(super) struct SentencePieceVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
    pub add_dummy_prefix: bool,
}

/// The vocabulary of the SentencePiece model at `path`, in the folder `dir`.
pub(super) fn read(
    path: &Path,
    dir: &Path,
    tokenizer_config: Option<(&Map<String, Value>, &Path)>,
    n_vocab: usize,
) -> Result<SentencePieceVocab> {
    let model = parse_model(path)?;
    if model.pieces.len() > n_vocab {
        return Err(Error::Format(format!(
            "{} pieces, more than the embedding's {n_vocab} rows",
            model.pieces.len()
        ))
        .in_file(path, None));
    }
    let mut tokens: Vec<String> = (0..n_vocab).map(|id| format!("[PAD{id}]")).collect();
    let mut scores = vec![PAD_SCORE; n_vocab];
    let mut types = vec![TokenType::Unused; n_vocab];
    for (id, piece) in model.pieces.iter().enumerate() {
        tokens[id].clone_from(piece.piece.as_ref().expect("checked by parse_model"));
        scores[id] = piece.score.unwrap_or(0.0);
        types[id] = piece_type(piece);
    }

    let added_path = dir.join(ADDED_TOKENS);
    if added_path.is_file() {
        let Value::Object(added) = read_json(&added_path, "an added-tokens list")? else {
            return Err(added_tokens_error(&added_path));
        };
        for (text, id) in &added {
            let id = id.as_u64().ok_or_else(|| added_tokens_error(&added_path))?;
            let id = slot(id, n_vocab, text, &added_path)?;
            tokens[id].clone_from(text);
            scores[id] = ADDED_TOKEN_SCORE;
            types[id] = TokenType::UserDefined;
        }
    }

    if let Some((config, config_path)) = tokenizer_config
        && let Some(decoder) = config.get("added_tokens_decoder")
    {
        let bad = || {
            Error::Format(
                "added_tokens_decoder is not a map of token ids to {\"content\": text, ...}".into(),
            )
            .in_file(config_path, None)
        };
        let Value::Object(decoder) = decoder else {
            return Err(bad());
        };
        for (id, token) in decoder {
            let id: u64 = id.parse().map_err(|_| bad())?;
            let content = token
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            let id = slot(id, n_vocab, content, config_path)?;
            let special = token.get("special").and_then(Value::as_bool) == Some(true);
            if special || looks_special(content) {
                content.clone_into(&mut tokens[id]);
                types[id] = TokenType::Control;
            } else {
                tokens[id] = user_defined_text(content);
                types[id] = TokenType::UserDefined;
            }
            scores[id] = ADDED_TOKEN_SCORE;
        }
    }

    Ok(SentencePieceVocab {
        tokens,
        scores,
        types,
        add_dummy_prefix: model
            .normalizer_spec
            .and_then(|n| n.add_dummy_prefix)
            .unwrap_or(true),
    })
}

/// The model, checked the way sentencepiece's own loader checks it (non-empty unique pieces,
/// one unknown piece), so that a file that merely decodes as protobuf is refused too.
pub(crate) fn parse_model(path: &Path) -> Result<ModelProto> {
    let not_a_model = |why: String| {
        Error::Format(format!("not a SentencePiece model: {why}")).in_file(path, None)
    };
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_MODEL_BYTES {
        return Err(Error::Format(format!(
            "a SentencePiece model of {size} bytes, over the {MAX_MODEL_BYTES} bytes ryzq reads"
        ))
        .in_file(path, None));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| not_a_model(format!("the protobuf does not decode ({e})")))?;
    if model.pieces.is_empty() {
        return Err(not_a_model("no pieces".into()));
    }
    let mut seen = std::collections::HashSet::with_capacity(model.pieces.len());
    let mut unknown = 0;
    for (id, piece) in model.pieces.iter().enumerate() {
        let text = piece.piece.as_deref().unwrap_or("");
        if text.is_empty() {
            return Err(not_a_model(format!("piece {id} is empty")));
        }
        if !seen.insert(text) {
            return Err(not_a_model(format!("piece {id} {text:?} is there twice")));
        }
        match piece.r#type {
            None | Some(1..=6) => {}
            Some(other) => {
                return Err(not_a_model(format!(
                    "piece {id} {text:?} has type {other}, which SentencePiece does not define"
                )));
            }
        }
        if piece_type(piece) == TokenType::Unknown {
            unknown += 1;
        }
    }
    if unknown != 1 {
        return Err(not_a_model(format!(
            "{unknown} unknown pieces, where SentencePiece has exactly one"
        )));
    }
    let model_type = model
        .trainer_spec
        .as_ref()
        .and_then(|t| t.model_type)
        .unwrap_or(1);
    if model_type != MODEL_TYPE_BPE {
        let name = match model_type {
            1 => "Unigram".to_owned(),
            3 => "word".to_owned(),
            4 => "character".to_owned(),
            other => format!("type {other}"),
        };
        return Err(Error::Format(format!(
            "a SentencePiece {name} model; ryzq writes SentencePiece BPE models, the kind \
             llama.cpp's `llama` tokenizer runs (it would merge the pieces of another kind by \
             their scores, splitting text differently from the model's tokenizer)"
        ))
        .in_file(path, None));
    }
    Ok(model)
}

/// The converter's order of sentencepiece's `IsUnknown` / `IsControl` / `IsUnused` / `IsByte`;
/// user-defined pieces are written NORMAL, as it does.
fn piece_type(piece: &SentencePiece) -> TokenType {
    match piece.r#type.unwrap_or(1) {
        2 => TokenType::Unknown,
        3 => TokenType::Control,
        5 => TokenType::Unused,
        6 => TokenType::Byte,
        _ => TokenType::Normal,
    }
}

fn added_tokens_error(path: &Path) -> Error {
    Error::Format("not a map of added token texts to ids".into()).in_file(path, None)
}

/// The slot of an added token, which must be a row of the embedding.
fn slot(id: u64, n_vocab: usize, text: &str, named_in: &Path) -> Result<usize> {
    if id < n_vocab as u64 {
        Ok(id as usize)
    } else {
        Err(Error::Format(format!(
            "token {text:?} has id {id}, beyond the embedding's {n_vocab} rows"
        ))
        .in_file(named_in, None))
    }
}
