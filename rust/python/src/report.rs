//! The report's classes: `QuantizationStats`, `TensorReport` and `QuantizationReport` are the
//! core's `ErrorStats`, `TensorReport` and `FileReport`, frozen, their fields read-only
//! attributes and the values derived from them computed by the core. How a report reads (its
//! text, its JSON) and what follows from the names of tensors (the layer a tensor is in) are
//! `python/ryzq/report.py`'s: the methods that give them call it.
//!
//! The classes wrap the core structs here rather than being `#[pyclass]` on them behind a
//! feature of the core: Cargo unifies features over the packages of one build, so `cargo test
//! --workspace` would build the core and its tests with PyO3, linked against libpython.

use std::collections::HashMap;

use pyo3::IntoPyObjectExt;
use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use ryzq_core::ErrorStats;
use ryzq_core::report::{FileReport, TensorReport};

use crate::RyzqError;

/// A frozen class around the core struct `$core`: a read-only attribute for each field,
/// converted as `IntoPyObject` converts a reference to it or by the function after `=>`, a
/// `__repr__` with them all, and the methods that follow. The fields are named once, here, and
/// the pattern in `__repr__` lists them without `..`: a field of the core struct missing from
/// the list, or one it no longer has, does not compile.
macro_rules! frozen_class {
    (
        $(#[doc = $doc:literal])*
        $class:ident($core:ident) as $name:literal {
            $($field:ident $(=> $convert:path)?),+ $(,)?
        }
        $($methods:tt)*
    ) => {
        $(#[doc = $doc])*
        #[pyclass(frozen, eq, module = "ryzq._ryzq", name = $name)]
        #[derive(PartialEq)]
        pub struct $class(pub $core);

        #[pymethods]
        impl $class {
            $(
                #[getter]
                fn $field<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                    frozen_class!(@get py, &self.0.$field $(, $convert)?)
                }
            )+

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                let $core { $($field: _),+ } = &self.0;
                let fields = [$(
                    format!(concat!(stringify!($field), "={}"), self.$field(py)?.repr()?),
                )+];
                Ok(format!(concat!($name, "({})"), fields.join(", ")))
            }

            $($methods)*
        }
    };
    (@get $py:ident, $value:expr) => { $value.into_bound_py_any($py) };
    (@get $py:ident, $value:expr, $convert:path) => { $convert($py, $value) };
}

/// `ryzq.report.<function>(*args)`.
fn in_report_py<'py>(
    py: Python<'py>,
    function: &str,
    args: impl PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("ryzq.report")?.getattr(function)?.call1(args)
}

/// The codes' counts by code: `{-1: n, 0: n, 1: n}`.
fn counts_by_code<'py>(py: Python<'py>, counts: &[u64; 3]) -> PyResult<Bound<'py, PyAny>> {
    let by_code = PyDict::new(py);
    for (code, count) in (-1..=1).zip(counts) {
        by_code.set_item(code, count)?;
    }
    Ok(by_code.into_any())
}

fn shape_tuple<'py>(py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(py, shape)?.into_any())
}

// `frozen_class!` hands every field over by reference.
#[allow(clippy::ref_option)]
fn stats_object<'py>(py: Python<'py>, stats: &Option<ErrorStats>) -> PyResult<Bound<'py, PyAny>> {
    stats.map(PyErrorStats).into_bound_py_any(py)
}

fn tensor_objects<'py>(py: Python<'py>, tensors: &[TensorReport]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyList::new(py, tensors.iter().cloned().map(PyTensorReport))?.into_any())
}

frozen_class! {
    /// Error of a quantized tensor `w` against its dequantized `w'`, summed in float64:
    /// `sse = sum((w - w')**2)`, `sum_sq = sum(w**2)`, `max_abs_error = max |w - w'|`, and how
    /// many codes are -1, 0 and 1 (`counts`).
    PyErrorStats(ErrorStats) as "QuantizationStats" {
        numel,
        sse,
        sum_sq,
        max_abs_error,
        counts => counts_by_code,
    }

    /// The statistics of values whose sums are these (the pooled statistics of several
    /// tensors); `counts` gives -1, 0 and 1 a count each.
    #[new]
    #[pyo3(signature = (numel, sse, sum_sq, max_abs_error, counts))]
    fn new(
        numel: u64,
        sse: f64,
        sum_sq: f64,
        max_abs_error: f32,
        counts: HashMap<i64, u64>,
    ) -> PyResult<Self> {
        let count = |code| {
            counts.get(&code).copied().ok_or_else(|| {
                RyzqError::new_err(format!("counts has no count of the code {code}"))
            })
        };
        if counts.len() != 3 {
            return Err(RyzqError::new_err(format!(
                "counts must count the codes -1, 0 and 1 only, got {:?}",
                counts.keys().collect::<Vec<_>>()
            )));
        }
        let counts = [count(-1)?, count(0)?, count(1)?];
        Ok(Self(ErrorStats { numel, sse, sum_sq, max_abs_error, counts }))
    }

    #[getter]
    fn mse(&self) -> f64 {
        self.0.mse()
    }

    /// mse / mean(w**2); 0 for an all-zero tensor, which quantizes without error.
    #[getter]
    fn nmse(&self) -> f64 {
        self.0.nmse()
    }

    /// 10 log10(sum(w**2) / sse); infinite when there is no error.
    #[getter]
    fn snr_db(&self) -> f64 {
        self.0.snr_db()
    }

    #[getter]
    fn zeros_fraction(&self) -> f64 {
        self.0.zeros_fraction()
    }

    /// The statistics as the report's JSON has them.
    fn to_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "stats_dict", (slf,))
    }
}

frozen_class! {
    /// What quantizing did to one tensor: `kept_because` is None when it was quantized, else
    /// why it was copied as it is; `carried_over` says where codes that were already ternary
    /// came from (its error is then that of its scales against the source's); `scale` is the
    /// dequantization scale (w' = code * scale) of a tensor with one; `bytes_out` counts its
    /// scale tensor too.
    PyTensorReport(TensorReport) as "TensorReport" {
        name,
        dtype,
        shape => shape_tuple,
        kept_because,
        carried_over,
        scale,
        stats => stats_object,
        bytes_in,
        bytes_out,
        read_seconds,
        quantize_seconds,
        write_seconds,
    }

    #[getter]
    fn quantized(&self) -> bool {
        self.0.quantized()
    }

    #[getter]
    fn numel(&self) -> u64 {
        self.0.numel()
    }

    /// The index of the numbered block the tensor belongs to, if any.
    #[getter]
    fn layer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(py, "layer_of", (&self.0.name,))
    }

    /// The numbered block (`model.layers.12`) the tensor belongs to, if any.
    #[getter]
    fn block<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(py, "block_name", (&self.0.name,))
    }

    /// The tensor's entry in the report's JSON.
    fn to_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "tensor_dict", (slf,))
    }
}

frozen_class! {
    /// What quantizing a checkpoint did, tensor by tensor; `warnings` are what it did that is
    /// likely not what the model needs, `skipped_files` the files of a model folder left out,
    /// and why. `str(report)` is `summary()`.
    PyFileReport(FileReport) as "QuantizationReport" {
        src,
        dst,
        layout,
        method,
        granularity,
        linear_class,
        tensors => tensor_objects,
        file_bytes_in,
        file_bytes_out,
        seconds,
        threads,
        warnings,
        skipped_files,
    }

    #[getter]
    fn quantized(&self) -> Vec<PyTensorReport> {
        self.0.quantized().cloned().map(PyTensorReport).collect()
    }

    #[getter]
    fn parameters(&self) -> u64 {
        self.0.parameters()
    }

    /// File bytes in / file bytes out.
    #[getter]
    fn compression_ratio(&self) -> f64 {
        self.0.compression_ratio()
    }

    /// Bytes of the quantized tensors in / their packed bytes and scales out.
    #[getter]
    fn quantized_compression_ratio(&self) -> f64 {
        self.0.quantized_compression_ratio()
    }

    /// Seconds reading, quantizing and writing (summed over the tensors), and in all.
    #[getter]
    fn seconds_by_phase<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let [read, quantize, write] = self.0.seconds_by_phase();
        let by_phase = PyDict::new(py);
        by_phase.set_item("read", read)?;
        by_phase.set_item("quantize", quantize)?;
        by_phase.set_item("write", write)?;
        by_phase.set_item("total", self.0.seconds)?;
        Ok(by_phase)
    }

    /// The tensors grouped by numbered block, their errors pooled (`ryzq.report.GroupReport`).
    #[getter]
    fn layers<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "layers", (slf,))
    }

    /// Every tensor in one group, their errors pooled.
    #[getter]
    fn total<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "total", (slf,))
    }

    /// The report as plain data: per tensor, per layer and for the whole file.
    fn to_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "report_dict", (slf,))
    }

    /// The report as JSON; written to `path` when given.
    #[pyo3(signature = (path=None))]
    fn to_json<'py>(
        slf: &Bound<'py, Self>,
        path: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "report_json", (slf, path))
    }

    /// A readable table: totals, then one line per layer.
    fn summary<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        in_report_py(slf.py(), "summary", (slf,))
    }

    fn __str__(slf: &Bound<'_, Self>) -> PyResult<String> {
        in_report_py(slf.py(), "summary", (slf,))?.extract()
    }
}
