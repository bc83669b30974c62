//! How the scale of a group of weights is chosen.

use crate::error::{Error, Result};

/// One group's quantizer: `code = clamp(round_half_even(w * inv), -1, 1)`, `w' = code * scale`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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

    /// The quantizer of least squared error for a group whose `|w|`, sorted in decreasing
    /// order, are `sorted`: with `S_k` the sum of the `k` largest, the `k` maximizing
    /// `S_k^2 / k` gives the scale `a = S_k / k`, which minimizes `sum (w - a code)^2` over every
    /// scale and threshold. Its codes are exactly `|w| > a / 2`: at the optimum the `k`-th
    /// largest is above `a / 2` and the next below it (each by about `a / 8k`), so the usual
    /// `w * (1/a)` against 0.5 selects the same values. An all-zero group gets scale 0.
    #[must_use]
    pub fn optimal(sorted: &[f32]) -> Self {
        let (mut sum, mut best, mut best_sum, mut best_k) = (0.0f64, 0.0f64, 0.0f64, 1usize);
        for (i, &v) in sorted.iter().enumerate() {
            sum += f64::from(v);
            let k = i + 1;
            // Only where the next value is smaller can a threshold separate the k largest.
            if sorted
                .get(k)
                .is_some_and(|next| next.to_bits() == v.to_bits())
            {
                continue;
            }
            let gain = sum * sum / k as f64;
            if gain > best {
                (best, best_sum, best_k) = (gain, sum, k);
            }
        }
        Self::from_optimum(best_sum, best_k as u64)
    }

    /// The quantizer whose nonzero codes are the `k` largest `|w|`, summing to `sum`: scale
    /// `sum / k`. A zero scale (an all-zero group) gets `inv = 0`: zero codes.
    #[must_use]
    pub fn from_optimum(sum: f64, k: u64) -> Self {
        let scale = (sum / k as f64) as f32;
        if scale > 0.0 && (1.0 / scale).is_finite() {
            Self {
                inv: 1.0 / scale,
                scale,
            }
        } else {
            Self {
                inv: 0.0,
                scale: 0.0,
            }
        }
    }

    /// ggml's absmax quantizer of a group from its `max |w|`: `inv = 1 / max`, `scale = max`.
    /// A group whose max is 0, or so small (below 2^-128) that `1 / max` overflows, gets
    /// `inv = scale = 0`: zero codes, as ggml gives an all-zero block. (ggml itself multiplies
    /// by the infinite inverse there, which makes every nonzero value a +-1.)
    #[must_use]
    pub fn absmax(max: f32) -> Self {
        let inv = 1.0 / max;
        if inv.is_finite() {
            Self { inv, scale: max }
        } else {
            Self {
                inv: 0.0,
                scale: 0.0,
            }
        }
    }
}

/// How a code is rounded when `w * inv` lies exactly halfway, at +-0.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ties {
    /// To even: 0 (torch's `round`, BitNet).
    Even,
    /// Away from zero: +-1 (C's `lroundf`, ggml).
    Away,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// BitNet b1.58: scale = mean |w|, ties to even.
    AbsMean,
    /// ggml's TQ1_0 / TQ2_0: scale = max |w|, ties away from zero.
    AbsMax,
    /// The scale and threshold of least squared error.
    Optimal,
}

impl Method {
    pub const ALL: &'static [Method] = &[Method::AbsMean, Method::AbsMax, Method::Optimal];

    /// Names are case-insensitive.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "absmean" => Ok(Method::AbsMean),
            "absmax" => Ok(Method::AbsMax),
            "optimal" => Ok(Method::Optimal),
            other => Err(Error::InvalidArgument(format!(
                "unknown method {other:?}: expected absmean, absmax or optimal"
            ))),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Method::AbsMean => "absmean",
            Method::AbsMax => "absmax",
            Method::Optimal => "optimal",
        }
    }

    /// The rounding of halfway values in the reference implementation of the method.
    #[must_use]
    pub fn ties(self) -> Ties {
        match self {
            Method::AbsMean | Method::Optimal => Ties::Even,
            Method::AbsMax => Ties::Away,
        }
    }
}

/// Which weights share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per index of dim 0 (per output channel of a linear layer); a 1-D tensor is
    /// one row.
    Row,
    /// One scale per `n` consecutive values of a row (of the last dimension).
    Group(usize),
}

/// The group sizes `group:N` accepts.
pub const GROUP_SIZES: std::ops::RangeInclusive<usize> = 32..=4096;

impl Granularity {
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "unknown granularity {name:?}: expected tensor, row or group:N with N from {} \
                 to {}",
                GROUP_SIZES.start(),
                GROUP_SIZES.end()
            ))
        };
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "tensor" => Ok(Granularity::Tensor),
            "row" => Ok(Granularity::Row),
            _ => {
                let n: usize = lower
                    .strip_prefix("group:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if GROUP_SIZES.contains(&n) {
                    Ok(Granularity::Group(n))
                } else {
                    Err(bad())
                }
            }
        }
    }

    #[must_use]
    pub fn name(self) -> String {
        match self {
            Granularity::Tensor => "tensor".into(),
            Granularity::Row => "row".into(),
            Granularity::Group(n) => format!("group:{n}"),
        }
    }

    /// `(number of groups, values per group)` for a tensor of `shape`. Groups are
    /// consecutive runs of the flat tensor. A tensor without elements (or dimensions) has no
    /// groups: an error, as it is for every operation that needs them.
    pub fn groups(self, shape: &[usize]) -> Result<(usize, usize)> {
        let numel = crate::layout::require_nonempty(shape)?;
        match self {
            Granularity::Tensor => Ok((1, numel)),
            // A 1-D tensor is one row, as it is for `group:N`.
            Granularity::Row if shape.len() == 1 => Ok((1, numel)),
            Granularity::Row => Ok((shape[0], numel / shape[0])),
            Granularity::Group(n) => {
                let row = shape.last().copied().unwrap_or(1);
                if row.is_multiple_of(n) {
                    Ok((numel / n, n))
                } else {
                    Err(Error::Shape(format!(
                        "rows of {row} values (shape {shape:?}) do not split into groups of {n}"
                    )))
                }
            }
        }
    }
}
