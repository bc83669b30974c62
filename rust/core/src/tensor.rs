//! A borrowed view of stored weights: raw little-endian bytes, a dtype and a shape.

use std::ops::Range;

use crate::dtype::FloatDType;
use crate::error::{Error, Index, Result};
use crate::kernels::Raw;
use crate::kernels::widen::for_each_chunk;

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
        Error::check_size(bytes.len(), numel * dtype.size(), || {
            format!("{} tensor of shape {shape:?}", dtype.name())
        })?;
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

    /// The stored values `range`, for the kernels.
    #[must_use]
    pub fn raw(&self, range: Range<usize>) -> Raw<'a> {
        Raw::new(self.bytes, self.dtype).slice(range)
    }

    /// Counts NaN and infinite values; called only once a sum has shown there are some.
    #[must_use]
    pub fn non_finite_error(&self) -> Error {
        let mut count = 0u64;
        let mut first = None;
        let mut index = 0;
        for_each_chunk(self.raw(0..self.numel()), |values| {
            for &v in values {
                if !v.is_finite() {
                    count += 1;
                    first.get_or_insert((index, v));
                }
                index += 1;
            }
        });
        let (flat, value) = first.expect("called only when a value is not finite");
        Error::NonFinite {
            count,
            first: Index::from_flat(flat, self.shape),
            value,
        }
    }
}
