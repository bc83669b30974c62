//! Error statistics of a quantized tensor.

/// Sums over a set of values `w` and their dequantized `w'`, combined in a fixed order so that
/// the result does not depend on the SIMD level or the number of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorStats {
    pub numel: u64,
    /// `sum((w - w')^2)`
    pub sse: f64,
    /// `sum(w^2)`
    pub sum_sq: f64,
    /// `max |w - w'|`
    pub max_abs_error: f32,
    /// How many codes are -1, 0 and +1.
    pub counts: [u64; 3],
}

impl ErrorStats {
    pub fn merge(&mut self, other: &ErrorStats) {
        self.numel += other.numel;
        self.sse += other.sse;
        self.sum_sq += other.sum_sq;
        self.max_abs_error = self.max_abs_error.max(other.max_abs_error);
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    #[must_use]
    pub fn mse(&self) -> f64 {
        if self.numel == 0 {
            0.0
        } else {
            self.sse / self.numel as f64
        }
    }

    /// `mse / mean(w^2)`; 0 for an all-zero tensor, which quantizes without error.
    #[must_use]
    pub fn nmse(&self) -> f64 {
        if self.sum_sq > 0.0 {
            self.sse / self.sum_sq
        } else {
            0.0
        }
    }

    /// `10 log10(sum(w^2) / sse)`: infinite without error, minus infinite for an all-zero
    /// tensor that has some (which no quantizer here produces).
    #[must_use]
    pub fn snr_db(&self) -> f64 {
        if self.sse == 0.0 {
            f64::INFINITY
        } else if self.sum_sq == 0.0 {
            f64::NEG_INFINITY
        } else {
            10.0 * (self.sum_sq / self.sse).log10()
        }
    }

    #[must_use]
    pub fn zeros_fraction(&self) -> f64 {
        if self.numel == 0 {
            0.0
        } else {
            self.counts[1] as f64 / self.numel as f64
        }
    }
}
