//! Any bytes as the `config.json` and `model.safetensors.index.json` of a model folder:
//! opening it, planning, quantizing it and dequantizing what that wrote must give errors,
//! never a panic, a crash, a hang, or a file written outside the scratch folder.
//!
//! The first byte says which files the folder has: bit 0 the index, bit 1 `model.safetensors`,
//! bit 2 the shards the index names (where they are plain names), bit 3 a pickled checkpoint,
//! bit 4 whether to dequantize the quantized copy. Then a 16-bit length, the config, and the
//! rest is the index.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ryzq_core::source::Source;
use ryzq_core_fuzz::{
    Input, Tensor, dequantize_into, digest, filler, fresh, plan_dequantize, quantize_into,
    safetensors_bytes,
};
use safetensors::Dtype;

/// Shards, and tensors per shard, the folder is made with at most.
const MAX_SHARDS: usize = 8;
const MAX_TENSORS: usize = 8;

/// A safetensors file of float32 `[8, 64]` tensors with these names.
fn shard(names: &[&str]) -> Vec<u8> {
    let tensors: Vec<Tensor> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Tensor {
            name: (*name).to_owned(),
            dtype: Dtype::F32,
            shape: vec![8, 64],
            data: filler(Dtype::F32, 8 * 64, 0.5 + i as f32, 0),
        })
        .collect();
    safetensors_bytes(&tensors, HashMap::new()).expect("plain tensors serialize")
}

/// The file names the index maps tensors to, with their tensors, where the index is a JSON
/// object with a `weight_map` and the name is one the harness may create in the folder.
fn shards_of(index: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(serde_json::Value::Object(index)) = serde_json::from_slice(index) else {
        return shards;
    };
    let Some(serde_json::Value::Object(map)) = index.get("weight_map") else {
        return shards;
    };
    for (tensor, file) in map {
        let Some(file) = file.as_str() else { continue };
        let plain = !file.is_empty()
            && file.len() < 100
            && file != "."
            && file != ".."
            && !file.contains(['/', '\\', ':', '\0'])
            && file != "config.json"
            && file != "model.safetensors.index.json";
        if plain && (shards.len() < MAX_SHARDS || shards.contains_key(file)) {
            let names = shards.entry(file.to_owned()).or_default();
            if names.len() < MAX_TENSORS {
                names.push(tensor.clone());
            }
        }
    }
    shards
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write to the scratch folder");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let config_len = usize::from(input.u16());
    let rest = input.rest();
    let (config, index) = rest.split_at(config_len.min(rest.len()));

    let dir = fresh("model");
    std::fs::create_dir(&dir).expect("a scratch folder");
    write(&dir, "config.json", config);
    if flags & 1 != 0 {
        write(&dir, "model.safetensors.index.json", index);
    }
    if flags & 2 != 0 {
        write(
            &dir,
            "model.safetensors",
            &shard(&["model.layers.0.mlp.up_proj.weight", "model.norm.weight"]),
        );
    }
    if flags & 4 != 0 {
        for (file, names) in shards_of(index) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            write(&dir, &file, &shard(&names));
        }
    }
    if flags & 8 != 0 {
        write(&dir, "pytorch_model.bin", b"not a pickle");
    }

    if let Ok(source) = Source::open_folder(&dir) {
        if let Some(folder) = source.folder() {
            let _ = folder.other_files(&[]);
        }
        plan_dequantize(&source);
    }
    if quantize_into(&dir, "out-folder", true, digest(data)) && flags & 16 != 0 {
        let out = dir.with_file_name("out-folder");
        dequantize_into(&out, "back-folder", true, None);
    }
    // Nothing is written beside the scratch folders.
    let stray: Vec<_> = std::fs::read_dir(dir.parent().expect("in the scratch folder"))
        .expect("the scratch folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["model", "out-folder", "back-folder"].contains(&n.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "files left in the scratch folder: {stray:?}"
    );
});
