//! A borrowed view of stored weights: raw little-endian bytes, a dtype and a shape.

use std::ops::Range;

use crate::dtype::FloatDType;
use crate::error::{Error, Index, Result};
use crate::kernels::widen::widen;
use crate::simd::SimdLevel;

#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    bytes: &'a [u8],
    dtype: FloatDType,
    shape: &'a [usize],
}

impl<'a> TensorView<'a> {
    /// Checks that `bytes` holds exactly the values of `shape` in `dtype`.
    pub fn new(bytes: &'a [u8], dtype: FloatDType, shape: &'a [usize]) -> Result<Self> {
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Error::Shape(format!("shape {shape:?} has too many elements")))?;
        let expected = numel * dtype.size();
        if bytes.len() != expected {
            return Err(Error::Size {
                what: format!("{} tensor of shape {shape:?}", dtype.name()),
                actual: bytes.len(),
                expected,
            });
        }
        Ok(Self {
            bytes,
            dtype,
            shape,
        })
    }

    #[must_use]
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    #[must_use]
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    #[must_use]
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// The values `range` as float32: borrowed when stored as aligned float32, else widened
    /// into `scratch`.
    pub fn f32_values<'s>(
        &self,
        level: SimdLevel,
        range: Range<usize>,
        scratch: &'s mut Vec<f32>,
    ) -> &'s [f32]
    where
        'a: 's,
    {
        let size = self.dtype.size();
        let bytes = &self.bytes[range.start * size..range.end * size];
        if self.dtype == FloatDType::F32
            && let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes)
        {
            return values;
        }
        scratch.resize(range.len(), 0.0);
        widen(level, self.dtype, bytes, scratch);
        scratch
    }

    /// Counts NaN and infinite values; called only once a sum has shown there are some.
    pub fn non_finite_error(&self, level: SimdLevel) -> Error {
        let mut scratch = Vec::new();
        let mut count = 0u64;
        let mut first = None;
        let step = 1 << 16;
        for start in (0..self.numel()).step_by(step) {
            let end = (start + step).min(self.numel());
            for (i, &v) in self
                .f32_values(level, start..end, &mut scratch)
                .iter()
                .enumerate()
            {
                if !v.is_finite() {
                    count += 1;
                    first.get_or_insert((start + i, v));
                }
            }
        }
        let (flat, value) = first.expect("called only when a value is not finite");
        Error::NonFinite {
            count,
            first: Index::from_flat(flat, self.shape),
            value,
        }
    }
}
