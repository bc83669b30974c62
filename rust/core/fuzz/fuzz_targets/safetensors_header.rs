//! Any bytes as a safetensors file: opening it, reading every tensor, parsing its ryzq
//! metadata, then dequantizing it (a file ryzq wrote) and quantizing it (its codes carried
//! over where it is packed) must give errors, never a panic, a crash or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ryzq_core::metadata::{self, RyzqMetadata};
use ryzq_core::source::{SafetensorsFile, Source};
use ryzq_core_fuzz::{dequantize_into, digest, fresh, plan_dequantize, quantize_into};

fuzz_target!(|data: &[u8]| {
    let path = fresh("in.safetensors");
    std::fs::write(&path, data).expect("write to the scratch folder");
    let Ok(file) = SafetensorsFile::open(&path) else {
        return;
    };
    for t in file.tensors() {
        let bytes = file.read(t).expect("a file nobody changes reads");
        assert_eq!(bytes.len(), t.range.len());
        assert_eq!(bytes, file.bytes(t));
        assert_eq!(t.numel() * t.dtype.bits() / 8, bytes.len());
        file.release(t);
    }
    let packed = match file.metadata().get(metadata::KEY) {
        Some(text) => {
            let _ = RyzqMetadata::from_json(text);
            true
        }
        None => false,
    };
    drop(file);
    if let Ok(source) = Source::open_file(&path) {
        plan_dequantize(&source);
    }
    if packed {
        dequantize_into(&path, "out.safetensors", false, None);
    }
    quantize_into(&path, "out.safetensors", false, digest(data));
});
