//! How the scale of a group of weights is chosen.

use crate::error::{Error, Result};

/// One group's quantizer: `code = clamp(round_half_even(w * inv), -1, 1)`, `w' = code * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TernaryScale {
    pub inv: f32,
    pub scale: f32,
}

impl TernaryScale {
    /// BitNet b1.58's absmean quantizer from a group's `sum(|w|)` and size, in float32 as the
    /// reference does: `inv = 1 / max(mean, 1e-5)`, `scale = 1 / inv` (so `w' = code / inv`).
    ///
    /// The mean is the float64 sum divided by `n`, rounded once to float32: a correctly rounded
    /// mean rather than torch's float32 reduction, whose rounding depends on its summation
    /// order. The two can differ by one ulp, which changes a code only for a weight that sits
    /// exactly on a rounding boundary.
    #[must_use]
    pub fn absmean(abs_sum: f64, n: usize) -> Self {
        let mean = (abs_sum / n as f64) as f32;
        let inv = 1.0 / mean.max(1e-5);
        Self {
            inv,
            scale: 1.0 / inv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// BitNet b1.58: scale = mean |w|.
    AbsMean,
}

impl Method {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "absmean" => Ok(Method::AbsMean),
            other => Err(Error::InvalidArgument(format!(
                "unknown method {other:?}: expected absmean"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Method::AbsMean => "absmean",
        }
    }
}

/// Which weights share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per index of dim 0 (per output channel of a linear layer).
    Row,
}

impl Granularity {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "tensor" => Ok(Granularity::Tensor),
            "row" => Ok(Granularity::Row),
            other => Err(Error::InvalidArgument(format!(
                "unknown granularity {other:?}: expected tensor or row"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Tensor => "tensor",
            Granularity::Row => "row",
        }
    }

    /// `(number of groups, values per group)` for a non-empty tensor of `shape`. Groups are
    /// consecutive runs of the flat tensor.
    #[must_use]
    pub fn groups(self, shape: &[usize]) -> (usize, usize) {
        let numel: usize = shape.iter().product();
        match self {
            Granularity::Tensor => (1, numel),
            Granularity::Row => (shape[0], numel / shape[0]),
        }
    }
}
