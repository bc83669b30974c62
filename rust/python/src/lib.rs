//! The native module `ryzq._ryzq`: converts arguments, calls `ryzq-core` with the interpreter
//! detached, and maps every core error to `ryzq.RyzqError`. Arrays cross as flat, C-contiguous
//! numpy arrays of raw bytes; `python/ryzq` gives them their shapes and dtypes.

// PyO3 extracts arguments by value, and `map_err` hands errors over by value.
#![allow(clippy::needless_pass_by_value)]

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use ryzq_core::{
    ErrorStats, FloatDType, Granularity, Layout, Method, QuantizeOptions, SimdLevel, TensorView,
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
#[pyo3(signature = (data, dtype, shape, layout, method, granularity, simd=None))]
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
        .detach(|| ryzq_core::quantize(&view, &opts))
        .map_err(to_py)?;
    Ok((
        PyArray1::from_vec(py, q.packed),
        q.packed_shape,
        PyArray1::from_vec(py, q.scales),
        stats_dict(py, &q.stats)?,
    ))
}

/// Dequantizes packed codes; returns the raw little-endian bytes of `dtype`.
#[pyfunction]
#[pyo3(signature = (packed, scales, shape, layout, granularity, dtype, simd=None))]
#[allow(clippy::too_many_arguments)]
fn dequantize<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    scales: PyReadonlyArray1<'py, f32>,
    shape: Vec<usize>,
    layout: &str,
    granularity: &str,
    dtype: &str,
    simd: Option<&str>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let packed = contiguous(&packed, "the packed data")?;
    let scales = contiguous(&scales, "the scales")?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let granularity = Granularity::parse(granularity).map_err(to_py)?;
    let dtype = FloatDType::parse(dtype).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let out = py
        .detach(|| ryzq_core::dequantize(packed, scales, &shape, layout, granularity, dtype, level))
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, out))
}

/// Packs int8 codes; returns (packed bytes, packed shape).
#[pyfunction]
#[pyo3(signature = (codes, shape, layout, simd=None))]
fn pack<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i8>,
    shape: Vec<usize>,
    layout: &str,
    simd: Option<&str>,
) -> PyResult<(Bound<'py, PyArray1<u8>>, Vec<usize>)> {
    let codes = contiguous(&codes, "the codes")?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let packed_shape = layout.get().packed_shape(&shape).map_err(to_py)?;
    let packed = py
        .detach(|| ryzq_core::pack(codes, &shape, layout, level))
        .map_err(to_py)?;
    Ok((PyArray1::from_vec(py, packed), packed_shape))
}

/// Unpacks int8 codes (flat).
#[pyfunction]
#[pyo3(signature = (packed, shape, layout, simd=None))]
fn unpack<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    shape: Vec<usize>,
    layout: &str,
    simd: Option<&str>,
) -> PyResult<Bound<'py, PyArray1<i8>>> {
    let packed = contiguous(&packed, "the packed data")?;
    let layout = Layout::parse(layout).map_err(to_py)?;
    let level = SimdLevel::resolve(simd).map_err(to_py)?;
    let codes = py
        .detach(|| ryzq_core::unpack(packed, &shape, layout, level))
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, codes))
}

/// The packed shape of a tensor of `shape` in `layout`.
#[pyfunction]
fn packed_shape(shape: Vec<usize>, layout: &str) -> PyResult<Vec<usize>> {
    let layout = Layout::parse(layout).map_err(to_py)?;
    layout.get().packed_shape(&shape).map_err(to_py)
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

#[pymodule(gil_used = false)]
fn _ryzq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RyzqError", m.py().get_type::<RyzqError>())?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(packed_shape, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
