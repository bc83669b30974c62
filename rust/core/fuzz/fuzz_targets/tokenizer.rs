//! Any bytes as the tokenizer files of a model folder: reading its vocabulary must give one
//! of exactly the embedding's rows, or an error; never a panic, a crash or a hang.
//!
//! The first byte says which files the folder has, in this order: bit 0 `tokenizer.model`,
//! bit 1 `tokenizer.json`, bit 2 `tokenizer_config.json`, bit 3 `added_tokens.json`, bit 4
//! `chat_template.jinja`, bit 5 a `config.json` of those bytes (else `{}`). Then a 16-bit
//! row count (the embedding has 1 + that modulo 4096 rows), and each file as a 16-bit length
//! and its bytes, the last file taking the rest.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ryzq_core::model::tokenizer::read_vocab;
use ryzq_core::source::folder::read_config;
use ryzq_core_fuzz::{Input, fresh};

const FILES: [&str; 6] = [
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "added_tokens.json",
    "chat_template.jinja",
    "config.json",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let n_vocab = 1 + usize::from(input.u16()) % 4096;
    let present: Vec<&str> = FILES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();

    let dir = fresh("tokenizer");
    std::fs::create_dir(&dir).expect("a scratch folder");
    std::fs::write(dir.join("config.json"), b"{}").expect("write to the scratch folder");
    for (i, name) in present.iter().enumerate() {
        let bytes = if i + 1 == present.len() {
            input.rest()
        } else {
            let len = usize::from(input.u16());
            input.take(len)
        };
        std::fs::write(dir.join(name), bytes).expect("write to the scratch folder");
    }

    let Ok(config) = read_config(&dir) else {
        return;
    };
    let Ok(vocab) = read_vocab(&dir, &config, n_vocab) else {
        return;
    };
    assert_eq!(vocab.tokens.len(), n_vocab);
    assert_eq!(vocab.token_types.len(), n_vocab);
    if let Some(scores) = &vocab.scores {
        assert_eq!(scores.len(), n_vocab);
    }
    let mut seen = HashSet::new();
    for token in &vocab.tokens {
        assert!(!token.is_empty(), "an empty token");
        assert!(seen.insert(token.as_str()), "{token:?} twice");
    }
    for (which, id) in &vocab.special_ids {
        assert!(
            (*id as usize) < n_vocab,
            "{which:?} id {id} beyond {n_vocab} rows"
        );
    }
    if vocab.model.gguf_name() == "gpt2" {
        assert!(!vocab.merges.is_empty(), "a gpt2 vocabulary without merges");
    }
});
