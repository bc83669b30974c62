//! Which instruction set the kernels use. Detected once; `RYZQ_SIMD` or a per-call argument can
//! force a lower level, never one the processor lacks.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A kernel level. A value of this type is only ever created for a level the running processor
/// supports (see [`SimdLevel::supported`]), which is what makes dispatching on it sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimdLevel(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Level {
    Scalar,
    Avx2,
    Avx512,
}

impl SimdLevel {
    pub const SCALAR: SimdLevel = SimdLevel(Level::Scalar);

    pub(crate) fn level(self) -> Level {
        self.0
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Every level this processor runs, lowest first.
    #[must_use]
    pub fn supported() -> Vec<SimdLevel> {
        let mut levels = vec![SimdLevel(Level::Scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            // The AVX2 kernels also widen float16 with F16C, count codes with POPCNT and sum
            // squares with FMA (every AVX2 processor has the three).
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                levels.push(SimdLevel(Level::Avx2));
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    levels.push(SimdLevel(Level::Avx512));
                }
            }
        }
        levels
    }

    /// The best supported level.
    #[must_use]
    pub fn best() -> SimdLevel {
        *Self::supported()
            .last()
            .expect("scalar is always supported")
    }

    /// Parses a level name, refusing one this processor cannot run.
    pub fn parse(name: &str) -> Result<SimdLevel> {
        let wanted = match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Level::Scalar,
            "avx2" => Level::Avx2,
            "avx512" => Level::Avx512,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown SIMD level {other:?}: expected scalar, avx2 or avx512"
                )));
            }
        };
        let supported = Self::supported();
        supported
            .iter()
            .copied()
            .find(|level| level.0 == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = supported.iter().map(|l| l.name()).collect();
                Error::InvalidArgument(format!(
                    "SIMD level {name:?} is not supported by this processor (supported: {})",
                    names.join(", ")
                ))
            })
    }

    /// The level in use: `RYZQ_SIMD` if set, else the best supported. Read once per process.
    pub fn current() -> Result<SimdLevel> {
        static CURRENT: OnceLock<std::result::Result<SimdLevel, String>> = OnceLock::new();
        CURRENT
            .get_or_init(|| match std::env::var("RYZQ_SIMD") {
                Ok(name) if !name.trim().is_empty() => {
                    Self::parse(&name).map_err(|e| format!("RYZQ_SIMD: {e}"))
                }
                _ => Ok(Self::best()),
            })
            .clone()
            .map_err(Error::InvalidArgument)
    }

    /// `name` if given, else [`SimdLevel::current`].
    pub fn resolve(name: Option<&str>) -> Result<SimdLevel> {
        name.map_or_else(Self::current, Self::parse)
    }
}
