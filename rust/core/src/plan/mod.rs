//! Plans: what happens to every tensor of a source, decided before anything is written. Each
//! tensor is kept, quantized, its packed codes carried into another layout, divided (the bias
//! of an `AutoBitLinear` layer), dequantized, converted to another float type or dropped, with
//! the output tensors it gives, their types, shapes and sizes. [`Plan::quantize`] and
//! [`Plan::dequantize`] make them from the selection rule, the layout registry and what the
//! source says is packed ([`crate::source::packed`]); [`crate::convert`] carries them out.

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
use crate::model::gguf::HeadPermutation;
use crate::simd::SimdLevel;
use crate::sink::{OutputKind, OutputTensor};
use crate::source::folder::OtherFiles;
use crate::source::packed::{Descriptions, describe};
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
    /// The scale convention of a transformers packed source, where its `config.json` does not
    /// say it (or says it wrong).
    pub source_linear_class: Option<LinearClass>,
}

/// The name under which the scales of quantized tensor `name` are stored.
#[must_use]
pub fn scale_name(name: &str) -> String {
    name.strip_suffix(".weight").map_or_else(
        || format!("{name}_scale"),
        |base| format!("{base}.weight_scale"),
    )
}

/// Where the scales of a packed tensor of the source are.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleSource {
    /// In the tensor of this name, in any file of the source.
    Tensor(String),
    /// In the packed data: in its blocks, or after its codes.
    Blocks,
}

/// A packed tensor of the source, as its description says to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedSource {
    pub layout: Layout,
    pub granularity: Granularity,
    pub scales: ScaleSource,
    pub convention: ScaleConvention,
    /// The shape of the weight it holds.
    pub shape: Vec<usize>,
    /// The dtype of the weight it was packed from.
    pub dtype: FloatDType,
    /// The quantizer that chose its codes, as the description names it.
    pub method: String,
}

impl PackedSource {
    /// The packed tensor `t`, described by `q`: checked against its bytes before anything
    /// of the shape the description gives is laid out.
    pub fn of(t: &StoredTensor, q: &QuantizedTensor) -> Result<Self> {
        let dtype = FloatDType::parse(&q.dtype)?;
        let layout = Layout::parse(&q.layout)?;
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
        if t.shape != packed_shape {
            return Err(Error::Shape(format!(
                "stored with shape {:?}, but the {} layout packs the shape its description \
                 gives, {:?}, to {packed_shape:?}",
                t.shape,
                layout.name(),
                q.shape
            )));
        }
        let mut granularity = Granularity::parse(&q.granularity)?;
        let scales = if let Some(name) = &q.scale {
            ScaleSource::Tensor(name.clone())
        } else {
            // The packed data holds the scales: read with those, as readers do.
            granularity = layout.get().packed_granularity().ok_or_else(|| {
                Error::Format(format!(
                    "the {} layout keeps its scales apart, but no scale tensor is named",
                    layout.name()
                ))
            })?;
            ScaleSource::Blocks
        };
        crate::quantize::check_granularity(layout, granularity)?;
        granularity.groups(&q.shape)?;
        Ok(Self {
            layout,
            granularity,
            scales,
            convention: q.scale_convention,
            shape: q.shape.clone(),
            dtype,
            method: q.method.clone(),
        })
    }

    /// What it is, for a report: "bitnet codes, one scale per tensor".
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} codes, scale per {}",
            self.layout.name(),
            self.granularity.name()
        )
    }
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
        from: PackedSource,
        dtype: FloatDType,
    },
    /// Packed codes carried into `layout` as they are, their scales converted to its storage
    /// (where every group of `granularity` has one scale in the source).
    Transcode {
        from: PackedSource,
        layout: Layout,
        granularity: Granularity,
        scale: Option<ScaleStorage>,
    },
    /// Floats converted to `to`, each multiplied by `factor` when there is one (a divided
    /// bias restored).
    ConvertFloat {
        from: FloatDType,
        to: FloatDType,
        factor: Option<f32>,
    },
    /// Not written (the scales of a packed tensor, read with it).
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
    /// The reordering of its rows before the action: llama's q/k order for its GGUF graph
    /// (see [`crate::model::gguf::HeadPermutation`]), or back to Hugging Face's from a GGUF
    /// source.
    pub row_order: Option<HeadPermutation>,
}

/// One output file: the source file's tensors, in its order, and its header metadata.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// For a model folder, the shard's file name; `None` for a single file.
    pub shard: Option<String>,
    pub tensors: Vec<PlannedTensor>,
    /// Tensors the output needs that the source does not have, made from its configuration,
    /// written after the others.
    pub generated: Vec<GeneratedTensor>,
    pub metadata: HashMap<String, String>,
}

/// A tensor made for the output (llama3's `rope_freqs.weight`), and why.
#[derive(Debug, Clone)]
pub struct GeneratedTensor {
    pub output: OutputTensor,
    pub data: Vec<u8>,
    pub why: String,
}

impl OutputFile {
    /// Every output tensor of the file, in order.
    pub fn outputs(&self) -> impl Iterator<Item = &OutputTensor> {
        self.tensors
            .iter()
            .flat_map(|t| t.outputs.iter())
            .chain(self.generated.iter().map(|g| &g.output))
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

    /// Plans quantizing `source` as `request` asks, into an output of `kind` (see
    /// [`crate::sink::output_kind`]).
    pub fn for_output(
        source: &Source,
        kind: OutputKind,
        request: &QuantizeRequest,
    ) -> Result<Plan> {
        if kind == OutputKind::Gguf {
            Plan::gguf(source, request, &request.gguf)
        } else if request.gguf != gguf::GgufOptions::default() {
            Err(Error::InvalidArgument(
                "fallback, embeddings and tokenizer are options of GGUF outputs: give a \
                 destination ending in .gguf"
                    .into(),
            ))
        } else {
            Plan::quantize(source, request, kind == OutputKind::Folder)
        }
    }

    /// Plans quantizing `source` into safetensors as `request` asks: a model folder with
    /// `folder` (a folder source's, or the one a GGUF file holds), else a file.
    pub fn quantize(source: &Source, request: &QuantizeRequest, folder: bool) -> Result<Plan> {
        if request.layout == Layout::Bitnet && request.granularity != Granularity::Tensor {
            return Err(Error::InvalidArgument(
                "the bitnet layout stores one weight_scale per tensor: use granularity tensor, \
                 or layout i2 or t1 for per-row scales"
                    .into(),
            ));
        }
        crate::quantize::check_granularity(request.layout, request.granularity)?;
        refuse_lost_rope_scaling(source, folder)?;
        let packed = describe(source, request.source_linear_class)?;
        packed.check(source)?;
        let scale_names = packed.scale_names();
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
                let action = if scale_names.contains_key(t.name.as_str()) {
                    Action::Drop
                } else if let Some(q) = packed.packed(f, &t.name) {
                    packed_action(t, q, request).map_err(|e| in_file(e, t))?
                } else if let Some(divisor) = packed.divided_bias(&t.name) {
                    restored_bias(t, divisor, request).map_err(|e| in_file(e, t))?
                } else {
                    match bias_action(source, &packed, t, request).map_err(|e| in_file(e, t))? {
                        Some(bias) => bias,
                        None => quantize_action(t, request).map_err(|e| in_file(e, t))?,
                    }
                };
                let outputs = quantize_outputs(source, t, &action, request, &mut description)
                    .map_err(|e| in_file(e, t))?;
                check_row_order(t).map_err(|e| in_file(e, t))?;
                tensors.push(PlannedTensor {
                    source: TensorRef { file: f, index },
                    name: t.name.clone(),
                    action,
                    outputs,
                    row_order: t.row_order,
                });
            }
            let mut header = file.metadata().clone();
            header.entry("format".into()).or_insert_with(|| "pt".into());
            header.insert(metadata::KEY.into(), description.to_json());
            files.push(OutputFile {
                shard: folder.then(|| shard_name(source, file.path())),
                tensors,
                generated: Vec::new(),
                metadata: header,
            });
        }
        let mut plan = Plan {
            files,
            config: None,
            other_files: OtherFiles::default(),
            warnings: packed.warnings.clone(),
            gguf_kvs: Vec::new(),
        };
        if let (true, Some(config)) = (folder, source.config()) {
            if let Some(folder) = source.folder() {
                plan.other_files = folder.other_files(&request.copy_also)?;
            } else {
                plan.warnings.push(gguf_folder_note());
            }
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
                Action::Quantize { .. } | Action::Transcode { .. } => {
                    quantized.push(t.name.clone());
                }
                Action::Dequantize { .. } | Action::Copy(_) if out.shape.len() == 2 => {
                    kept.push(t.name.clone());
                }
                _ => {}
            }
        }
        (kept, quantized)
    }

    /// Plans dequantizing `source`, whatever holds packed tensors (ryzq's files, GGUF files,
    /// transformers' packed checkpoints, whose scale convention `source_linear_class` gives
    /// where `config.json` does not): each packed tensor to its original dtype, or every float
    /// tensor to `dtype` when given.
    pub fn dequantize(
        source: &Source,
        dtype: Option<FloatDType>,
        source_linear_class: Option<LinearClass>,
        kind: OutputKind,
    ) -> Result<Plan> {
        if kind == OutputKind::Gguf {
            return Err(Error::InvalidArgument(
                "dequantizing writes safetensors, not GGUF: give a destination that does not \
                 end in .gguf"
                    .into(),
            ));
        }
        let folder = kind == OutputKind::Folder;
        refuse_lost_rope_scaling(source, folder)?;
        let packed = describe(source, source_linear_class)?;
        let by_ryzq = source
            .files()
            .iter()
            .any(|f| f.metadata().contains_key(metadata::KEY));
        if !packed.any_packed() && !by_ryzq {
            return Err(Error::Format(
                "nothing packed to dequantize: no ryzq metadata (this was not written by \
                 ryzq) and no uint8 weights with a weight_scale (transformers' packed BitNet \
                 layout)"
                    .into(),
            )
            .in_file(source.path(), None));
        }
        packed.check(source)?;
        let scale_names = packed.scale_names();
        let mut files = Vec::with_capacity(source.files().len());
        for (f, file) in source.files().iter().enumerate() {
            let mut tensors = Vec::with_capacity(file.tensors().len());
            for (index, t) in file.tensors().iter().enumerate() {
                let planned = dequantize_tensor(t, dtype, &packed, f, &scale_names)
                    .and_then(|planned| check_row_order(t).map(|()| planned))
                    .map_err(|e| e.in_file(file.path(), Some(&t.name)))?;
                let (action, outputs) = planned;
                tensors.push(PlannedTensor {
                    source: TensorRef { file: f, index },
                    name: t.name.clone(),
                    action,
                    outputs,
                    row_order: t.row_order,
                });
            }
            let mut header = file.metadata().clone();
            header.remove(metadata::KEY);
            files.push(OutputFile {
                shard: folder.then(|| shard_name(source, file.path())),
                tensors,
                generated: Vec::new(),
                metadata: header,
            });
        }
        let config = source.config().filter(|_| folder).map(|config| {
            let mut config = config.clone();
            config.remove("quantization_config");
            config
        });
        let other_files = match source.folder() {
            Some(folder) => folder.other_files(&[])?,
            None => OtherFiles::default(),
        };
        let mut warnings = packed.warnings;
        if folder && source.folder().is_none() {
            warnings.push(gguf_folder_note());
        }
        Ok(Plan {
            files,
            config,
            other_files,
            warnings,
            gguf_kvs: Vec::new(),
        })
    }
}

/// The name of the output file made from `path` in a model folder: the shard's own, or
/// `model.safetensors` for a GGUF file.
fn shard_name(source: &Source, path: &std::path::Path) -> String {
    if source.folder().is_none() {
        return "model.safetensors".into();
    }
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Fails where a tensor's rows are to be reordered (llama's q/k from a GGUF file) but do not
/// split into its heads: found by the plan, so that a dry run says it too.
fn check_row_order(t: &StoredTensor) -> Result<()> {
    match (t.row_order, t.shape.first()) {
        (Some(order), Some(&rows)) => order.check(rows),
        (Some(_), None) => Err(Error::Shape("a 0-d tensor has no rows to reorder".into())),
        (None, _) => Ok(()),
    }
}

/// Refuses a model folder made from a GGUF file whose llama3 RoPE scaling (its
/// `rope_freqs.weight`) config.json would not keep: transformers would run it unscaled.
fn refuse_lost_rope_scaling(source: &Source, folder: bool) -> Result<()> {
    if folder && source.folder().is_none() && source.find("rope_freqs.weight").is_some() {
        return Err(Error::InvalidArgument(
            "this GGUF file scales its RoPE by rope_freqs.weight (llama3), which ryzq does not \
             write back into config.json's rope_scaling: a model folder from it would run with \
             unscaled RoPE; write a .safetensors file instead, or take config.json from the \
             original model"
                .into(),
        )
        .in_file(source.path(), Some("rope_freqs.weight")));
    }
    Ok(())
}

/// What a model folder made from a GGUF file lacks.
fn gguf_folder_note() -> String {
    "a model folder from a GGUF file: config.json from its keys and model.safetensors; its \
     tokenizer is not written back as tokenizer files (take them from the original model)"
        .into()
}

/// What becomes of a packed tensor of the source: its codes carried into the request's
/// layout, or dequantized to the dtype it was packed from where it is excluded or the layout
/// cannot take its shape (as a float weight is kept then).
fn packed_action(
    t: &StoredTensor,
    q: &QuantizedTensor,
    request: &QuantizeRequest,
) -> Result<Action> {
    let from = PackedSource::of(t, q)?;
    let dequantized = |from: PackedSource| Action::Dequantize {
        dtype: from.dtype,
        from,
    };
    if request.selection.excluded_by(&t.name).is_some() {
        return Ok(dequantized(from));
    }
    let layout = request.layout.get();
    match layout.packed_shape(&from.shape) {
        Ok(_) => {}
        Err(e) if layout.packed_granularity().is_some() => return Err(e),
        Err(_) => return Ok(dequantized(from)),
    }
    let granularity = carried_granularity(request.layout, request.granularity);
    granularity.groups(&from.shape)?;
    let scale = layout.packed_granularity().is_none().then(|| {
        let (dtype, convention) = scale_storage_of(request, from.dtype.into());
        ScaleStorage {
            name: scale_name(&t.name),
            dtype,
            convention,
        }
    });
    Ok(Action::Transcode {
        from,
        layout: request.layout,
        granularity,
        scale,
    })
}

/// The granularity of the scales codes carried into `layout` take: the one its packed data
/// stores (a scale per block, or the tensor's), else the one asked for.
pub(crate) fn carried_granularity(layout: Layout, asked: Granularity) -> Granularity {
    layout.get().packed_granularity().unwrap_or(asked)
}

/// The dtype and convention the request's layout stores a weight's scales in, for a weight
/// of `dtype`: transformers' layers keep them in the model's dtype, ryzq's other layouts in
/// float32.
fn scale_storage_of(request: &QuantizeRequest, dtype: StoredType) -> (StoredType, ScaleConvention) {
    match (request.layout, request.linear_class) {
        (Layout::Bitnet, LinearClass::BitLinear) => (dtype, ScaleConvention::Divide),
        (Layout::Bitnet, LinearClass::AutoBitLinear) => (dtype, ScaleConvention::Multiply),
        _ => (StoredType::F32, ScaleConvention::Multiply),
    }
}

/// A bias ryzq stored divided by its weight's scale (for `AutoBitLinear`), restored; into an
/// `AutoBitLinear` file again it would have to be divided by the new scale, which is not done.
fn restored_bias(t: &StoredTensor, divisor: f32, request: &QuantizeRequest) -> Result<Action> {
    if (request.layout, request.linear_class) == (Layout::Bitnet, LinearClass::AutoBitLinear) {
        return Err(Error::InvalidArgument(
            "a bias stored for autobitlinear, into layout bitnet for autobitlinear again: \
             ryzq does not carry such biases over; use linear_class bitlinear"
                .into(),
        ));
    }
    let from = t.dtype.float().ok_or_else(|| {
        Error::Format("it is described as a divided bias but is not a float tensor".into())
    })?;
    Ok(Action::ConvertFloat {
        from,
        to: from,
        factor: Some(divisor),
    })
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
    let (dtype, convention) = scale_storage_of(request, tensor.dtype);
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
    packed: &Descriptions,
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
    if packed.packed(place.file, &weight.name).is_some() {
        return Err(Error::InvalidArgument(format!(
            "the bias of {weight_name:?}, whose codes are carried into layout bitnet for \
             autobitlinear, would have to be divided by its scale, which ryzq does not do for \
             packed sources; use linear_class bitlinear"
        )));
    }
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
    let packed = |layout: Layout,
                  granularity: Granularity,
                  scale: &Option<ScaleStorage>,
                  weight: (&[usize], StoredType, &str),
                  replaces: Option<&str>,
                  description: &mut RyzqMetadata| {
        let (shape, dtype, method) = weight;
        if let Some(scale) = scale
            && source.find(&scale.name).is_some()
            && replaces != Some(scale.name.as_str())
        {
            return Err(Error::Format(format!(
                "its scales would be stored as {:?}, which the model already has",
                scale.name
            )));
        }
        let (groups, _) = granularity.groups(shape)?;
        let mut outputs = vec![OutputTensor {
            name: t.name.clone(),
            dtype: StoredType::U8,
            shape: layout.get().packed_shape(shape)?,
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
                layout: layout.name().into(),
                method: method.into(),
                granularity: granularity.name(),
                dtype: dtype.safetensors_name(),
                shape: shape.to_vec(),
                scale: scale.as_ref().map(|s| s.name.clone()),
                scale_convention: scale
                    .as_ref()
                    .map_or(ScaleConvention::Multiply, |s| s.convention),
            },
        );
        Ok(outputs)
    };
    match action {
        Action::Quantize {
            layout,
            granularity,
            scale,
        } => packed(
            *layout,
            *granularity,
            scale,
            (&t.shape, t.dtype, request.method.name()),
            None,
            description,
        ),
        Action::Transcode {
            from,
            layout,
            granularity,
            scale,
        } => {
            let replaces = match &from.scales {
                ScaleSource::Tensor(name) => Some(name.as_str()),
                ScaleSource::Blocks => None,
            };
            packed(
                *layout,
                *granularity,
                scale,
                (&from.shape, from.dtype.into(), &from.method),
                replaces,
                description,
            )
        }
        Action::Dequantize { from, dtype } => Ok(vec![OutputTensor {
            name: t.name.clone(),
            dtype: (*dtype).into(),
            shape: from.shape.clone(),
            gguf: None,
        }]),
        Action::Drop => Ok(Vec::new()),
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
    packed: &Descriptions,
    file: usize,
    scale_names: &BTreeMap<&str, &str>,
) -> Result<(Action, Vec<OutputTensor>)> {
    if scale_names.contains_key(t.name.as_str()) {
        return Ok((Action::Drop, Vec::new()));
    }
    if let Some(q) = packed.packed(file, &t.name) {
        let from = PackedSource::of(t, q)?;
        let out = dtype.unwrap_or(from.dtype);
        let output = OutputTensor {
            name: t.name.clone(),
            dtype: out.into(),
            shape: from.shape.clone(),
            gguf: None,
        };
        let action = Action::Dequantize { from, dtype: out };
        return Ok((action, vec![output]));
    }
    let bias = packed.divided_bias(&t.name);
    let action = match (t.dtype.float(), bias, dtype) {
        (Some(from), Some(divisor), to) => Action::ConvertFloat {
            from,
            to: to.unwrap_or(from),
            factor: Some(divisor),
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
