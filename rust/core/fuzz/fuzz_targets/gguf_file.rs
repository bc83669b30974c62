//! Any bytes as a GGUF file: reading its header, opening it as a source and dequantizing it
//! into safetensors must give errors, never a panic, a crash, a hang or an allocation past the
//! fuzzer's limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ryzq_core_fuzz::{dequantize_into, fresh};

fuzz_target!(|data: &[u8]| {
    let parsed = ryzq_core::gguf::read::read_header(data);
    let path = fresh("in.gguf");
    std::fs::write(&path, data).expect("write to the scratch folder");
    let opened = ryzq_core::source::Source::open_file(&path);
    // The source reads the header the same way: both refuse, or both accept.
    assert!(parsed.is_ok() || opened.is_err());
    drop(opened);
    dequantize_into(&path, "out.safetensors", false, None);
});
