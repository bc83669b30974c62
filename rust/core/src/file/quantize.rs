//! `quantize_file`: a safetensors checkpoint in, its packed ternary version out, one tensor at
//! a time, with a report of what happened to every tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::Dtype;

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::file::metadata::{self, DividedBias, QuantizedTensor, RyzqMetadata, ScaleConvention};
use crate::file::reader::{Checkpoint, StoredTensor};
use crate::file::report::{FileReport, TensorReport};
use crate::file::select::{Decision, Selection};
use crate::file::writer::{OutputTensor, SafetensorsWriter};
use crate::file::{dtype_name, float_dtype};
use crate::kernels::widen::widen;
use crate::layout::Layout;
use crate::method::{Granularity, Method, TernaryScale};
use crate::quantize::check_stored_scales;
use crate::simd::SimdLevel;
use crate::tensor::TensorView;
use crate::{group_scales, quantize_with_scales};

/// transformers' two BitNet layer classes, which store opposite scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearClass {
    /// `weight_scale = 1 / absmean`; the layer divides by it (the default in transformers).
    BitLinear,
    /// `weight_scale = absmean`; the layer multiplies by it (`quantization_mode: offline`).
    AutoBitLinear,
}

impl LinearClass {
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "bitlinear" => Ok(LinearClass::BitLinear),
            "autobitlinear" => Ok(LinearClass::AutoBitLinear),
            other => Err(Error::InvalidArgument(format!(
                "unknown linear_class {other:?}: expected bitlinear or autobitlinear"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            LinearClass::BitLinear => "bitlinear",
            LinearClass::AutoBitLinear => "autobitlinear",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileOptions {
    pub layout: Layout,
    pub method: Method,
    pub granularity: Granularity,
    pub linear_class: LinearClass,
    pub selection: Selection,
    pub level: SimdLevel,
    /// Threads for the kernels; `None`: `RYZQ_NUM_THREADS`, else every core.
    pub threads: Option<usize>,
    /// The other files of the same model (the shards of a folder), where the weight of a bias
    /// in this file may be.
    pub companions: Vec<PathBuf>,
}

/// The name under which the scales of quantized tensor `name` are stored.
#[must_use]
pub fn scale_name(name: &str) -> String {
    name.strip_suffix(".weight").map_or_else(
        || format!("{name}_scale"),
        |base| format!("{base}.weight_scale"),
    )
}

/// How the scales of one quantized tensor are stored.
struct ScaleStorage {
    name: String,
    dtype: Dtype,
    convention: ScaleConvention,
}

enum Plan {
    Quantize {
        packed_shape: Vec<usize>,
        /// `None` where the packed blocks hold the scales.
        scale: Option<ScaleStorage>,
    },
    Keep(String),
    /// The bias of a weight written for transformers' `AutoBitLinear`, which computes
    /// `linear(x, codes, bias) * weight_scale`: it is stored as `bias / weight_scale` (the
    /// `divisor`, the weight's scale as stored) so that the layer adds the original bias.
    DivideBias {
        weight: String,
        divisor: f32,
    },
}

/// The float type of a scale's or a bias's storage.
fn stored_type(dtype: Dtype) -> FloatDType {
    float_dtype(dtype).expect("scales and biases are stored as floats")
}

/// The values to store for `scales`, and the scales adjusted to what the stored values mean
/// once rounded to their dtype, so that the reported error is that of the file as written.
fn stored_scales(storage: &ScaleStorage, scales: &mut [TernaryScale]) -> Result<Vec<f32>> {
    let mut stored = Vec::with_capacity(scales.len());
    for s in scales.iter_mut() {
        let value = match storage.convention {
            ScaleConvention::Divide => {
                let inv = stored_type(storage.dtype).round(s.inv);
                check_stored_scales(&[s.inv], &[inv], "group", || {
                    format!(
                        "a {:?} weight_scale, which holds 1/absmean for linear_class bitlinear; \
                         linear_class autobitlinear stores absmean instead",
                        storage.dtype
                    )
                })?;
                s.scale = 1.0 / inv;
                inv
            }
            ScaleConvention::Multiply => {
                let scale = stored_type(storage.dtype).round(s.scale);
                check_stored_scales(&[s.scale], &[scale], "group", || {
                    format!(
                        "a {:?} weight_scale; layouts i2 and t1 store float32 scales",
                        storage.dtype
                    )
                })?;
                s.scale = scale;
                scale
            }
        };
        stored.push(value);
    }
    Ok(stored)
}

/// The scale stored for a weight with one scale per tensor, computed from the weight alone
/// (the bias of an `AutoBitLinear` layer is divided by it).
fn stored_weight_scale(
    checkpoint: &Checkpoint,
    t: &StoredTensor,
    storage: &ScaleStorage,
    opts: &FileOptions,
) -> Result<f32> {
    let dtype = float_dtype(t.dtype).expect("planned for float tensors");
    let view = TensorView::new(checkpoint.bytes(t), dtype, &t.shape)?;
    let mut scales = group_scales(
        &view,
        opts.layout,
        opts.method,
        opts.granularity,
        opts.level,
    )?;
    let stored = stored_scales(storage, &mut scales)?;
    checkpoint.release(t);
    Ok(stored[0])
}

/// The other files of the model, opened when first needed.
struct Companions<'a> {
    paths: &'a [PathBuf],
    opened: Vec<Option<Checkpoint>>,
}

impl<'a> Companions<'a> {
    fn new(paths: &'a [PathBuf]) -> Self {
        Self {
            paths,
            opened: paths.iter().map(|_| None).collect(),
        }
    }

    /// The first companion holding a tensor named `name`, and that tensor.
    fn find(&mut self, name: &str) -> Result<Option<(&Checkpoint, StoredTensor)>> {
        for (i, path) in self.paths.iter().enumerate() {
            if self.opened[i].is_none() {
                self.opened[i] = Some(Checkpoint::open(path)?);
            }
            let checkpoint = self.opened[i].as_ref().expect("opened above");
            if let Some(t) = checkpoint.tensor(name) {
                let t = t.clone();
                return Ok(Some((self.opened[i].as_ref().expect("opened above"), t)));
            }
        }
        Ok(None)
    }
}

/// The plan for a bias whose weight is quantized for `AutoBitLinear`, or `None` for any other
/// tensor. The weight is looked for in `checkpoint`, then in the other files of the model.
/// Such a bias is divided whatever `exclude` says (it is not quantized, and the layer needs
/// it divided); selecting it for quantization with `include` is an error.
fn bias_plan(
    checkpoint: &Checkpoint,
    companions: &mut Companions<'_>,
    t: &StoredTensor,
    opts: &FileOptions,
    threads: Option<usize>,
) -> Result<Option<Plan>> {
    let Some(base) = t.name.strip_suffix(".bias") else {
        return Ok(None);
    };
    if (opts.layout, opts.linear_class) != (Layout::Bitnet, LinearClass::AutoBitLinear) {
        return Ok(None);
    }
    let weight_name = format!("{base}.weight");
    let found = match checkpoint.tensor(&weight_name) {
        Some(w) => Some((checkpoint, w.clone())),
        None => companions.find(&weight_name)?,
    };
    let Some((source, weight)) = found else {
        return Ok(None);
    };
    let in_source = |e: Error| e.in_file(source.path(), Some(&weight.name));
    let Plan::Quantize {
        scale: Some(storage),
        ..
    } = plan(&weight, opts).map_err(in_source)?
    else {
        return Ok(None);
    };
    if opts.selection.decide(&t.name, t.dtype, &t.shape) == Decision::Quantize {
        return Err(Error::InvalidArgument(format!(
            "it is selected for quantization, but it is the bias of {weight_name:?}, which is \
             quantized for autobitlinear: that layer needs its bias in float, divided by the \
             weight's scale; exclude it, or use linear_class bitlinear"
        )));
    }
    if float_dtype(t.dtype).is_none() || t.shape != weight.shape[..1] {
        return Err(Error::Format(format!(
            "the bias of {weight_name:?} (shape {:?}) must be a float tensor of shape [{}] to \
             be stored for autobitlinear, which divides it by the weight's scale; it is {:?} \
             of shape {:?}",
            weight.shape, weight.shape[0], t.dtype, t.shape
        )));
    }
    let divisor = crate::threads::run(threads, || {
        stored_weight_scale(source, &weight, &storage, opts)
    })?
    .0
    .map_err(in_source)?;
    Ok(Some(Plan::DivideBias {
        weight: weight_name,
        divisor,
    }))
}

/// `bias / divisor`, rounded to the bias's own dtype.
fn divide_bias(level: SimdLevel, t: &StoredTensor, bytes: &[u8], divisor: f32) -> Result<Vec<u8>> {
    let dtype = float_dtype(t.dtype).expect("planned for float biases");
    let mut values = vec![0f32; t.numel()];
    widen(level, dtype, bytes, &mut values);
    for v in &mut values {
        *v /= divisor;
    }
    let stored: Vec<f32> = values.iter().map(|&v| dtype.round(v)).collect();
    if let Some(i) = stored.iter().position(|v| !v.is_finite()) {
        return Err(Error::ScaleRange(format!(
            "value {i} divided by its weight's scale {divisor} is {}, which {:?} cannot hold \
             (autobitlinear stores the bias divided by weight_scale); use linear_class \
             bitlinear, which stores the bias as it is",
            values[i], t.dtype
        )));
    }
    Ok(dtype.encode(&stored))
}

/// Refuses a file that is already packed: reading packed checkpoints is not supported yet,
/// and quantizing packed bytes as if they were weights would lose the model.
fn refuse_packed(checkpoint: &Checkpoint, companions: &mut Companions<'_>) -> Result<()> {
    if checkpoint.metadata().contains_key(metadata::KEY) {
        return Err(Error::Format(
            "this file was written by ryzq and is already packed; ryzq does not read packed \
             checkpoints yet: quantize the original weights, or dequantize this file first \
             (ryzq dequantize)"
                .into(),
        ));
    }
    let mut packed = None;
    for t in checkpoint.tensors() {
        if t.dtype != Dtype::U8 || !t.name.ends_with(".weight") {
            continue;
        }
        let scale = format!("{}_scale", t.name);
        if checkpoint.tensor(&scale).is_some() || companions.find(&scale)?.is_some() {
            packed = Some(t);
            break;
        }
    }
    if let Some(t) = packed {
        return Err(Error::Format(format!(
            "tensor {:?} is uint8 with a {:?} beside it: this checkpoint is already packed in \
             transformers' BitNet layout, which ryzq does not read yet; quantize the original \
             weights",
            t.name,
            format!("{}_scale", t.name)
        )));
    }
    Ok(())
}

fn plan(tensor: &StoredTensor, opts: &FileOptions) -> Result<Plan> {
    if let Decision::Keep(reason) = opts
        .selection
        .decide(&tensor.name, tensor.dtype, &tensor.shape)
    {
        return Ok(Plan::Keep(reason));
    }
    if tensor.numel() == 0 {
        return Err(Error::Shape(format!(
            "shape {:?} has no elements, so it has no scale to quantize with; exclude it",
            tensor.shape
        )));
    }
    let packed_shape = match opts.layout.get().packed_shape(&tensor.shape) {
        Ok(shape) => shape,
        // GGUF files need every linear weight in blocks, so a row that does not split into
        // them is an error; bitnet keeps the tensor, which transformers loads unconverted.
        Err(e) if opts.layout.get().block().is_some() => return Err(e),
        Err(e) => {
            return Ok(Plan::Keep(format!(
                "cannot use layout {}: {e}",
                opts.layout.name()
            )));
        }
    };
    let (dtype, convention) = match (opts.layout, opts.linear_class) {
        (Layout::Bitnet, LinearClass::BitLinear) => (tensor.dtype, ScaleConvention::Divide),
        (Layout::Bitnet, LinearClass::AutoBitLinear) => (tensor.dtype, ScaleConvention::Multiply),
        _ => (Dtype::F32, ScaleConvention::Multiply),
    };
    let scale = opts.layout.get().block().is_none().then(|| ScaleStorage {
        name: scale_name(&tensor.name),
        dtype,
        convention,
    });
    Ok(Plan::Quantize {
        packed_shape,
        scale,
    })
}

/// Refuses `dst` when it is `src` itself (or a link to it).
pub(crate) fn check_distinct(src: &Path, dst: &Path) -> Result<()> {
    let same = match (std::fs::metadata(src), std::fs::metadata(dst)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => std::fs::canonicalize(src).ok() == std::fs::canonicalize(dst).ok() && dst.exists(),
    };
    if same {
        return Err(Error::InvalidArgument(format!(
            "{}: the output would overwrite the input; choose another destination",
            dst.display()
        )));
    }
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: the output folder {} does not exist",
            dst.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Quantizes the checkpoint `src` into `dst`. `progress` is called after each tensor with its
/// report, the number of tensors done and their total; an error from it stops the work.
/// On any error nothing is left at `dst` (an existing file there is untouched).
pub fn quantize_file(
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    progress: &mut dyn FnMut(&TensorReport, usize, usize) -> Result<()>,
) -> Result<FileReport> {
    let start = Instant::now();
    if opts.layout == Layout::Bitnet && opts.granularity != Granularity::Tensor {
        return Err(Error::InvalidArgument(
            "the bitnet layout stores one weight_scale per tensor: use granularity tensor, or \
             layout i2 or t1 for per-row scales"
                .into(),
        ));
    }
    crate::quantize::check_granularity(opts.layout, opts.granularity)?;
    check_distinct(src, dst)?;
    let threads = crate::threads::resolve(opts.threads)?;
    let checkpoint = Checkpoint::open(src)?;
    let mut companions = Companions::new(&opts.companions);
    refuse_packed(&checkpoint, &mut companions).map_err(|e| e.in_file(src, None))?;
    let in_file = |e: Error, t: &StoredTensor| e.in_file(src, Some(&t.name));

    let mut plans = Vec::with_capacity(checkpoint.tensors().len());
    let mut outputs = Vec::new();
    let mut description = RyzqMetadata {
        version: metadata::VERSION,
        linear_class: (opts.layout == Layout::Bitnet).then(|| opts.linear_class.name().into()),
        ..RyzqMetadata::default()
    };
    for t in checkpoint.tensors() {
        let plan = match bias_plan(&checkpoint, &mut companions, t, opts, threads)
            .map_err(|e| in_file(e, t))?
        {
            Some(bias) => bias,
            None => plan(t, opts).map_err(|e| in_file(e, t))?,
        };
        match &plan {
            Plan::Quantize {
                packed_shape,
                scale,
            } => {
                if let Some(scale) = scale
                    && checkpoint.tensor(&scale.name).is_some()
                {
                    return Err(in_file(
                        Error::Format(format!(
                            "its scales would be stored as {:?}, which the file already has",
                            scale.name
                        )),
                        t,
                    ));
                }
                let (groups, _) = opts
                    .granularity
                    .groups(&t.shape)
                    .map_err(|e| in_file(e, t))?;
                outputs.push(OutputTensor {
                    name: t.name.clone(),
                    dtype: Dtype::U8,
                    shape: packed_shape.clone(),
                });
                if let Some(scale) = scale {
                    outputs.push(OutputTensor {
                        name: scale.name.clone(),
                        dtype: scale.dtype,
                        shape: vec![groups],
                    });
                }
                description.quantized.insert(
                    t.name.clone(),
                    QuantizedTensor {
                        layout: opts.layout.name().into(),
                        method: opts.method.name().into(),
                        granularity: opts.granularity.name(),
                        dtype: dtype_name(t.dtype),
                        shape: t.shape.clone(),
                        scale: scale.as_ref().map(|s| s.name.clone()),
                        scale_convention: scale
                            .as_ref()
                            .map_or(ScaleConvention::Multiply, |s| s.convention),
                    },
                );
            }
            Plan::Keep(_) | Plan::DivideBias { .. } => {
                if let Plan::DivideBias { weight, divisor } = &plan {
                    description.divided_biases.insert(
                        t.name.clone(),
                        DividedBias {
                            weight: weight.clone(),
                            divisor: *divisor,
                        },
                    );
                }
                outputs.push(OutputTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                });
            }
        }
        plans.push(plan);
    }

    let mut header_metadata: HashMap<String, String> = checkpoint.metadata().clone();
    header_metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    header_metadata.insert(metadata::KEY.into(), description.to_json());
    let mut writer = SafetensorsWriter::create(dst, &outputs, header_metadata)
        .map_err(|e| e.in_file(dst, None))?;

    let total = plans.len();
    let mut reports = Vec::with_capacity(total);
    for (t, plan) in checkpoint.tensors().iter().zip(&plans) {
        let report = convert_tensor(&checkpoint, t, plan, opts, threads, &mut writer)
            .map_err(|e| in_file(e, t))?;
        progress(&report, reports.len() + 1, total)?;
        reports.push(report);
    }
    let file_bytes_out = writer.size();
    writer.finish()?;
    Ok(FileReport {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        layout: opts.layout.name().into(),
        method: opts.method.name().into(),
        granularity: opts.granularity.name(),
        linear_class: opts.linear_class.name().into(),
        tensors: reports,
        file_bytes_in: checkpoint.size(),
        file_bytes_out,
        seconds: start.elapsed().as_secs_f64(),
        threads: threads.unwrap_or_else(rayon::current_num_threads),
    })
}

/// Reads, converts and writes one tensor as planned; returns its report.
fn convert_tensor(
    checkpoint: &Checkpoint,
    t: &StoredTensor,
    plan: &Plan,
    opts: &FileOptions,
    threads: Option<usize>,
    writer: &mut SafetensorsWriter,
) -> Result<TensorReport> {
    let t0 = Instant::now();
    if matches!(plan, Plan::Quantize { .. }) {
        checkpoint.prefault(t);
    }
    let t1 = Instant::now();
    let bytes = checkpoint.bytes(t);
    let mut report = TensorReport {
        name: t.name.clone(),
        dtype: dtype_name(t.dtype),
        shape: t.shape.clone(),
        kept_because: None,
        scale: None,
        stats: None,
        bytes_in: bytes.len() as u64,
        bytes_out: bytes.len() as u64,
        read_seconds: (t1 - t0).as_secs_f64(),
        quantize_seconds: 0.0,
        write_seconds: 0.0,
    };
    match plan {
        Plan::Keep(reason) => {
            report.kept_because = Some(reason.clone());
            writer.copy_from(
                &t.name,
                checkpoint.file(),
                t.range.start as u64,
                bytes.len(),
            )?;
            report.write_seconds = t1.elapsed().as_secs_f64();
        }
        Plan::DivideBias { divisor, .. } => {
            report.kept_because = Some(
                "a bias of an autobitlinear layer: stored divided by its weight's weight_scale, \
                 since the layer multiplies its sum, bias included, by that scale"
                    .into(),
            );
            let divided = divide_bias(opts.level, t, bytes, *divisor)?;
            let t2 = Instant::now();
            writer.write(&t.name, &divided)?;
            report.quantize_seconds = (t2 - t1).as_secs_f64();
            report.write_seconds = t2.elapsed().as_secs_f64();
        }
        Plan::Quantize { scale, .. } => {
            let dtype: FloatDType = float_dtype(t.dtype).expect("planned for float tensors");
            let view = TensorView::new(bytes, dtype, &t.shape)?;
            let work = || -> Result<_> {
                let mut scales = group_scales(
                    &view,
                    opts.layout,
                    opts.method,
                    opts.granularity,
                    opts.level,
                )?;
                let stored = match scale {
                    Some(scale) => stored_scales(scale, &mut scales)?,
                    None => Vec::new(),
                };
                let q = quantize_with_scales(
                    &view,
                    opts.layout,
                    opts.granularity,
                    opts.method.ties(),
                    &scales,
                    opts.level,
                )?;
                Ok((stored, q))
            };
            let (stored, q) = crate::threads::run(threads, work)?.0?;
            let t2 = Instant::now();
            writer.write(&t.name, &q.packed)?;
            let mut scale_bytes = Vec::new();
            if let Some(scale) = scale {
                scale_bytes = stored_type(scale.dtype).encode(&stored);
                writer.write(&scale.name, &scale_bytes)?;
            }
            report.quantize_seconds = (t2 - t1).as_secs_f64();
            report.write_seconds = t2.elapsed().as_secs_f64();
            report.bytes_out = (q.packed.len() + scale_bytes.len()) as u64;
            report.scale = (q.scales.len() == 1).then(|| q.scales[0]);
            report.stats = Some(q.stats);
        }
    }
    checkpoint.release(t);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::scale_name;

    #[test]
    fn scale_names() {
        assert_eq!(scale_name("a.q_proj.weight"), "a.q_proj.weight_scale");
        assert_eq!(scale_name("lm_head"), "lm_head_scale");
    }
}
