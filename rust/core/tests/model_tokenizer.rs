//! `model::tokenizer`: SentencePiece models written here byte by byte in protobuf's wire format
//! (an encoder independent of the parser), and tokenizer.json files written as JSON, read into
//! the values of GGUF's tokenizer keys; and every malformed input refused with one bad_format
//! error naming its file.

use std::path::{Path, PathBuf};

use ryzq_core::Error;
use ryzq_core::model::tokenizer::TokenType::{Byte, Control, Normal, Unknown, Unused, UserDefined};
use ryzq_core::model::tokenizer::{
    KNOWN_PRE_TOKENIZERS, SpecialToken, TokenizerModel, Vocab, read_vocab,
};
use serde_json::{Map, Value, json};

// Protobuf wire format: a key is (field << 3 | wire type); 0 varint, 2 length-delimited, 5 fixed32.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(field: u64, value: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(value, out);
}

fn float_field(field: u64, value: f32, out: &mut Vec<u8>) {
    varint(field << 3 | 5, out);
    out.extend_from_slice(&value.to_le_bytes());
}

/// `ModelProto.SentencePiece`: piece = 1, score = 2, type = 3.
fn piece(text: &str, score: Option<f32>, kind: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(1, text.as_bytes(), &mut out);
    if let Some(score) = score {
        float_field(2, score, &mut out);
    }
    if let Some(kind) = kind {
        varint_field(3, kind, &mut out);
    }
    out
}

/// `ModelProto`: pieces = 1, trainer_spec = 2 (model_type = 3), normalizer_spec = 3
/// (add_dummy_prefix = 3).
fn model(pieces: &[Vec<u8>], model_type: Option<u64>, add_dummy_prefix: Option<bool>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        bytes_field(1, p, &mut out);
    }
    if let Some(model_type) = model_type {
        let mut trainer = Vec::new();
        varint_field(3, model_type, &mut trainer);
        varint_field(4, pieces.len() as u64, &mut trainer); // vocab_size, not read
        bytes_field(2, &trainer, &mut out);
    }
    let mut normalizer = Vec::new();
    bytes_field(1, b"nmt_nfkc", &mut normalizer); // name, not read
    if let Some(add) = add_dummy_prefix {
        varint_field(3, u64::from(add), &mut normalizer);
    }
    bytes_field(3, &normalizer, &mut out);
    out
}

const BPE: Option<u64> = Some(2);

/// `<unk>` `<s>` `</s>`, two bytes, three normal pieces, a user-defined and an unused one.
fn llama_pieces() -> Vec<Vec<u8>> {
    vec![
        piece("<unk>", Some(0.0), Some(2)),
        piece("<s>", Some(0.0), Some(3)),
        piece("</s>", Some(0.0), Some(3)),
        piece("<0x0A>", Some(0.0), Some(6)),
        piece("<0xFF>", Some(0.0), Some(6)),
        piece("▁t", Some(-1.0), None),
        piece("he", Some(-2.5), Some(1)),
        piece("▁the", None, Some(1)),
        piece("<tool>", Some(0.0), Some(4)),
        piece("<old>", Some(0.0), Some(5)),
    ]
}

fn folder(files: &[(&str, &[u8])], config: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn object(value: &Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn read(dir: &Path, config: &Value, n_vocab: usize) -> Result<Vocab, Error> {
    read_vocab(dir, &object(config), n_vocab)
}

/// The error's kind and file, and its message.
fn refused(result: Result<Vocab, Error>) -> (&'static str, Option<PathBuf>, String) {
    let err = result.expect_err("refused");
    (err.kind(), err.path().map(PathBuf::from), err.to_string())
}

#[test]
fn sentencepiece_pieces_scores_and_types() {
    let config = json!({"vocab_size": 13, "bos_token_id": 1, "eos_token_id": 2});
    let spm = model(&llama_pieces(), BPE, None);
    let dir = folder(&[("tokenizer.model", &spm)], &config);
    let vocab = read(dir.path(), &config, 13).unwrap();

    assert_eq!(vocab.model, TokenizerModel::Llama);
    assert_eq!(vocab.model.gguf_name(), "llama");
    assert_eq!(vocab.pre, "default");
    let expected: Vec<String> = [
        "<unk>", "<s>", "</s>", "<0x0A>", "<0xFF>", "▁t", "he", "▁the", "<tool>", "<old>",
        "[PAD10]", "[PAD11]", "[PAD12]",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(vocab.tokens, expected);
    let scores = vocab.scores.as_ref().unwrap();
    assert_eq!(
        scores,
        &[
            0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.5, 0.0, 0.0, 0.0, -10000.0, -10000.0, -10000.0
        ]
    );
    // User-defined pieces are NORMAL, as the converter writes them.
    assert_eq!(
        vocab.token_types,
        [
            Unknown, Control, Control, Byte, Byte, Normal, Normal, Normal, Normal, Unused, Unused,
            Unused, Unused
        ]
    );
    assert_eq!(
        vocab
            .token_types
            .iter()
            .map(|t| t.gguf_value())
            .collect::<Vec<_>>(),
        [2, 3, 3, 6, 6, 1, 1, 1, 1, 5, 5, 5, 5]
    );
    assert!(vocab.merges.is_empty());
    assert_eq!(
        vocab.special_ids,
        [(SpecialToken::Bos, 1), (SpecialToken::Eos, 2)]
    );
    assert_eq!(vocab.special_id(SpecialToken::Eos), Some(2));
    assert_eq!(vocab.special_id(SpecialToken::Padding), None);
    // No add_dummy_prefix in the normalizer: sentencepiece's default, true.
    assert_eq!(vocab.add_space_prefix, Some(true));
}

#[test]
fn sentencepiece_add_dummy_prefix_and_unknown_fields() {
    let config = json!({});
    let mut spm = model(&llama_pieces(), BPE, Some(false));
    // A self_test_data message (field 4) and an extension field: skipped.
    bytes_field(4, &piece("x", None, None), &mut spm);
    varint_field(200, 7, &mut spm);
    let dir = folder(&[("tokenizer.model", &spm)], &config);
    let vocab = read(dir.path(), &config, 10).unwrap();
    assert_eq!(vocab.add_space_prefix, Some(false));
    assert_eq!(vocab.tokens.len(), 10);
}

#[test]
fn sentencepiece_added_tokens_over_the_pieces() {
    let config = json!({"vocab_size": 14});
    let spm = model(&llama_pieces(), BPE, None);
    let added = json!({"<extra>": 10}).to_string();
    let tc = json!({
        "add_prefix_space": true,
        "added_tokens_decoder": {
            "1": {"content": "<s>", "special": true},
            "11": {"content": "<|im_end|>", "special": false},
            "12": {"content": "▁x▁y", "special": false},
            "13": {"content": "<pad>", "special": false},
        },
    })
    .to_string();
    let dir = folder(
        &[
            ("tokenizer.model", &spm),
            ("added_tokens.json", added.as_bytes()),
            ("tokenizer_config.json", tc.as_bytes()),
        ],
        &config,
    );
    let vocab = read(dir.path(), &config, 14).unwrap();
    assert_eq!(
        &vocab.tokens[10..],
        ["<extra>", "<|im_end|>", " x y", "<pad>"]
    );
    assert_eq!(
        &vocab.token_types[10..],
        [UserDefined, Control, UserDefined, Control]
    );
    assert_eq!(&vocab.scores.as_ref().unwrap()[10..], [-1000.0; 4]);
    assert_eq!(&vocab.scores.as_ref().unwrap()[1..2], [-1000.0]);
    assert_eq!(vocab.add_space_prefix, Some(true));
}

#[test]
fn damaged_sentencepiece_models_are_refused() {
    let good = model(&llama_pieces(), BPE, None);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 20].to_vec(),
            "does not decode",
        ),
        ("empty", Vec::new(), "no pieces"),
        ("garbage", vec![0xff; 64], "does not decode"),
        (
            "no unknown piece",
            model(&[piece("a", None, None), piece("b", None, None)], BPE, None),
            "0 unknown pieces",
        ),
        (
            "two unknown pieces",
            model(
                &[piece("a", None, Some(2)), piece("b", None, Some(2))],
                BPE,
                None,
            ),
            "2 unknown pieces",
        ),
        (
            "a piece twice",
            model(
                &[
                    piece("<unk>", None, Some(2)),
                    piece("a", None, None),
                    piece("a", None, None),
                ],
                BPE,
                None,
            ),
            "piece 2 \"a\" is there twice",
        ),
        (
            "an empty piece",
            model(
                &[piece("<unk>", None, Some(2)), piece("", None, None)],
                BPE,
                None,
            ),
            "piece 1 is empty",
        ),
        (
            "an undefined type",
            model(
                &[piece("<unk>", None, Some(2)), piece("a", None, Some(7))],
                BPE,
                None,
            ),
            "type 7",
        ),
        (
            "a Unigram model",
            model(&llama_pieces(), Some(1), None),
            "SentencePiece Unigram model",
        ),
        (
            "no trainer spec (Unigram)",
            model(&llama_pieces(), None, None),
            "Unigram",
        ),
        (
            "a word model",
            model(&llama_pieces(), Some(3), None),
            "SentencePiece word model",
        ),
    ];
    let config = json!({});
    for (what, bytes, message) in cases {
        let dir = folder(&[("tokenizer.model", &bytes)], &config);
        let (kind, path, text) = refused(read(dir.path(), &config, 16));
        assert_eq!(kind, "bad_format", "{what}");
        assert_eq!(path.unwrap(), dir.path().join("tokenizer.model"), "{what}");
        assert!(text.contains(message), "{what}: {text}");
    }

    // More pieces than rows.
    let dir = folder(&[("tokenizer.model", &good)], &config);
    let (_, _, text) = refused(read(dir.path(), &config, 9));
    assert!(
        text.contains("10 pieces, more than the embedding's 9 rows"),
        "{text}"
    );
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn llama3_pre_tokenizer() -> Value {
    json!({
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ],
    })
}

/// A byte-level BPE of 8 tokens: two merges in each encoding, two special tokens and an added
/// one.
fn bpe_tokenizer() -> Value {
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 6, "content": "<|bos|>", "special": true, "normalized": false},
            {"id": 7, "content": "Ċ", "special": false, "normalized": false},
            {"id": 9, "content": "<|eot|>", "special": true, "normalized": false},
        ],
        "normalizer": null,
        "pre_tokenizer": llama3_pre_tokenizer(),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [],
            "special_tokens": {},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "byte_fallback": false,
            "ignore_merges": true,
            "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "": 5, "Ċ": 7},
            "merges": [["a", "b"], "Ġ ab"],
        },
    })
}

fn bpe_folder(
    tokenizer: &Value,
    tokenizer_config: Option<&Value>,
    config: &Value,
) -> tempfile::TempDir {
    let json = tokenizer.to_string();
    let tc = tokenizer_config.map(Value::to_string);
    let mut files: Vec<(&str, &[u8])> = vec![("tokenizer.json", json.as_bytes())];
    if let Some(tc) = &tc {
        files.push(("tokenizer_config.json", tc.as_bytes()));
    }
    folder(&files, config)
}

#[test]
fn byte_level_bpe_tokens_types_and_merges() {
    let config = json!({"vocab_size": 11});
    let tc = json!({"bos_token": "<|bos|>", "eos_token": "<|eot|>", "chat_template": "{{ m }}"});
    let dir = bpe_folder(&bpe_tokenizer(), Some(&tc), &config);
    let vocab = read(dir.path(), &config, 11).unwrap();
    assert_eq!(vocab.model.gguf_name(), "gpt2");
    assert_eq!(vocab.pre, "llama-bpe");
    assert_eq!(
        vocab.tokens,
        [
            "a",
            "b",
            "Ġ",
            "ab",
            "Ġab",
            "[EMPTY_5]",
            "<|bos|>",
            "\n",
            "[PAD8]",
            "<|eot|>",
            "[PAD10]"
        ]
    );
    assert_eq!(
        vocab.token_types,
        [
            Normal,
            Normal,
            Normal,
            Normal,
            Normal,
            Normal,
            Control,
            UserDefined,
            Unused,
            Control,
            Unused
        ]
    );
    assert_eq!(vocab.scores, None);
    assert_eq!(vocab.merges, ["a b", "Ġ ab"]);
    assert_eq!(
        vocab.special_ids,
        [(SpecialToken::Bos, 6), (SpecialToken::Eos, 9)]
    );
    assert_eq!(
        (vocab.add_bos, vocab.add_eos, vocab.add_sep),
        (Some(true), None, None)
    );
    assert_eq!(vocab.chat_template.as_deref(), Some("{{ m }}"));
    assert_eq!(vocab.add_space_prefix, None);
}

#[test]
fn template_ending_with_another_token_than_eos_makes_it_eos_and_eos_eot() {
    let mut tokenizer = bpe_tokenizer();
    tokenizer["post_processor"]["single"]
        .as_array_mut()
        .unwrap()
        .push(json!({"SpecialToken": {"id": "<|eot|>", "type_id": 0}}));
    let tc = json!({"bos_token": "<|bos|>", "eos_token": "<|bos|>"});
    let config = json!({});
    let dir = bpe_folder(&tokenizer, Some(&tc), &config);
    let vocab = read(dir.path(), &config, 10).unwrap();
    assert_eq!(
        vocab.special_ids,
        [
            (SpecialToken::Bos, 6),
            (SpecialToken::Eos, 9),
            (SpecialToken::Eot, 6)
        ]
    );
    assert_eq!((vocab.add_bos, vocab.add_eos), (Some(true), Some(true)));
    assert_eq!(SpecialToken::Eot.gguf_key(), "tokenizer.ggml.eot_token_id");
    assert_eq!(
        SpecialToken::Separator.gguf_key(),
        "tokenizer.ggml.seperator_token_id"
    );
}

#[test]
fn pre_tokenizers_by_structure() {
    let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let nested = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Sequence", "pretokenizers": [llama3_pre_tokenizer()["pretokenizers"][0].clone()]},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
    ]});
    let config = json!({});
    for (pre, name) in [
        (gpt2, "gpt-2"),
        (nested, "llama-bpe"),
        (llama3_pre_tokenizer(), "llama-bpe"),
    ] {
        let mut tokenizer = bpe_tokenizer();
        tokenizer["pre_tokenizer"] = pre;
        let dir = bpe_folder(&tokenizer, None, &config);
        assert_eq!(read(dir.path(), &config, 10).unwrap().pre, name);
    }
    assert!(KNOWN_PRE_TOKENIZERS.iter().any(|(n, _)| *n == "qwen2"));

    // ByteLevel adds a prefix space and uses its regex unless the file says otherwise.
    let unknown = [
        json!({"type": "ByteLevel"}),
        json!(null),
        json!({"type": "Whitespace"}),
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
        ]}),
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
        ]}),
        json!({"type": "Sequence", "pretokenizers": [
            llama3_pre_tokenizer()["pretokenizers"][0].clone(),
            {"type": "ByteLevel", "add_prefix_space": false},
        ]}),
    ];
    for pre in unknown {
        let mut tokenizer = bpe_tokenizer();
        tokenizer["pre_tokenizer"] = pre.clone();
        let dir = bpe_folder(&tokenizer, None, &config);
        let (kind, path, text) = refused(read(dir.path(), &config, 10));
        assert_eq!(kind, "bad_format", "{pre}");
        assert_eq!(path.unwrap(), dir.path().join("tokenizer.json"));
        assert!(
            text.contains("none ryzq knows") && text.contains("llama-bpe"),
            "{text}"
        );
    }
}

#[test]
fn malformed_tokenizer_json_is_refused() {
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 11] = [
        (
            "WordPiece",
            |t| t["model"]["type"] = json!("WordPiece"),
            "a WordPiece tokenizer",
        ),
        (
            "untyped",
            |t| t["model"] = json!({"vocab": {}}),
            "a model without a type",
        ),
        ("no model", |t| t["model"] = json!(3), "no model object"),
        (
            "byte fallback",
            |t| t["model"]["byte_fallback"] = json!(true),
            "byte fallback",
        ),
        (
            "decoder",
            |t| t["decoder"] = json!({"type": "Metaspace"}),
            "decoder is Metaspace",
        ),
        (
            "no merges",
            |t| t["model"]["merges"] = json!([]),
            "without merges",
        ),
        (
            "bad merge",
            |t| t["model"]["merges"] = json!(["ab"]),
            "merge 0 (\"ab\")",
        ),
        (
            "pair of three",
            |t| t["model"]["merges"] = json!([["a", "b", "c"]]),
            "merge 0",
        ),
        (
            "id twice",
            |t| t["model"]["vocab"]["c"] = json!(1),
            "both have id 1",
        ),
        (
            "id beyond",
            |t| t["model"]["vocab"]["c"] = json!(10),
            "beyond the embedding's 10 rows",
        ),
        (
            "added id",
            |t| t["added_tokens"][0]["id"] = json!(-1),
            "not a token id",
        ),
    ];
    let config = json!({});
    for (what, edit, message) in cases {
        let mut tokenizer = bpe_tokenizer();
        edit(&mut tokenizer);
        let dir = bpe_folder(&tokenizer, None, &config);
        let (kind, path, text) = refused(read(dir.path(), &config, 10));
        assert_eq!(kind, "bad_format", "{what}");
        assert_eq!(path.unwrap(), dir.path().join("tokenizer.json"), "{what}");
        assert!(text.contains(message), "{what}: {text}");
    }
}

#[test]
fn folder_level_errors() {
    let config = json!({"vocab_size": 12});
    let dir = bpe_folder(&bpe_tokenizer(), None, &config);
    let (kind, path, text) = refused(read(dir.path(), &config, 10));
    assert_eq!(
        (kind, path.unwrap()),
        ("bad_format", dir.path().join("config.json"))
    );
    assert!(
        text.contains("vocab_size is 12 but the embedding has 10 rows"),
        "{text}"
    );

    let (kind, _, _) = refused(read(dir.path(), &json!({}), 0));
    assert_eq!(kind, "invalid_argument");

    let empty = folder(&[], &json!({}));
    let (kind, path, _) = refused(read(empty.path(), &json!({}), 10));
    assert_eq!(
        (kind, path.unwrap()),
        ("bad_format", empty.path().to_path_buf())
    );

    // Two slots spelled the same: llama.cpp asserts on such a vocabulary.
    let mut tokenizer = bpe_tokenizer();
    tokenizer["added_tokens"][1]["content"] = json!("Ġab");
    tokenizer["added_tokens"][1]["normalized"] = json!(true);
    let dir = bpe_folder(&tokenizer, None, &json!({}));
    let (kind, _, text) = refused(read(dir.path(), &json!({}), 10));
    assert_eq!(kind, "bad_format");
    assert!(text.contains("tokens 4 and 7 are both \"Ġab\""), "{text}");

    let config = json!({"eos_token_id": -2});
    let dir = bpe_folder(&bpe_tokenizer(), None, &config);
    let (kind, path, _) = refused(read(dir.path(), &config, 10));
    assert_eq!(
        (kind, path.unwrap()),
        ("bad_format", dir.path().join("config.json"))
    );
}
