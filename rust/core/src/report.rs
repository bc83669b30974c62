//! What a conversion did, tensor by tensor.

use serde::{Deserialize, Serialize};

use crate::stats::ErrorStats;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorReport {
    pub name: String,
    /// safetensors dtype of the input tensor
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `None` if quantized, else why the tensor was kept as it is.
    pub kept_because: Option<String>,
    /// For a tensor whose codes were already ternary (packed in the source, or exactly
    /// ternary floats): where they came from. Its error is then that of its scales against
    /// the source's own.
    pub carried_over: Option<String>,
    /// The dequantization scale (`w' = code * scale`) of a tensor quantized with one scale.
    pub scale: Option<f32>,
    pub stats: Option<ErrorStats>,
    pub bytes_in: u64,
    /// Bytes written for this tensor, its scale tensor included.
    pub bytes_out: u64,
    pub read_seconds: f64,
    pub quantize_seconds: f64,
    pub write_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    pub src: String,
    pub dst: String,
    pub layout: String,
    pub method: String,
    pub granularity: String,
    pub linear_class: String,
    pub tensors: Vec<TensorReport>,
    pub file_bytes_in: u64,
    pub file_bytes_out: u64,
    pub seconds: f64,
    pub threads: usize,
    /// What the conversion did that is likely not what the model needs.
    pub warnings: Vec<String>,
    /// Files of a model folder left out of the output, and why.
    pub skipped_files: Vec<(String, String)>,
}

impl TensorReport {
    #[must_use]
    pub fn quantized(&self) -> bool {
        self.kept_because.is_none()
    }

    /// How many values the input tensor holds (1 for a scalar).
    #[must_use]
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

impl FileReport {
    pub fn quantized(&self) -> impl Iterator<Item = &TensorReport> {
        self.tensors.iter().filter(|t| t.quantized())
    }

    /// Values of every tensor, kept ones included.
    #[must_use]
    pub fn parameters(&self) -> u64 {
        self.tensors.iter().map(TensorReport::numel).sum()
    }

    /// File bytes in / file bytes out; infinite for an empty output.
    #[must_use]
    pub fn compression_ratio(&self) -> f64 {
        if self.file_bytes_out == 0 {
            f64::INFINITY
        } else {
            self.file_bytes_in as f64 / self.file_bytes_out as f64
        }
    }

    /// Bytes of the quantized tensors in / their packed bytes and scales out; NaN when nothing
    /// was quantized.
    #[must_use]
    pub fn quantized_compression_ratio(&self) -> f64 {
        let (bytes_in, bytes_out) = self
            .quantized()
            .fold((0, 0), |(i, o), t| (i + t.bytes_in, o + t.bytes_out));
        if bytes_out == 0 {
            f64::NAN
        } else {
            bytes_in as f64 / bytes_out as f64
        }
    }

    /// Seconds spent reading, quantizing and writing, summed over the tensors.
    #[must_use]
    pub fn seconds_by_phase(&self) -> [f64; 3] {
        self.tensors.iter().fold([0.0; 3], |[r, q, w], t| {
            [
                r + t.read_seconds,
                q + t.quantize_seconds,
                w + t.write_seconds,
            ]
        })
    }
}
