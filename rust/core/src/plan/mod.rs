//! Plans: what happens to every tensor of a source, decided before anything is written. Each
//! tensor is kept, quantized, divided (the bias of an `AutoBitLinear` layer), dequantized,
//! converted to another float type or dropped, with the output tensors it gives, their types,
//! shapes and sizes. [`Plan::quantize`] and [`Plan::dequantize`] make them from the selection
//! rule and the layout registry; [`crate::convert`] carries them out.

pub mod gguf;
pub mod scales;
pub mod select;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

pub use scales::ScaleStorage;
pub use select::{Decision, Selection};

use crate::dtype::{FloatDType, StoredType};
use crate::error::{Error, Result};
use crate::group_scales;
use crate::layout::Layout;
use crate::metadata::{self, DividedBias, QuantizedTensor, RyzqMetadata, ScaleConvention};
use crate::method::{Granularity, Method};
use crate::model;
use crate::simd::SimdLevel;
use crate::sink::OutputTensor;
use crate::source::folder::OtherFiles;
use crate::source::{Source, StoredTensor, TensorRef};
use crate::tensor::TensorView;

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

/// How to quantize a source.
#[derive(Debug, Clone)]
pub struct QuantizeRequest {
    pub layout: Layout,
    pub method: Method,
    pub granularity: Granularity,
    pub linear_class: LinearClass,
    pub selection: Selection,
    pub level: SimdLevel,
    /// Threads for the kernels; `None`: `RYZQ_NUM_THREADS`, else every core.
    pub threads: Option<usize>,
    /// Files of a model folder to copy although they look like other copies of the weights
    /// (glob patterns on their paths inside the folder).
    pub copy_also: Vec<glob::Pattern>,
    /// What a GGUF output holds besides the linear weights.
    pub gguf: gguf::GgufOptions,
}

/// The name under which the scales of quantized tensor `name` are stored.
#[must_use]
pub fn scale_name(name: &str) -> String {
    name.strip_suffix(".weight").map_or_else(
        || format!("{name}_scale"),
        |base| format!("{base}.weight_scale"),
    )
}

/// Where the scales of a tensor to dequantize are.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleSource {
    /// In the tensor of this name, in the same file.
    Tensor(String),
    /// In the packed data: in its blocks, or after its codes.
    Blocks,
}

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Copied byte for byte, and why.
    Copy(String),
    /// Quantized into `layout` (the request's, or a GGUF file's fallback for rows the
    /// request's cannot take) at `granularity`; its scales stored apart, or in its blocks.
    Quantize {
        layout: Layout,
        granularity: Granularity,
        scale: Option<ScaleStorage>,
    },
    /// The bias of a weight written for transformers' `AutoBitLinear`, which computes
    /// `linear(x, codes, bias) * weight_scale`: stored as `bias / weight_scale` (the `divisor`,
    /// the weight's scale as stored) so that the layer adds the original bias.
    DivideBias { weight: String, divisor: f32 },
    /// Packed codes back to floats of `dtype`.
    Dequantize {
        layout: Layout,
        granularity: Granularity,
        scales: ScaleSource,
        convention: ScaleConvention,
        dtype: FloatDType,
    },
    /// Floats converted to `to`, each multiplied by `factor` when there is one (a divided
    /// bias restored).
    ConvertFloat {
        from: FloatDType,
        to: FloatDType,
        factor: Option<f32>,
    },
    /// Not written (the scales of a dequantized tensor).
    Drop,
}

/// One tensor of the source and what becomes of it.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub source: TensorRef,
    pub name: String,
    pub action: Action,
    /// The output tensors it gives: none, itself, or itself and its scales.
    pub outputs: Vec<OutputTensor>,
    /// For llama's GGUF graph: the number of heads whose rows are reordered (see
    /// [`crate::model::gguf::permute_rows`]) before the action.
    pub permute_heads: Option<usize>,
}

/// One output file: the source file's tensors, in its order, and its header metadata.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// For a model folder, the shard's file name; `None` for a single file.
    pub shard: Option<String>,
    pub tensors: Vec<PlannedTensor>,
    pub metadata: HashMap<String, String>,
}

impl OutputFile {
    /// Every output tensor of the file, in order.
    pub fn outputs(&self) -> impl Iterator<Item = &OutputTensor> {
        self.tensors.iter().flat_map(|t| t.outputs.iter())
    }
}

/// What a conversion will do, before it does it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<OutputFile>,
    /// For a model folder: the `config.json` to write.
    pub config: Option<Map<String, Value>>,
    /// For a model folder: its other files, copied or left out.
    pub other_files: OtherFiles,
    /// What is likely not what the model needs.
    pub warnings: Vec<String>,
    /// For a GGUF file: its key-value pairs, in order.
    pub gguf_kvs: Vec<(String, crate::gguf::Value)>,
}

impl Plan {
    /// Every planned tensor, file by file.
    pub fn tensors(&self) -> impl Iterator<Item = &PlannedTensor> {
        self.files.iter().flat_map(|f| f.tensors.iter())
    }

    /// Bytes of tensor data the outputs will hold.
    #[must_use]
    pub fn bytes_out(&self) -> u64 {
        self.files
            .iter()
            .flat_map(OutputFile::outputs)
            .map(|o| o.nbytes() as u64)
            .sum()
    }

    /// Plans quantizing `source` as `request` asks, into a GGUF model file or else into
    /// safetensors (a file for a file, a folder for a folder).
    pub fn for_output(source: &Source, to_gguf: bool, request: &QuantizeRequest) -> Result<Plan> {
        if to_gguf {
            Plan::gguf(source, request, &request.gguf)
        } else if request.gguf != gguf::GgufOptions::default() {
            Err(Error::InvalidArgument(
                "fallback, embeddings and tokenizer are options of GGUF outputs: give a \
                 destination ending in .gguf"
                    .into(),
            ))
        } else {
            Plan::quantize(source, request)
        }
    }

    /// Plans quantizing `source` into safetensors as `request` asks.
    pub fn quantize(source: &Source, request: &QuantizeRequest) -> Result<Plan> {
        if request.layout == Layout::Bitnet && request.granularity != Granularity::Tensor {
            return Err(Error::InvalidArgument(
                "the bitnet layout stores one weight_scale per tensor: use granularity tensor, \
                 or layout i2 or t1 for per-row scales"
                    .into(),
            ));
        }
        crate::quantize::check_granularity(request.layout, request.granularity)?;
        refuse_packed(source)?;
        let mut files = Vec::with_capacity(source.files().len());
        for (f, file) in source.files().iter().enumerate() {
            let in_file = |e: Error, t: &StoredTensor| e.in_file(file.path(), Some(&t.name));
            let mut tensors = Vec::with_capacity(file.tensors().len());
            let mut description = RyzqMetadata {
                version: metadata::VERSION,
                linear_class: (request.layout == Layout::Bitnet)
                    .then(|| request.linear_class.name().into()),
                ..RyzqMetadata::default()
            };
            for (index, t) in file.tensors().iter().enumerate() {
                let action = match bias_action(source, t, request).map_err(|e| in_file(e, t))? {
                    Some(bias) => bias,
                    None => quantize_action(t, request).map_err(|e| in_file(e, t))?,
                };
                let outputs = quantize_outputs(source, t, &action, request, &mut description)
                    .map_err(|e| in_file(e, t))?;
                tensors.push(PlannedTensor {
                    source: TensorRef { file: f, index },
                    name: t.name.clone(),
                    action,
                    outputs,
                    permute_heads: None,
                });
            }
            let mut header = file.metadata().clone();
            header.entry("format".into()).or_insert_with(|| "pt".into());
            header.insert(metadata::KEY.into(), description.to_json());
            files.push(OutputFile {
                shard: source.folder().map(|_| shard_name(file.path())),
                tensors,
                metadata: header,
            });
        }
        let mut plan = Plan {
            files,
            config: None,
            other_files: OtherFiles::default(),
            warnings: Vec::new(),
            gguf_kvs: Vec::new(),
        };
        if let Some(folder) = source.folder() {
            plan.other_files = folder.other_files(&request.copy_also)?;
            let config = folder.config();
            if let Some(warning) =
                model::granularity_warning(config, request.method, request.granularity)
            {
                plan.warnings.push(warning);
            }
            let (kept, quantized) = plan.linear_weights();
            let mut config = config.clone();
            config.insert(
                "quantization_config".into(),
                model::quantization_config(&kept, &quantized, request),
            );
            plan.config = Some(config);
        }
        Ok(plan)
    }

    /// The names of the 2-D `*.weight` tensors kept as they are, and of those quantized.
    fn linear_weights(&self) -> (Vec<String>, Vec<String>) {
        let (mut kept, mut quantized) = (Vec::new(), Vec::new());
        for t in self.tensors() {
            let Some(out) = t.outputs.first() else {
                continue;
            };
            if !t.name.ends_with(".weight") {
                continue;
            }
            match &t.action {
                Action::Quantize { .. } => quantized.push(t.name.clone()),
                Action::Copy(_) if out.shape.len() == 2 => kept.push(t.name.clone()),
                _ => {}
            }
        }
        (kept, quantized)
    }

    /// Plans dequantizing `source`, a file or folder ryzq wrote: each quantized tensor to its
    /// original dtype, or every float tensor to `dtype` when given.
    pub fn dequantize(source: &Source, dtype: Option<FloatDType>) -> Result<Plan> {
        let mut files = Vec::with_capacity(source.files().len());
        for (f, file) in source.files().iter().enumerate() {
            let in_file = |e: Error| e.in_file(file.path(), None);
            let text = file.metadata().get(metadata::KEY).ok_or_else(|| {
                in_file(Error::Format(
                    "no ryzq metadata: this file was not written by ryzq's quantize_file".into(),
                ))
            })?;
            let description = RyzqMetadata::from_json(text).map_err(in_file)?;
            let scale_names: BTreeMap<&str, &str> = description
                .quantized
                .iter()
                .filter_map(|(name, q)| q.scale.as_deref().map(|s| (s, name.as_str())))
                .collect();
            let mut tensors = Vec::with_capacity(file.tensors().len());
            for (index, t) in file.tensors().iter().enumerate() {
                let planned = dequantize_tensor(t, dtype, &description, &scale_names)
                    .map_err(|e| e.in_file(file.path(), Some(&t.name)))?;
                let (action, outputs) = planned;
                tensors.push(PlannedTensor {
                    source: TensorRef { file: f, index },
                    name: t.name.clone(),
                    action,
                    outputs,
                    permute_heads: None,
                });
            }
            for name in scale_names.keys() {
                if file.tensor(name).is_none() {
                    let of = scale_names[name];
                    return Err(
                        Error::Format(format!("its scale tensor {name:?} is missing"))
                            .in_file(file.path(), Some(of)),
                    );
                }
            }
            let mut header = file.metadata().clone();
            header.remove(metadata::KEY);
            files.push(OutputFile {
                shard: source.folder().map(|_| shard_name(file.path())),
                tensors,
                metadata: header,
            });
        }
        let config = source.folder().map(|folder| {
            let mut config = folder.config().clone();
            config.remove("quantization_config");
            config
        });
        let other_files = match source.folder() {
            Some(folder) => folder.other_files(&[])?,
            None => OtherFiles::default(),
        };
        Ok(Plan {
            files,
            config,
            other_files,
            warnings: Vec::new(),
            gguf_kvs: Vec::new(),
        })
    }
}

fn shard_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Refuses a source that is already packed: reading packed checkpoints is not supported yet,
/// and quantizing packed bytes as if they were weights would lose the model.
fn refuse_packed(source: &Source) -> Result<()> {
    for file in source.files() {
        if file.metadata().contains_key(metadata::KEY) {
            return Err(Error::Format(
                "this file was written by ryzq and is already packed; ryzq does not read \
                 packed checkpoints yet: quantize the original weights, or dequantize this \
                 file first (ryzq dequantize)"
                    .into(),
            )
            .in_file(file.path(), None));
        }
        for t in file.tensors() {
            if t.dtype != StoredType::U8 || !t.name.ends_with(".weight") {
                continue;
            }
            let scale = format!("{}_scale", t.name);
            if source.find(&scale).is_some() {
                return Err(Error::Format(format!(
                    "tensor {:?} is uint8 with a {scale:?} beside it: this checkpoint is \
                     already packed in transformers' BitNet layout, which ryzq does not read \
                     yet; quantize the original weights",
                    t.name
                ))
                .in_file(file.path(), None));
            }
        }
    }
    Ok(())
}

/// Keep or quantize, by the selection rule and the layout's shape rule.
fn quantize_action(tensor: &StoredTensor, request: &QuantizeRequest) -> Result<Action> {
    if let Decision::Keep(reason) =
        request
            .selection
            .decide(&tensor.name, tensor.dtype, &tensor.shape)
    {
        return Ok(Action::Copy(reason));
    }
    if tensor.numel() == 0 {
        return Err(Error::Shape(format!(
            "shape {:?} has no elements, so it has no scale to quantize with; exclude it",
            tensor.shape
        )));
    }
    let layout = request.layout.get();
    match layout.packed_shape(&tensor.shape) {
        Ok(_) => {}
        // GGUF files need every linear weight in blocks, so a row that does not split into
        // them is an error (in the layouts that hold their scales, GGUF's); bitnet keeps the
        // tensor, which transformers loads unconverted.
        Err(e) if layout.packed_granularity().is_some() => return Err(e),
        Err(e) => {
            return Ok(Action::Copy(format!(
                "cannot use layout {}: {e}",
                request.layout.name()
            )));
        }
    }
    let (dtype, convention) = match (request.layout, request.linear_class) {
        (Layout::Bitnet, LinearClass::BitLinear) => (tensor.dtype, ScaleConvention::Divide),
        (Layout::Bitnet, LinearClass::AutoBitLinear) => (tensor.dtype, ScaleConvention::Multiply),
        _ => (StoredType::F32, ScaleConvention::Multiply),
    };
    let scale = layout.packed_granularity().is_none().then(|| ScaleStorage {
        name: scale_name(&tensor.name),
        dtype,
        convention,
    });
    Ok(Action::Quantize {
        layout: request.layout,
        granularity: request.granularity,
        scale,
    })
}

/// The plan for a bias whose weight is quantized for `AutoBitLinear`, or `None` for any other
/// tensor; the weight may be in any file of the source. Such a bias is divided whatever
/// `exclude` says (it is not quantized, and the layer needs it divided); selecting it for
/// quantization with `include` is an error.
fn bias_action(
    source: &Source,
    t: &StoredTensor,
    request: &QuantizeRequest,
) -> Result<Option<Action>> {
    let Some(base) = t.name.strip_suffix(".bias") else {
        return Ok(None);
    };
    if (request.layout, request.linear_class) != (Layout::Bitnet, LinearClass::AutoBitLinear) {
        return Ok(None);
    }
    let weight_name = format!("{base}.weight");
    let Some((place, weight)) = source.find(&weight_name) else {
        return Ok(None);
    };
    let holder = source.file(place);
    let in_holder = |e: Error| e.in_file(holder.path(), Some(&weight.name));
    let Action::Quantize {
        scale: Some(storage),
        ..
    } = quantize_action(weight, request).map_err(in_holder)?
    else {
        return Ok(None);
    };
    if request.selection.decide(&t.name, t.dtype, &t.shape) == Decision::Quantize {
        return Err(Error::InvalidArgument(format!(
            "it is selected for quantization, but it is the bias of {weight_name:?}, which is \
             quantized for autobitlinear: that layer needs its bias in float, divided by the \
             weight's scale; exclude it, or use linear_class bitlinear"
        )));
    }
    if t.dtype.float().is_none() || t.shape != weight.shape[..1] {
        return Err(Error::Format(format!(
            "the bias of {weight_name:?} (shape {:?}) must be a float tensor of shape [{}] to \
             be stored for autobitlinear, which divides it by the weight's scale; it is {} \
             of shape {:?}",
            weight.shape, weight.shape[0], t.dtype, t.shape
        )));
    }
    let stored_scale = || -> Result<f32> {
        let dtype = weight.dtype.float().expect("planned for float tensors");
        let view = TensorView::new(holder.read(weight)?, dtype, &weight.shape)?;
        let mut group = group_scales(
            &view,
            request.layout,
            request.method,
            request.granularity,
            request.level,
        )?;
        let stored = scales::stored_scales(&storage, &mut group)?;
        holder.release(weight);
        Ok(stored[0])
    };
    let divisor = crate::threads::run(request.threads, stored_scale)?
        .0
        .map_err(in_holder)?;
    Ok(Some(Action::DivideBias {
        weight: weight_name,
        divisor,
    }))
}

/// The output tensors of a tensor to quantize as `action` says, described in `description`.
fn quantize_outputs(
    source: &Source,
    t: &StoredTensor,
    action: &Action,
    request: &QuantizeRequest,
    description: &mut RyzqMetadata,
) -> Result<Vec<OutputTensor>> {
    let same = OutputTensor {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        gguf: None,
    };
    match action {
        Action::Quantize { scale, .. } => {
            if let Some(scale) = scale
                && source.find(&scale.name).is_some()
            {
                return Err(Error::Format(format!(
                    "its scales would be stored as {:?}, which the model already has",
                    scale.name
                )));
            }
            let (groups, _) = request.granularity.groups(&t.shape)?;
            let mut outputs = vec![OutputTensor {
                name: t.name.clone(),
                dtype: StoredType::U8,
                shape: request.layout.get().packed_shape(&t.shape)?,
                gguf: None,
            }];
            if let Some(scale) = scale {
                outputs.push(OutputTensor {
                    name: scale.name.clone(),
                    dtype: scale.dtype,
                    shape: vec![groups],
                    gguf: None,
                });
            }
            description.quantized.insert(
                t.name.clone(),
                QuantizedTensor {
                    layout: request.layout.name().into(),
                    method: request.method.name().into(),
                    granularity: request.granularity.name(),
                    dtype: t.dtype.safetensors_name(),
                    shape: t.shape.clone(),
                    scale: scale.as_ref().map(|s| s.name.clone()),
                    scale_convention: scale
                        .as_ref()
                        .map_or(ScaleConvention::Multiply, |s| s.convention),
                },
            );
            Ok(outputs)
        }
        Action::DivideBias { weight, divisor } => {
            description.divided_biases.insert(
                t.name.clone(),
                DividedBias {
                    weight: weight.clone(),
                    divisor: *divisor,
                },
            );
            Ok(vec![same])
        }
        _ => Ok(vec![same]),
    }
}

/// What dequantizing does to `t`, and its outputs.
fn dequantize_tensor(
    t: &StoredTensor,
    dtype: Option<FloatDType>,
    description: &RyzqMetadata,
    scale_names: &BTreeMap<&str, &str>,
) -> Result<(Action, Vec<OutputTensor>)> {
    if scale_names.contains_key(t.name.as_str()) {
        return Ok((Action::Drop, Vec::new()));
    }
    if let Some(q) = description.quantized.get(&t.name) {
        let original = FloatDType::parse(&q.dtype)?;
        let layout = Layout::parse(&q.layout)?;
        // The shape is the metadata's word, the packed bytes are real: they must agree before
        // an output of that shape is laid out.
        let packed_shape = layout.get().packed_shape(&q.shape)?;
        let packed_len: usize = packed_shape.iter().product();
        if t.range.len() != packed_len {
            return Err(Error::Size {
                what: format!(
                    "packed {} data for shape {:?} (packed shape {packed_shape:?})",
                    layout.name(),
                    q.shape
                ),
                actual: t.range.len(),
                expected: packed_len,
            });
        }
        let mut granularity = Granularity::parse(&q.granularity)?;
        let scales = if let Some(name) = &q.scale {
            ScaleSource::Tensor(name.clone())
        } else {
            // The packed data holds the scales: dequantize with those, as readers do.
            granularity = layout.get().packed_granularity().ok_or_else(|| {
                Error::Format(format!(
                    "the {} layout keeps its scales apart, but no scale tensor is named",
                    layout.name()
                ))
            })?;
            ScaleSource::Blocks
        };
        let out = dtype.unwrap_or(original);
        let action = Action::Dequantize {
            layout,
            granularity,
            scales,
            convention: q.scale_convention,
            dtype: out,
        };
        let output = OutputTensor {
            name: t.name.clone(),
            dtype: out.into(),
            shape: q.shape.clone(),
            gguf: None,
        };
        return Ok((action, vec![output]));
    }
    let bias = description.divided_biases.get(&t.name);
    let action = match (t.dtype.float(), bias, dtype) {
        (Some(from), Some(b), to) => Action::ConvertFloat {
            from,
            to: to.unwrap_or(from),
            factor: Some(b.divisor),
        },
        (Some(from), None, Some(to)) if to != from => Action::ConvertFloat {
            from,
            to,
            factor: None,
        },
        (None, Some(_), _) => {
            return Err(Error::Format(
                "it is described as a divided bias but is not a float tensor".into(),
            ));
        }
        _ => Action::Copy("not quantized".into()),
    };
    let out_dtype = match &action {
        Action::ConvertFloat { to, .. } => (*to).into(),
        _ => t.dtype,
    };
    Ok((
        action,
        vec![OutputTensor {
            name: t.name.clone(),
            dtype: out_dtype,
            shape: t.shape.clone(),
            gguf: None,
        }],
    ))
}
