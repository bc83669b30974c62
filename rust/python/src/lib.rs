//! The native module `ryzq._ryzq`: converts arguments, calls `ryzq-core` with the interpreter
//! detached, and maps every core error to `ryzq.RyzqError`. Arrays cross as flat, C-contiguous
//! numpy arrays of raw bytes; `python/ryzq` gives them their shapes and dtypes.

// PyO3 extracts arguments by value, and `map_err` hands errors over by value.
#![allow(clippy::needless_pass_by_value)]

use std::collections::HashMap;
use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use ryzq_core::file::{
    Checkpoint, FileOptions, FileReport, LinearClass, OutputTensor, SafetensorsWriter, Selection,
    TensorReport,
};
use ryzq_core::{
    ErrorStats, FloatDType, Granularity, Layout, Method, QuantizeOptions, SimdLevel, TensorView,
    threads,
};

create_exception!(
    ryzq,
    RyzqError,
    PyValueError,
    "Bad input to ryzq: an unsupported dtype or shape, non-finite weights, corrupt packed data."
);

fn to_py(err: ryzq_core::Error) -> PyErr {
    RyzqError::new_err(err.to_string())
}

fn contiguous<'a, T: numpy::Element>(
    array: &'a PyReadonlyArray1<'_, T>,
    what: &str,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| RyzqError::new_err(format!("{what} must be a C-contiguous array")))
}

fn stats_dict<'py>(py: Python<'py>, stats: &ErrorStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("numel", stats.numel)?;
    d.set_item("sse", stats.sse)?;
    d.set_item("sum_sq", stats.sum_sq)?;
    d.set_item("max_abs_error", stats.max_abs_error)?;
    d.set_item("count_negative", stats.counts[0])?;
    d.set_item("count_zero", stats.counts[1])?;
    d.set_item("count_positive", stats.counts[2])?;
    Ok(d)
}

type QuantizeResult<'py> = (
    Bound<'py, PyArray1<u8>>,
    Vec<usize>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyDict>,
);

/// Quantizes raw weights; returns (packed bytes, packed shape, scales, stats).
#[pyfunction]
#[pyo3(signature = (data, dtype, shape, layout, method, granularity, simd=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn quantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    dtype: &str,
    shape: Vec<usize>,
    layout: &str,
    method: &str,
    granularity: &str,
    simd: Option<&str>,
    threads: Option<usize>,
) -> PyResult<QuantizeResult<'py>> {
    let bytes = contiguous(&data, "the weights")?;
    let dtype = FloatDType::parse(dtype).map_err(to_py)?;
    let opts = QuantizeOptions {
        layout: Layout::parse(layout).map_err(to_py)?,
        method: Method::parse(method).map_err(to_py)?,
        granularity: Granularity::parse(granularity).map_err(to_py)?,
        level: SimdLevel::resolve(simd).map_err(to_py)?,
    };
    let view = TensorView::new(bytes, dtype, &shape).map_err(to_py)?;
    let q = py
        .detach(|| threads::run(threads, || ryzq_core::quantize(&view, &opts)))
        .and_then(|(q, _)| q)
        .map_err(to_py)?;
    Ok((
        PyArray1::from_vec(py, q.packed),
        q.packed_shape,
        PyArray1::from_vec(py, q.scales),
        stats_dict(py, &q.stats)?,
    ))
}

/// Dequantizes packed codes into `out`, the raw little-endian bytes of a `dtype` array.
#[pyfunction]
#[pyo3(signature = (packed, scales, shape, layout, granularity, dtype, out, simd=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn dequantize<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    scales: PyReadonlyArray1<'py, f32>,
    shape: Vec<usize>,
    layout: &str,
    granularity: &str,
    dtype: &str,
    mut out: PyReadwriteArray1<'py, u8>,
    simd: Option<&str>,
    threads: Option<usize>,
) -> PyResult<()> {
    let packed = contiguous(&packed, "the packed data")?;
    let scales = contiguous(&scales, "the scales")?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let granularity = Granularity::parse(granularity).map_err(to_py)?;
    let dtype = FloatDType::parse(dtype).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let out = out
        .as_slice_mut()
        .map_err(|_| RyzqError::new_err("out must be a C-contiguous array"))?;
    py.detach(|| {
        threads::run(threads, || {
            ryzq_core::dequantize_into(
                packed,
                scales,
                &shape,
                layout,
                granularity,
                dtype,
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
#[pyo3(signature = (codes, shape, layout, scales=None, simd=None, threads=None))]
fn pack<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i8>,
    shape: Vec<usize>,
    layout: &str,
    scales: Option<PyReadonlyArray1<'py, f32>>,
    simd: Option<&str>,
    threads: Option<usize>,
) -> PyResult<(Bound<'py, PyArray1<u8>>, Vec<usize>)> {
    let codes = contiguous(&codes, "the codes")?;
    let scales = scales
        .as_ref()
        .map(|s| contiguous(s, "the scales"))
        .transpose()?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let packed_shape = layout.get().packed_shape(&shape).map_err(to_py)?;
    let packed = py
        .detach(|| {
            threads::run(threads, || {
                ryzq_core::pack(codes, &shape, layout, scales, level)
            })
        })
        .and_then(|(p, _)| p)
        .map_err(to_py)?;
    Ok((PyArray1::from_vec(py, packed), packed_shape))
}

/// Unpacks int8 codes (flat).
#[pyfunction]
#[pyo3(signature = (packed, shape, layout, simd=None, threads=None))]
fn unpack<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    shape: Vec<usize>,
    layout: &str,
    simd: Option<&str>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<i8>>> {
    let packed = contiguous(&packed, "the packed data")?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let codes = py
        .detach(|| threads::run(threads, || ryzq_core::unpack(packed, &shape, layout, level)))
        .and_then(|(c, _)| c)
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, codes))
}

/// The packed shape of a tensor of `shape` in `layout`.
#[pyfunction]
fn packed_shape(shape: Vec<usize>, layout: &str) -> PyResult<Vec<usize>> {
    let layout = Layout::parse(layout).map_err(to_py)?;
    layout.get().packed_shape(&shape).map_err(to_py)
}

/// The values of each block of `layout`, for layouts that store a scale in every block.
#[pyfunction]
fn block_size(layout: &str) -> PyResult<Option<usize>> {
    Ok(Layout::parse(layout).map_err(to_py)?.get().block())
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

fn tensor_report_dict<'py>(py: Python<'py>, t: &TensorReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &t.name)?;
    d.set_item("dtype", &t.dtype)?;
    d.set_item("shape", &t.shape)?;
    d.set_item("kept_because", &t.kept_because)?;
    d.set_item("scale", t.scale)?;
    d.set_item(
        "stats",
        t.stats.as_ref().map(|s| stats_dict(py, s)).transpose()?,
    )?;
    d.set_item("bytes_in", t.bytes_in)?;
    d.set_item("bytes_out", t.bytes_out)?;
    d.set_item("read_seconds", t.read_seconds)?;
    d.set_item("quantize_seconds", t.quantize_seconds)?;
    d.set_item("write_seconds", t.write_seconds)?;
    Ok(d)
}

fn file_report_dict<'py>(py: Python<'py>, r: &FileReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("src", &r.src)?;
    d.set_item("dst", &r.dst)?;
    d.set_item("layout", &r.layout)?;
    d.set_item("method", &r.method)?;
    d.set_item("granularity", &r.granularity)?;
    d.set_item("linear_class", &r.linear_class)?;
    let tensors = PyList::empty(py);
    for t in &r.tensors {
        tensors.append(tensor_report_dict(py, t)?)?;
    }
    d.set_item("tensors", tensors)?;
    d.set_item("file_bytes_in", r.file_bytes_in)?;
    d.set_item("file_bytes_out", r.file_bytes_out)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("threads", r.threads)?;
    Ok(d)
}

/// Quantizes a safetensors file; returns the report as a dict. `progress(done, total, bytes)`
/// is called after each tensor; Ctrl-C stops the work and leaves nothing behind.
#[pyfunction]
#[pyo3(signature = (src, dst, layout, method, granularity, linear_class, include, exclude, threads=None, progress=None, simd=None, companions=Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn quantize_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    layout: &str,
    method: &str,
    granularity: &str,
    linear_class: &str,
    include: Vec<String>,
    exclude: Vec<String>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
    simd: Option<&str>,
    companions: Vec<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = FileOptions {
        layout: Layout::parse(layout).map_err(to_py)?,
        method: Method::parse(method).map_err(to_py)?,
        granularity: Granularity::parse(granularity).map_err(to_py)?,
        linear_class: LinearClass::parse(linear_class).map_err(to_py)?,
        selection: Selection::new(&include, &exclude).map_err(to_py)?,
        level: SimdLevel::resolve(simd).map_err(to_py)?,
        threads,
        companions,
    };
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
        ryzq_core::file::quantize_file(&src, &dst, &opts, &mut on_tensor)
    });
    match (result, raised) {
        (Ok(report), _) => file_report_dict(py, &report),
        (Err(_), Some(err)) => Err(err),
        (Err(err), None) => Err(to_py(err)),
    }
}

/// Dequantizes a file written by `quantize_file`; returns how many tensors were dequantized.
#[pyfunction]
#[pyo3(signature = (src, dst, dtype=None, simd=None, threads=None))]
fn dequantize_file(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    dtype: Option<&str>,
    simd: Option<&str>,
    threads: Option<usize>,
) -> PyResult<usize> {
    let dtype = dtype.map(FloatDType::parse).transpose().map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    py.detach(|| ryzq_core::file::dequantize_file(&src, &dst, dtype, level, threads))
        .map_err(to_py)
}

/// The granularity `method` uses in `layout` unless asked otherwise.
#[pyfunction]
fn default_granularity(layout: &str, method: &str) -> PyResult<String> {
    let layout = Layout::parse(layout).map_err(to_py)?;
    let method = Method::parse(method).map_err(to_py)?;
    Ok(layout.default_granularity(method).name())
}

/// The validated header of a safetensors file: size, `__metadata__`, and each tensor's name,
/// dtype, shape and byte range, in file order.
#[pyfunction]
fn read_header(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let checkpoint = py.detach(|| Checkpoint::open(&path)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("size", checkpoint.size())?;
    d.set_item("metadata", checkpoint.metadata().clone())?;
    let tensors = PyList::empty(py);
    for t in checkpoint.tensors() {
        let e = PyDict::new(py);
        e.set_item("name", &t.name)?;
        e.set_item("dtype", ryzq_core::file::dtype_name(t.dtype))?;
        e.set_item("shape", &t.shape)?;
        e.set_item("start", t.range.start)?;
        e.set_item("end", t.range.end)?;
        tensors.append(e)?;
    }
    d.set_item("tensors", tensors)?;
    Ok(d)
}

fn parse_safetensors_dtype(name: &str) -> PyResult<safetensors::Dtype> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| RyzqError::new_err(format!("unknown safetensors dtype {name:?}")))
}

/// Writes a safetensors file one tensor at a time: the layout is fixed up front, each tensor
/// is written as it comes, and the file appears at its path only when `finish` succeeds.
#[pyclass(module = "ryzq._ryzq")]
struct SafetensorsFileWriter {
    inner: Option<SafetensorsWriter>,
}

#[pymethods]
impl SafetensorsFileWriter {
    /// `tensors`: (name, safetensors dtype such as "BF16", shape) for every tensor.
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
                    dtype: parse_safetensors_dtype(&dtype)?,
                    shape,
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
    m.add("RyzqError", m.py().get_type::<RyzqError>())?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(packed_shape, m)?)?;
    m.add_function(wrap_pyfunction!(block_size, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_file, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize_file, m)?)?;
    m.add_function(wrap_pyfunction!(read_header, m)?)?;
    m.add_function(wrap_pyfunction!(default_granularity, m)?)?;
    m.add_class::<SafetensorsFileWriter>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
