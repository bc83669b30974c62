//! The native module `ryzq._ryzq`: converts arguments, calls `ryzq-core` with the interpreter
//! detached, and maps every core error to `ryzq.RyzqError`. Arrays cross as flat, C-contiguous
//! numpy arrays of raw bytes; `python/ryzq` gives them their shapes and dtypes.

// PyO3 extracts arguments by value, and `map_err` hands errors over by value.
#![allow(clippy::needless_pass_by_value)]

mod args;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use ryzq_core::gguf::Value as GgufValue;
use ryzq_core::model::tokenizer;
use ryzq_core::plan::gguf::{Fallback, GgufOptions};
use ryzq_core::plan::{Action, LinearClass, Plan, QuantizeRequest, Selection};
use ryzq_core::report::TensorReport;
use ryzq_core::sink::{OutputKind, OutputTensor, SafetensorsWriter, TensorFile};
use ryzq_core::source::folder::INDEX;
use ryzq_core::source::{ModelFolder, SafetensorsFile};
use ryzq_core::{
    FloatDType, Granularity, Layout, Method, QuantizeOptions, SimdLevel, StoredType, TensorView,
    threads,
};

use crate::args::{Name, Patterns, Threads};
use crate::report::{PyErrorStats, PyFileReport, PyTensorReport};

create_exception!(
    ryzq,
    RyzqError,
    PyValueError,
    "Bad input to ryzq: an unsupported dtype or shape, non-finite weights, corrupt packed data. \
     `kind` is a short stable word for what went wrong (`truncated`, `bad_shape`, `non_finite`, \
     `unsafe_path`, ...); `path` and `tensor` say where, when there is a file and a tensor."
);

/// The core's error as a `RyzqError` whose `kind`, `path` and `tensor` say what and where.
fn to_py(err: ryzq_core::Error) -> PyErr {
    let py_err = RyzqError::new_err(err.to_string());
    Python::attach(|py| {
        let value = py_err.value(py);
        // Setting plain attributes on a fresh exception cannot fail but for memory.
        let _ = value.setattr("kind", err.kind());
        let _ = value.setattr("path", err.path());
        let _ = value.setattr("tensor", err.tensor());
    });
    py_err
}

fn contiguous<'a, T: numpy::Element>(
    array: &'a PyReadonlyArray1<'_, T>,
    what: &str,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| RyzqError::new_err(format!("{what} must be a C-contiguous array")))
}

type QuantizeResult<'py> = (
    Bound<'py, PyArray1<u8>>,
    Vec<usize>,
    Bound<'py, PyArray1<f32>>,
    PyErrorStats,
    String,
);

/// Quantizes raw weights; returns (packed bytes, packed shape, scales, stats, granularity).
/// `granularity=None` is the method's default in the layout.
#[pyfunction]
#[pyo3(signature = (data, dtype, shape, *, layout, method, granularity=None, simd=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn quantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    dtype: Name<FloatDType>,
    shape: Vec<usize>,
    layout: Name<Layout>,
    method: Name<Method>,
    granularity: Option<Name<Granularity>>,
    simd: Option<Name<SimdLevel>>,
    threads: Option<Threads>,
) -> PyResult<QuantizeResult<'py>> {
    let bytes = contiguous(&data, "the weights")?;
    let (layout, method) = (layout.0, method.0);
    let granularity = granularity.map_or_else(|| layout.default_granularity(method), |g| g.0);
    let opts = QuantizeOptions {
        layout,
        method,
        granularity,
        level: args::level(simd)?,
    };
    let view = TensorView::new(bytes, dtype.0, &shape).map_err(to_py)?;
    let q = py
        .detach(|| {
            threads::run(threads.and_then(|t| t.0), || {
                ryzq_core::quantize(&view, &opts)
            })
        })
        .and_then(|(q, _)| q)
        .map_err(to_py)?;
    Ok((
        PyArray1::from_vec(py, q.packed),
        q.packed_shape,
        PyArray1::from_vec(py, q.scales),
        PyErrorStats(q.stats),
        granularity.name(),
    ))
}

/// Dequantizes packed codes into `out`, the raw little-endian bytes of a `dtype` array.
#[pyfunction]
#[pyo3(signature = (packed, scales, shape, *, layout, granularity, dtype, out, simd=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn dequantize<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    scales: PyReadonlyArray1<'py, f32>,
    shape: Vec<usize>,
    layout: Name<Layout>,
    granularity: Name<Granularity>,
    dtype: Name<FloatDType>,
    mut out: PyReadwriteArray1<'py, u8>,
    simd: Option<Name<SimdLevel>>,
    threads: Option<Threads>,
) -> PyResult<()> {
    let packed = contiguous(&packed, "the packed data")?;
    let scales = contiguous(&scales, "the scales")?;
    let level = args::level(simd)?;
    let out = out
        .as_slice_mut()
        .map_err(|_| RyzqError::new_err("out must be a C-contiguous array"))?;
    py.detach(|| {
        threads::run(threads.and_then(|t| t.0), || {
            ryzq_core::dequantize_into(
                packed,
                scales,
                &shape,
                layout.0,
                granularity.0,
                dtype.0,
                level,
                out,
            )
        })
    })
    .and_then(|(r, _)| r)
    .map_err(to_py)
}

/// Packs int8 codes; returns (packed bytes, packed shape).
#[pyfunction]
#[pyo3(signature = (codes, shape, *, layout, scales=None, simd=None, threads=None))]
fn pack<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i8>,
    shape: Vec<usize>,
    layout: Name<Layout>,
    scales: Option<PyReadonlyArray1<'py, f32>>,
    simd: Option<Name<SimdLevel>>,
    threads: Option<Threads>,
) -> PyResult<(Bound<'py, PyArray1<u8>>, Vec<usize>)> {
    let codes = contiguous(&codes, "the codes")?;
    let scales = scales
        .as_ref()
        .map(|s| contiguous(s, "the scales"))
        .transpose()?;
    let layout = layout.0;
    let level = args::level(simd)?;
    let packed_shape = layout.get().packed_shape(&shape).map_err(to_py)?;
    let packed = py
        .detach(|| {
            threads::run(threads.and_then(|t| t.0), || {
                ryzq_core::pack(codes, &shape, layout, scales, level)
            })
        })
        .and_then(|(p, _)| p)
        .map_err(to_py)?;
    Ok((PyArray1::from_vec(py, packed), packed_shape))
}

/// Unpacks int8 codes (flat).
#[pyfunction]
#[pyo3(signature = (packed, shape, *, layout, simd=None, threads=None))]
fn unpack<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    shape: Vec<usize>,
    layout: Name<Layout>,
    simd: Option<Name<SimdLevel>>,
    threads: Option<Threads>,
) -> PyResult<Bound<'py, PyArray1<i8>>> {
    let packed = contiguous(&packed, "the packed data")?;
    let level = args::level(simd)?;
    let codes = py
        .detach(|| {
            threads::run(threads.and_then(|t| t.0), || {
                ryzq_core::unpack(packed, &shape, layout.0, level)
            })
        })
        .and_then(|(c, _)| c)
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, codes))
}

/// The packed shape of a tensor of `shape` in `layout`.
#[pyfunction]
fn packed_shape(shape: Vec<usize>, layout: Name<Layout>) -> PyResult<Vec<usize>> {
    layout.0.get().packed_shape(&shape).map_err(to_py)
}

/// The canonical name of each kind of option, from any spelling: `canonical("layout", "TQ2_0")`.
#[pyfunction]
fn canonical_name(what: &str, name: Bound<'_, PyAny>) -> PyResult<String> {
    Ok(match what {
        "layout" => name.extract::<Name<Layout>>()?.0.name().to_owned(),
        "method" => name.extract::<Name<Method>>()?.0.name().to_owned(),
        "granularity" => name.extract::<Name<Granularity>>()?.0.name(),
        "linear_class" => name.extract::<Name<LinearClass>>()?.0.name().to_owned(),
        "dtype" => name.extract::<Name<FloatDType>>()?.0.name().to_owned(),
        other => return Err(RyzqError::new_err(format!("no option named {other:?}"))),
    })
}

/// The layout registry: for each layout, in order, what ryzq knows of it.
#[pyfunction]
fn layouts(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    Layout::ALL
        .iter()
        .map(|&layout| {
            let l = layout.get();
            let d = PyDict::new(py);
            d.set_item("name", l.name())?;
            d.set_item("description", l.description())?;
            d.set_item("shape_rule", l.shape_rule())?;
            d.set_item("block", l.block())?;
            d.set_item(
                "scales",
                match l.packed_granularity() {
                    Some(Granularity::Tensor) => "float32 once, after the codes",
                    Some(_) => "float16 in every block",
                    None => "apart",
                },
            )?;
            d.set_item("bits_per_value", l.bits_per_value())?;
            d.set_item("gguf_type", l.gguf_type())?;
            let defaults = PyDict::new(py);
            for method in Method::ALL {
                defaults.set_item(method.name(), layout.default_granularity(*method).name())?;
            }
            d.set_item("default_granularity", defaults)?;
            Ok(d)
        })
        .collect()
}

/// The `ryzq` metadata of a file, checked by the one parser of it (the core's) and given back
/// as JSON text of its fields.
#[pyfunction]
fn parse_ryzq_metadata(text: &str) -> PyResult<String> {
    let meta = ryzq_core::metadata::RyzqMetadata::from_json(text).map_err(to_py)?;
    Ok(meta.to_json())
}

/// The granularity `method` uses in `layout` unless asked otherwise.
#[pyfunction]
fn default_granularity(layout: Name<Layout>, method: Name<Method>) -> String {
    layout.0.default_granularity(method.0).name()
}

/// The SIMD level in use (`RYZQ_SIMD` or the best the processor has).
#[pyfunction]
fn simd_level() -> PyResult<&'static str> {
    SimdLevel::current().map(SimdLevel::name).map_err(to_py)
}

/// Every SIMD level this processor runs, lowest first.
#[pyfunction]
fn simd_levels() -> Vec<&'static str> {
    SimdLevel::supported()
        .into_iter()
        .map(SimdLevel::name)
        .collect()
}

/// What to quantize and how: the keywords of `ryzq.quantize_file` and `ryzq.quantize_model`,
/// with their defaults, parsed and checked once, here, for `quantize_checkpoint` and
/// `plan_quantize`. `include`, `exclude` and `copy_also` take a glob pattern or several.
#[pyclass(frozen, module = "ryzq._ryzq", name = "QuantizeRequest")]
struct PyQuantizeRequest(QuantizeRequest);

#[pymethods]
impl PyQuantizeRequest {
    #[new]
    // Every default is None (the documented default in its place), so that the signature
    // Python sees is the one the stub states.
    #[pyo3(signature = (*, layout=None, method=None, granularity=None, linear_class=None, include=None, exclude=None, copy_also=None, threads=None, simd=None, fallback=None, embeddings=None, tokenizer=true, source_linear_class=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        layout: Option<Name<Layout>>,
        method: Option<Name<Method>>,
        granularity: Option<Name<Granularity>>,
        linear_class: Option<Name<LinearClass>>,
        include: Option<Patterns>,
        exclude: Option<Patterns>,
        copy_also: Option<Patterns>,
        threads: Option<Threads>,
        simd: Option<Name<SimdLevel>>,
        fallback: Option<Name<Fallback>>,
        embeddings: Option<Name<FloatDType>>,
        tokenizer: bool,
        source_linear_class: Option<Name<LinearClass>>,
    ) -> PyResult<Self> {
        let layout = layout.map_or(Layout::Bitnet, |l| l.0);
        let method = method.map_or(Method::AbsMean, |m| m.0);
        let (include, exclude) = (include.unwrap_or_default(), exclude.unwrap_or_default());
        let copy_also = copy_also
            .unwrap_or_default()
            .0
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| RyzqError::new_err(format!("bad glob pattern {p:?}: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self(QuantizeRequest {
            layout,
            method,
            granularity: granularity.map_or_else(|| layout.default_granularity(method), |g| g.0),
            linear_class: linear_class.map_or(LinearClass::BitLinear, |c| c.0),
            selection: Selection::new(&include.0, &exclude.0).map_err(to_py)?,
            level: args::level(simd)?,
            threads: threads.and_then(|t| t.0),
            copy_also,
            gguf: GgufOptions {
                fallback: fallback.map(|f| f.0),
                embeddings: embeddings.map_or(FloatDType::F16, |e| e.0),
                tokenizer,
            },
            source_linear_class: source_linear_class.map(|c| c.0),
        }))
    }
}

impl PyQuantizeRequest {
    /// The request, for a single file (`folder` false) or a model folder.
    fn for_source(&self, folder: bool) -> PyResult<&QuantizeRequest> {
        if !folder && !self.0.copy_also.is_empty() {
            return Err(RyzqError::new_err(
                "copy_also names files of a model folder; a single file has none",
            ));
        }
        Ok(&self.0)
    }
}

/// Quantizes a safetensors file or, with `folder`, a model folder; returns the report.
/// `progress(done, total, bytes)` is called after each tensor; Ctrl-C stops the work and leaves
/// nothing behind.
#[pyfunction]
#[pyo3(signature = (src, dst, *, folder, request, progress=None))]
fn quantize_checkpoint(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    folder: bool,
    request: &Bound<'_, PyQuantizeRequest>,
    progress: Option<Py<PyAny>>,
) -> PyResult<PyFileReport> {
    let request = request.get().for_source(folder)?;
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut on_tensor = |t: &TensorReport, done: usize, total: usize| {
            Python::attach(|py| {
                let called = match &progress {
                    Some(f) => f.call1(py, (done, total, t.bytes_in)).map(drop),
                    None => Ok(()),
                };
                called.and_then(|()| py.check_signals())
            })
            .map_err(|e| {
                raised = Some(e);
                ryzq_core::Error::Interrupted
            })
        };
        ryzq_core::convert::quantize(&src, &dst, folder, request, &mut on_tensor)
    });
    match (result, raised) {
        (Ok(report), _) => Ok(PyFileReport(report)),
        (Err(_), Some(err)) => Err(err),
        (Err(err), None) => Err(to_py(err)),
    }
}

/// The parts a conversion of the model folder `src` into the model folder `dst` splits into,
/// one per output file, for jobs that convert each alone: a list of dicts (`name`, `sources`:
/// the source files it reads, `bytes_in`), and the plan's warnings. Makes the parts folder
/// beside `dst`.
#[pyfunction]
#[pyo3(signature = (src, dst, *, request))]
fn plan_parts<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    request: &Bound<'py, PyQuantizeRequest>,
) -> PyResult<(Bound<'py, PyList>, Vec<String>, PathBuf)> {
    let request = request.get().for_source(true)?;
    let (parts, warnings) = py
        .detach(|| ryzq_core::parts::plan(&src, &dst, request))
        .map_err(to_py)?;
    let list = PyList::empty(py);
    for part in parts {
        let d = PyDict::new(py);
        d.set_item("name", part.name)?;
        d.set_item("sources", part.sources)?;
        d.set_item("bytes_in", part.bytes_in)?;
        list.append(d)?;
    }
    Ok((list, warnings, ryzq_core::parts::parts_folder(&dst)))
}

/// The folder beside the model folder `dst` where the parts of its conversion are written.
#[pyfunction]
fn parts_folder(dst: PathBuf) -> PathBuf {
    ryzq_core::parts::parts_folder(&dst)
}

/// Converts output file `index` of the conversion of `src` into `dst` into its parts folder;
/// returns what it did as JSON, for [`finish_parts`]. Ctrl-C stops it and leaves nothing.
#[pyfunction]
#[pyo3(signature = (src, dst, *, request, index))]
fn convert_part(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    request: &Bound<'_, PyQuantizeRequest>,
    index: usize,
) -> PyResult<String> {
    let request = request.get().for_source(true)?;
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut on_tensor = |_: &TensorReport, _: usize, _: usize| {
            // A closure: the method itself is not general over the lifetime `attach` gives.
            #[allow(clippy::redundant_closure_for_method_calls)]
            Python::attach(|py| py.check_signals()).map_err(|e| {
                raised = Some(e);
                ryzq_core::Error::Interrupted
            })
        };
        ryzq_core::parts::convert_part(&src, &dst, request, index, &mut on_tensor)
    });
    match (result, raised) {
        (Ok(part), _) => Ok(serde_json::to_string(&part).expect("plain data serializes")),
        (Err(_), Some(err)) => Err(err),
        (Err(err), None) => Err(to_py(err)),
    }
}

/// Puts the `parts` (JSON, as [`convert_part`] returns them, in the plan's order) together into
/// the model folder `dst` and returns the report of the whole conversion; `seconds` is the
/// time the run took before this call; the report names `shown_src` as the source where it is
/// given.
#[pyfunction]
#[pyo3(signature = (src, dst, *, request, parts, seconds, reused, shown_src=None))]
#[allow(clippy::too_many_arguments)]
fn finish_parts(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    request: &Bound<'_, PyQuantizeRequest>,
    parts: Vec<String>,
    seconds: f64,
    reused: usize,
    shown_src: Option<PathBuf>,
) -> PyResult<PyFileReport> {
    let request = request.get().for_source(true)?;
    let parts = parts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::from_str(text)
                .map_err(|e| RyzqError::new_err(format!("part {i}: not what a job returns: {e}")))
        })
        .collect::<PyResult<Vec<ryzq_core::convert::Part>>>()?;
    let started = std::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs_f64(seconds.max(0.0)))
        .unwrap_or_else(std::time::Instant::now);
    py.detach(|| {
        ryzq_core::parts::finish(
            &src,
            &dst,
            request,
            parts,
            started,
            reused,
            shown_src.as_deref(),
        )
    })
    .map(PyFileReport)
    .map_err(to_py)
}

/// A GGUF value as Python sees it; long arrays stay whole (the caller summarizes them).
fn gguf_value<'py>(py: Python<'py>, value: &GgufValue) -> PyResult<Bound<'py, PyAny>> {
    use ryzq_core::gguf::value::Array;
    Ok(match value {
        GgufValue::U8(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::I8(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::U16(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::I16(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::U32(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::I32(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::F32(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::Bool(v) => v.into_pyobject(py)?.to_owned().into_any(),
        GgufValue::String(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::U64(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::I64(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::F64(v) => v.into_pyobject(py)?.into_any(),
        GgufValue::Array(Array::String(v)) => v.into_pyobject(py)?.into_any(),
        GgufValue::Array(Array::F32(v)) => v.into_pyobject(py)?.into_any(),
        GgufValue::Array(Array::I32(v)) => v.into_pyobject(py)?.into_any(),
        GgufValue::Array(Array::U32(v)) => v.into_pyobject(py)?.into_any(),
        GgufValue::Array(Array::Other { values, .. }) => {
            let list = PyList::empty(py);
            for v in values {
                list.append(gguf_value(py, v)?)?;
            }
            list.into_any()
        }
    })
}

/// The header of a GGUF file, checked: its version, key-value pairs (key, value type id,
/// value) and tensors (name, GGML type name, shape, bytes).
#[pyfunction]
fn read_gguf_header(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let header = py
        .detach(|| ryzq_core::gguf::read::read_file_header(&path))
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("version", header.version)?;
    let kvs = PyList::empty(py);
    for (key, value) in &header.kvs {
        kvs.append((key, value.type_id(), gguf_value(py, value)?))?;
    }
    d.set_item("kvs", kvs)?;
    let tensors = PyList::empty(py);
    for t in &header.tensors {
        let name = ryzq_core::gguf::read::type_name(t.ggml_type).unwrap_or("unknown");
        tensors.append((&t.name, name, t.shape.clone(), t.range.len()))?;
    }
    d.set_item("tensors", tensors)?;
    d.set_item("size", std::fs::metadata(&path).map_or(0, |m| m.len()))?;
    Ok(d)
}

/// Writes the GGUF file `path` with `general.architecture = arch` and `tensors`, each
/// (name, type, shape, bytes): type a float dtype or a layout with a GGML type, shape the
/// logical one; `layout`, where every packed tensor has one, as `ryzq.layout`. The file
/// appears only once complete.
#[pyfunction]
#[pyo3(signature = (path, arch, tensors, layout=None))]
fn write_gguf_file(
    py: Python<'_>,
    path: PathBuf,
    arch: String,
    tensors: Vec<(String, String, Vec<usize>, PyReadonlyArray1<'_, u8>)>,
    layout: Option<Name<Layout>>,
) -> PyResult<()> {
    use ryzq_core::gguf::GgmlType;
    use ryzq_core::sink::gguf::GgufTensor;
    use ryzq_core::sink::{GgufPlacement, GgufWriter};
    let mut placements = Vec::with_capacity(tensors.len());
    for (name, kind, shape, _) in &tensors {
        let in_tensor = |e: ryzq_core::Error| to_py(e.in_file(&path, Some(name)));
        let ggml_type = match FloatDType::parse(kind) {
            Ok(dtype) => GgmlType::from_float(dtype),
            Err(_) => Layout::parse(kind)
                .and_then(GgmlType::of_layout)
                .map_err(in_tensor)?,
        };
        placements.push(GgufPlacement {
            ggml_type,
            shape: shape.clone(),
        });
    }
    let data: Vec<&[u8]> = tensors
        .iter()
        .map(|t| t.3.as_slice())
        .collect::<Result<_, _>>()?;
    let infos: Vec<GgufTensor<'_>> = tensors
        .iter()
        .zip(&placements)
        .zip(&data)
        .map(|(((name, ..), placement), bytes)| GgufTensor {
            name,
            placement,
            nbytes: bytes.len(),
        })
        .collect();
    let mut kvs = vec![("general.architecture".to_owned(), GgufValue::from(arch))];
    if let Some(layout) = layout {
        kvs.push(("ryzq.layout".to_owned(), layout.0.name().into()));
    }
    py.detach(|| {
        let mut file = GgufWriter::create(&path, &kvs, &infos)?;
        for (t, bytes) in infos.iter().zip(&data) {
            file.write(t.name, bytes)?;
        }
        file.finish()
    })
    .map_err(|e| to_py(e.in_file(&path, None)))
}

/// What quantizing would do, without writing anything: the plan as a dict (files, each
/// tensor's action and outputs, the config of a folder, warnings).
#[pyfunction]
#[pyo3(signature = (src, *, folder, request, dst=None))]
fn plan_quantize<'py>(
    py: Python<'py>,
    src: PathBuf,
    folder: bool,
    request: &Bound<'py, PyQuantizeRequest>,
    dst: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let request = request.get().for_source(folder)?;
    let (plan, size) = py
        .detach(|| {
            let source = ryzq_core::convert::open(&src, folder)?;
            // The destination, where given, says what is written (a GGUF file, a folder or
            // a safetensors file); without one, what the source is.
            let kind = match &dst {
                Some(dst) => ryzq_core::sink::output_kind(&source, dst),
                None if folder => OutputKind::Folder,
                None => OutputKind::File,
            };
            let plan = Plan::for_output(&source, kind, request)?;
            Ok::<_, ryzq_core::Error>((plan, source.size()))
        })
        .map_err(to_py)?;
    plan_dict(py, &plan, request, size)
}

fn plan_dict<'py>(
    py: Python<'py>,
    plan: &Plan,
    request: &QuantizeRequest,
    bytes_in: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("layout", request.layout.name())?;
    d.set_item("method", request.method.name())?;
    d.set_item("granularity", request.granularity.name())?;
    d.set_item("linear_class", request.linear_class.name())?;
    let files = PyList::empty(py);
    for file in &plan.files {
        let f = PyDict::new(py);
        f.set_item("shard", &file.shard)?;
        let tensors = PyList::empty(py);
        for t in &file.tensors {
            let e = PyDict::new(py);
            e.set_item("name", &t.name)?;
            let (action, why) = match &t.action {
                Action::Copy(reason) => ("keep", Some(reason.clone())),
                Action::Quantize { .. } => ("quantize", None),
                Action::DivideBias { weight, .. } => (
                    "divide",
                    Some(format!("bias of {weight}, divided by its weight_scale")),
                ),
                Action::Dequantize { from, .. } => (
                    "dequantize",
                    Some(format!("packed in the source ({})", from.describe())),
                ),
                Action::Transcode { from, .. } => (
                    "carry",
                    Some(format!(
                        "codes carried over from the source's {}",
                        from.describe()
                    )),
                ),
                Action::ConvertFloat { .. } => ("convert", None),
                Action::Drop => ("drop", None),
            };
            e.set_item("action", action)?;
            e.set_item("why", why)?;
            e.set_item("outputs", output_list(py, &t.outputs)?)?;
            tensors.append(e)?;
        }
        for g in &file.generated {
            let e = PyDict::new(py);
            e.set_item("name", &g.output.name)?;
            e.set_item("action", "generate")?;
            e.set_item("why", &g.why)?;
            e.set_item("outputs", output_list(py, std::slice::from_ref(&g.output))?)?;
            tensors.append(e)?;
        }
        f.set_item("tensors", tensors)?;
        files.append(f)?;
    }
    d.set_item("files", files)?;
    d.set_item("bytes_in", bytes_in)?;
    d.set_item("bytes_out", plan.bytes_out())?;
    d.set_item(
        "config",
        plan.config
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("plain data serializes")),
    )?;
    d.set_item("warnings", plan.warnings.clone())?;
    d.set_item("copied_files", plan.other_files.copied.clone())?;
    d.set_item("skipped_files", plan.other_files.skipped.clone())?;
    Ok(d)
}

/// Output tensors as the plan lists them: a GGUF tensor by its GGML type and logical shape,
/// as GGUF readers show it.
fn output_list<'py>(py: Python<'py>, outputs: &[OutputTensor]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for o in outputs {
        let (dtype, shape) = match &o.gguf {
            Some(p) => (p.ggml_type.name(), p.shape.clone()),
            None => (o.dtype.name().to_owned(), o.shape.clone()),
        };
        list.append((&o.name, dtype, shape, o.nbytes()))?;
    }
    Ok(list)
}

/// Dequantizes a file or, with `folder`, a model folder holding packed tensors (ryzq's,
/// GGUF, transformers' packed BitNet layout); returns how many tensors were dequantized.
#[pyfunction]
#[pyo3(signature = (src, dst, *, folder, dtype=None, simd=None, threads=None, source_linear_class=None))]
#[allow(clippy::too_many_arguments)]
fn dequantize_checkpoint(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    folder: bool,
    dtype: Option<Name<FloatDType>>,
    simd: Option<Name<SimdLevel>>,
    threads: Option<Threads>,
    source_linear_class: Option<Name<LinearClass>>,
) -> PyResult<usize> {
    let request = ryzq_core::convert::DequantizeRequest {
        dtype: dtype.map(|d| d.0),
        source_linear_class: source_linear_class.map(|c| c.0),
        level: args::level(simd)?,
        threads: threads.and_then(|t| t.0),
    };
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut on_tensor = |_: &TensorReport, _: usize, _: usize| {
            // A closure: `Python::check_signals` itself is not general over the lifetime.
            #[allow(clippy::redundant_closure_for_method_calls)]
            let checked = Python::attach(|py| py.check_signals());
            checked.map_err(|e| {
                raised = Some(e);
                ryzq_core::Error::Interrupted
            })
        };
        ryzq_core::convert::dequantize(&src, &dst, folder, &request, &mut on_tensor)
    });
    match (result, raised) {
        (Ok(count), _) => Ok(count),
        (Err(_), Some(err)) => Err(err),
        (Err(err), None) => Err(to_py(err)),
    }
}

/// The validated header of a safetensors file: size, `__metadata__`, and each tensor's name,
/// dtype, shape and byte range, in file order.
#[pyfunction]
fn read_header(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let checkpoint = py.detach(|| SafetensorsFile::open(&path)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("size", checkpoint.size())?;
    d.set_item("metadata", checkpoint.metadata().clone())?;
    let tensors = PyList::empty(py);
    for t in checkpoint.tensors() {
        let e = PyDict::new(py);
        e.set_item("name", &t.name)?;
        e.set_item("dtype", t.dtype.name())?;
        e.set_item("shape", &t.shape)?;
        e.set_item("start", t.range.start)?;
        e.set_item("end", t.range.end)?;
        tensors.append(e)?;
    }
    d.set_item("tensors", tensors)?;
    Ok(d)
}

/// A model folder as the core opens it for every conversion: its safetensors files in order
/// (`shards`), `config.json` as JSON text (`config`), and for a sharded model the index's file
/// name (`index_file`) and the index as JSON text (`index`), else None.
#[pyfunction]
fn read_model_folder(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let folder = py.detach(|| ModelFolder::open(&path)).map_err(to_py)?;
    let json = |value| serde_json::to_string(value).expect("plain data serializes");
    let d = PyDict::new(py);
    d.set_item("shards", folder.shards())?;
    d.set_item("config", json(folder.config()))?;
    d.set_item("index_file", folder.index().map(|_| INDEX))?;
    d.set_item("index", folder.index().map(json))?;
    Ok(d)
}

/// The vocabulary of a model folder as the values of GGUF's `tokenizer.*` keys, for an
/// embedding of `n_vocab` rows: `ryzq_core::model::tokenizer::Vocab` as a dict, token types as
/// their GGUF integers and special ids by `SpecialVocab`'s names ("bos", "eos", ...).
#[pyfunction]
fn read_vocab(py: Python<'_>, dir: PathBuf, n_vocab: usize) -> PyResult<Bound<'_, PyDict>> {
    let vocab = py
        .detach(|| {
            let config = ryzq_core::source::folder::read_config(&dir)?;
            tokenizer::read_vocab(&dir, &config, n_vocab)
        })
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("model", vocab.model.gguf_name())?;
    d.set_item("pre", &vocab.pre)?;
    d.set_item("tokens", &vocab.tokens)?;
    d.set_item("scores", &vocab.scores)?;
    let types: Vec<i32> = vocab.token_types.iter().map(|t| t.gguf_value()).collect();
    d.set_item("token_types", types)?;
    d.set_item("merges", &vocab.merges)?;
    let special = PyDict::new(py);
    for (which, id) in &vocab.special_ids {
        special.set_item(which.name(), id)?;
    }
    d.set_item("special_ids", special)?;
    d.set_item("add_bos", vocab.add_bos)?;
    d.set_item("add_eos", vocab.add_eos)?;
    d.set_item("add_sep", vocab.add_sep)?;
    d.set_item("add_space_prefix", vocab.add_space_prefix)?;
    d.set_item("chat_template", &vocab.chat_template)?;
    d.set_item("named_chat_templates", &vocab.named_chat_templates)?;
    Ok(d)
}

/// Writes a safetensors file one tensor at a time: the layout is fixed up front, each tensor
/// is written as it comes, and the file appears at its path only when `finish` succeeds.
#[pyclass(module = "ryzq._ryzq")]
struct SafetensorsFileWriter {
    inner: Option<TensorFile>,
}

#[pymethods]
impl SafetensorsFileWriter {
    /// `tensors`: (name, dtype in any spelling ryzq takes, "bfloat16" or "BF16", shape) for
    /// every tensor.
    #[new]
    #[pyo3(signature = (path, tensors, metadata=None))]
    fn new(
        path: PathBuf,
        tensors: Vec<(String, String, Vec<usize>)>,
        metadata: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let outputs = tensors
            .into_iter()
            .map(|(name, dtype, shape)| {
                Ok(OutputTensor {
                    name,
                    dtype: StoredType::parse(&dtype).map_err(to_py)?,
                    shape,
                    gguf: None,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let writer = SafetensorsWriter::create(&path, &outputs, metadata.unwrap_or_default())
            .map_err(|e| to_py(e.in_file(&path, None)))?;
        Ok(Self {
            inner: Some(writer),
        })
    }

    /// Writes the raw little-endian bytes of tensor `name`.
    fn write(
        &mut self,
        py: Python<'_>,
        name: &str,
        data: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        let bytes = contiguous(&data, "the tensor data")?;
        let writer = self
            .inner
            .as_mut()
            .ok_or_else(|| RyzqError::new_err("the writer is already finished"))?;
        py.detach(|| writer.write(name, bytes)).map_err(to_py)
    }

    /// Moves the file into place; fails if a tensor was not written.
    fn finish(&mut self) -> PyResult<()> {
        let writer = self
            .inner
            .take()
            .ok_or_else(|| RyzqError::new_err("the writer is already finished"))?;
        writer.finish().map_err(to_py)
    }

    /// Discards the unfinished file.
    fn abort(&mut self) {
        self.inner = None;
    }
}

#[pymodule(gil_used = false)]
fn _ryzq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let error = m.py().get_type::<RyzqError>();
    // What an error raised without them (in Python, for a bad argument) says.
    error.setattr("kind", "invalid_argument")?;
    error.setattr("path", m.py().None())?;
    error.setattr("tensor", m.py().None())?;
    m.add("RyzqError", error)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(packed_shape, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(plan_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(plan_parts, m)?)?;
    m.add_function(wrap_pyfunction!(convert_part, m)?)?;
    m.add_function(wrap_pyfunction!(finish_parts, m)?)?;
    m.add_function(wrap_pyfunction!(parts_folder, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(read_header, m)?)?;
    m.add_function(wrap_pyfunction!(read_gguf_header, m)?)?;
    m.add_function(wrap_pyfunction!(write_gguf_file, m)?)?;
    m.add_function(wrap_pyfunction!(read_model_folder, m)?)?;
    m.add_function(wrap_pyfunction!(read_vocab, m)?)?;
    m.add_function(wrap_pyfunction!(default_granularity, m)?)?;
    m.add_function(wrap_pyfunction!(layouts, m)?)?;
    m.add_function(wrap_pyfunction!(parse_ryzq_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_name, m)?)?;
    m.add_class::<SafetensorsFileWriter>()?;
    m.add_class::<PyQuantizeRequest>()?;
    m.add_class::<PyErrorStats>()?;
    m.add_class::<PyTensorReport>()?;
    m.add_class::<PyFileReport>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FALLBACKS", Fallback::NAMES)?;
    Ok(())
}
