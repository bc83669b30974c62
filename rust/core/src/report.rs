//! What a conversion did, tensor by tensor.

use crate::stats::ErrorStats;

#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    /// safetensors dtype of the input tensor
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `None` if quantized, else why the tensor was kept as it is.
    pub kept_because: Option<String>,
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

#[derive(Debug, Clone)]
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
