//! The one error type of ryzq. Every failure a user can cause is a variant here; the Python
//! bindings map all of them to `ryzq.RyzqError`.

use std::fmt;

/// A multi-dimensional index, printed the way numpy users write it: `(2, 5)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index(pub Vec<usize>);

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{v}")?;
        }
        if self.0.len() == 1 {
            write!(f, ",")?;
        }
        write!(f, ")")
    }
}

impl Index {
    /// The row-major index of flat position `flat` in a tensor of `shape`.
    #[must_use]
    pub fn from_flat(mut flat: usize, shape: &[usize]) -> Self {
        let mut index = vec![0; shape.len()];
        for (slot, &dim) in index.iter_mut().zip(shape).rev() {
            if dim > 0 {
                *slot = flat % dim;
                flat /= dim;
            }
        }
        Index(index)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument outside the values ryzq accepts (a layout name, a dtype, a SIMD level).
    #[error("{0}")]
    InvalidArgument(String),

    /// A shape the chosen layout or operation cannot take.
    #[error("{0}")]
    Shape(String),

    /// A scale that its storage (a float16 block scale, a bf16 `weight_scale`) cannot hold:
    /// stored, it would become infinite or zero and change every weight it scales.
    #[error("{0}")]
    ScaleRange(String),

    /// Quantizing NaN or infinity gives no meaningful ternary tensor.
    #[error(
        "{count} non-finite value{plural} (NaN or infinity) in the weights; the first is {value} at index {first}",
        plural = if *count == 1 { "" } else { "s" }
    )]
    NonFinite {
        count: u64,
        first: Index,
        value: f32,
    },

    /// Codes given to `pack` must be ternary.
    #[error("invalid ternary code {value} at index {index}: codes must be -1, 0 or 1")]
    InvalidCode { value: i8, index: Index },

    /// Packed bytes that no ternary tensor packs to: a 2-bit field of 0b11, a base-3 byte that
    /// is no `ceil(q * 256 / 243)`, or one whose padding digits are not code 0.
    #[error(
        "corrupt packed {layout} data: byte {byte} ({value:#04x}) is not one any ternary codes pack to"
    )]
    CorruptPacked {
        layout: &'static str,
        byte: usize,
        value: u8,
    },

    /// A buffer whose length does not match the shape and dtype it comes with.
    #[error("{what} has {actual} bytes, expected {expected}")]
    Size {
        what: String,
        actual: usize,
        expected: usize,
    },

    /// A file name taken from a file's content that would reach outside its folder.
    #[error("{0}")]
    UnsafePath(String),

    /// A safetensors file whose header or layout breaks the format's rules.
    #[error("{0}")]
    Format(String),

    /// A file that ends before its own header says it does.
    #[error("{0}")]
    Truncated(String),

    /// An operating-system error on a path.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Another error, with the file and (where there is one) the tensor it happened in.
    #[error("{path}: {}{source}", tensor.as_ref().map(|t| format!("tensor {t:?}: ")).unwrap_or_default())]
    InFile {
        path: String,
        tensor: Option<String>,
        source: Box<Error>,
    },

    /// The caller asked to stop (an interrupt from Python).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// A short, stable word for what went wrong, for callers that branch on it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Shape(_) => "bad_shape",
            Error::ScaleRange(_) => "scale_range",
            Error::NonFinite { .. } => "non_finite",
            Error::InvalidCode { .. } => "invalid_code",
            Error::CorruptPacked { .. } => "corrupt_packed",
            Error::Size { .. } => "bad_size",
            Error::UnsafePath(_) => "unsafe_path",
            Error::Format(_) => "bad_format",
            Error::Truncated(_) => "truncated",
            Error::Io { .. } => "io",
            Error::InFile { source, .. } => source.kind(),
            Error::Interrupted => "interrupted",
        }
    }

    /// The file the error is about, where there is one.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::InFile { path, .. } | Error::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The tensor the error is about, where there is one.
    #[must_use]
    pub fn tensor(&self) -> Option<&str> {
        match self {
            Error::InFile { tensor, .. } => tensor.as_deref(),
            _ => None,
        }
    }

    /// Names the file and tensor this error happened in.
    #[must_use]
    pub fn in_file(self, path: &std::path::Path, tensor: Option<&str>) -> Self {
        match self {
            already @ (Error::InFile { .. } | Error::Interrupted | Error::Io { .. }) => already,
            other => Error::InFile {
                path: path.display().to_string(),
                tensor: tensor.map(str::to_owned),
                source: Box::new(other),
            },
        }
    }

    /// Fails with [`Error::Size`] unless a buffer of `what()` has the `expected` length.
    pub(crate) fn check_size(
        actual: usize,
        expected: usize,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        if actual == expected {
            Ok(())
        } else {
            Err(Error::Size {
                what: what(),
                actual,
                expected,
            })
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
