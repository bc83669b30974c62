//! Typed arguments: every name ryzq takes (layout, method, granularity, linear class, dtype,
//! SIMD level) and thread counts are parsed here, once, by the core's own parsers, so a mistake
//! gets one message whichever function it was passed to.

use pyo3::prelude::*;
use ryzq_core::plan::LinearClass;
use ryzq_core::plan::gguf::Fallback;
use ryzq_core::{FloatDType, Granularity, Layout, Method, SimdLevel};

use crate::{RyzqError, to_py};

/// A value that ryzq takes by name.
pub trait Named: Sized {
    /// What the argument is, for messages ("layout").
    const WHAT: &'static str;
    fn parse(name: &str) -> ryzq_core::Result<Self>;
}

impl Named for Layout {
    const WHAT: &'static str = "layout";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        Layout::parse(name)
    }
}

impl Named for Method {
    const WHAT: &'static str = "method";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        Method::parse(name)
    }
}

impl Named for Granularity {
    const WHAT: &'static str = "granularity";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        Granularity::parse(name)
    }
}

impl Named for LinearClass {
    const WHAT: &'static str = "linear_class";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        LinearClass::parse(name)
    }
}

impl Named for FloatDType {
    const WHAT: &'static str = "dtype";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        FloatDType::parse(name)
    }
}

impl Named for Fallback {
    const WHAT: &'static str = "fallback";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        Fallback::parse(name)
    }
}

impl Named for SimdLevel {
    const WHAT: &'static str = "simd";
    fn parse(name: &str) -> ryzq_core::Result<Self> {
        SimdLevel::parse(name)
    }
}

/// A `T` given by its name (any case).
pub struct Name<T>(pub T);

impl<'a, 'py, T: Named> FromPyObject<'a, 'py> for Name<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let text: String = obj.extract().map_err(|_| {
            RyzqError::new_err(format!(
                "{} must be a name (a string), got {}",
                T::WHAT,
                repr(obj)
            ))
        })?;
        T::parse(&text).map(Name).map_err(to_py)
    }
}

/// The SIMD level asked for, or the process's (`RYZQ_SIMD`, else the best there is).
pub fn level(simd: Option<Name<SimdLevel>>) -> PyResult<SimdLevel> {
    match simd {
        Some(Name(level)) => Ok(level),
        None => SimdLevel::current().map_err(to_py),
    }
}

/// A thread count: a positive integer. Taken as `Option<Threads>`, `None` (the default:
/// `RYZQ_NUM_THREADS`, else every core) never reaches it.
pub struct Threads(pub Option<usize>);

impl<'a, 'py> FromPyObject<'a, 'py> for Threads {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bad = || {
            RyzqError::new_err(format!(
                "threads must be a positive number of threads, got {}",
                repr(obj)
            ))
        };
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            return Err(bad());
        }
        match obj.extract::<i64>() {
            Ok(n) if n >= 1 => Ok(Threads(Some(usize::try_from(n).map_err(|_| bad())?))),
            _ => Err(bad()),
        }
    }
}

/// Glob patterns: none (`None`, the default), one (a string) or several (any iterable of
/// strings).
#[derive(Default)]
pub struct Patterns(pub Vec<String>);

impl<'a, 'py> FromPyObject<'a, 'py> for Patterns {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(Patterns::default());
        }
        if let Ok(one) = obj.extract::<String>() {
            return Ok(Patterns(vec![one]));
        }
        let bad = || {
            RyzqError::new_err(format!(
                "a glob pattern must be a string, or several an iterable of strings, got {}",
                repr(obj)
            ))
        };
        obj.try_iter()
            .map_err(|_| bad())?
            .map(|item| item.and_then(|p| p.extract::<String>()).map_err(|_| bad()))
            .collect::<PyResult<_>>()
            .map(Patterns)
    }
}

fn repr(obj: Borrowed<'_, '_, PyAny>) -> String {
    obj.repr()
        .map_or_else(|_| "an unprintable value".into(), |r| r.to_string())
}
