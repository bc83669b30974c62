//! The values a report derives from its fields, at their edges: no error, nothing quantized,
//! an empty output, a scalar.

// The values compared are exact: infinities, and ratios of small integers.
#![allow(clippy::float_cmp)]

use ryzq_core::ErrorStats;
use ryzq_core::report::{FileReport, TensorReport};

fn stats(sse: f64, sum_sq: f64) -> ErrorStats {
    ErrorStats {
        numel: 4,
        sse,
        sum_sq,
        max_abs_error: 0.5,
        counts: [1, 2, 1],
    }
}

fn tensor(shape: &[usize], kept_because: Option<&str>, bytes: (u64, u64)) -> TensorReport {
    TensorReport {
        name: "model.layers.0.mlp.up_proj.weight".into(),
        dtype: "float32".into(),
        shape: shape.to_vec(),
        kept_because: kept_because.map(Into::into),
        carried_over: None,
        scale: None,
        stats: kept_because.is_none().then(|| stats(1.0, 10.0)),
        bytes_in: bytes.0,
        bytes_out: bytes.1,
        read_seconds: 0.25,
        quantize_seconds: 0.5,
        write_seconds: 1.0,
    }
}

fn file(tensors: Vec<TensorReport>, file_bytes_out: u64) -> FileReport {
    FileReport {
        src: "in.safetensors".into(),
        dst: "out.safetensors".into(),
        layout: "i2".into(),
        method: "absmean".into(),
        granularity: "tensor".into(),
        linear_class: "bitlinear".into(),
        tensors,
        file_bytes_in: 1000,
        file_bytes_out,
        seconds: 2.0,
        threads: 1,
        warnings: Vec::new(),
        skipped_files: Vec::new(),
    }
}

#[test]
fn snr_is_ten_log10_of_signal_over_error() {
    assert!((stats(1.0, 100.0).snr_db() - 20.0).abs() < 1e-12);
    assert_eq!(stats(0.0, 100.0).snr_db(), f64::INFINITY);
    assert_eq!(stats(0.0, 0.0).snr_db(), f64::INFINITY);
    assert_eq!(stats(1.0, 0.0).snr_db(), f64::NEG_INFINITY);
}

#[test]
fn a_scalar_holds_one_value() {
    assert_eq!(tensor(&[], None, (4, 4)).numel(), 1);
    assert_eq!(tensor(&[3, 0, 5], None, (0, 0)).numel(), 0);
    assert_eq!(tensor(&[8, 32], None, (1024, 64)).numel(), 256);
}

#[test]
fn ratios_of_a_file() {
    let report = file(
        vec![
            tensor(&[8, 32], None, (1024, 64)),
            tensor(&[8], Some("not a linear weight"), (32, 32)),
            tensor(&[8, 32], None, (1024, 192)),
        ],
        500,
    );
    assert_eq!(report.quantized().count(), 2);
    assert_eq!(report.parameters(), 520);
    assert_eq!(report.compression_ratio(), 2.0);
    assert_eq!(report.quantized_compression_ratio(), 8.0);
    assert_eq!(report.seconds_by_phase(), [0.75, 1.5, 3.0]);
}

#[test]
fn nothing_quantized_and_nothing_written_have_no_finite_ratio() {
    let report = file(vec![tensor(&[8], Some("not a linear weight"), (32, 32))], 0);
    assert!(report.quantized_compression_ratio().is_nan());
    assert_eq!(report.compression_ratio(), f64::INFINITY);
}
