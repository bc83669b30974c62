//! How the scales of a quantized tensor, and the biases of `AutoBitLinear` layers, are stored:
//! rounded to their storage's type, refused where that type cannot hold them.

use crate::dtype::{FloatDType, StoredType};
use crate::error::{Error, Result};
use crate::kernels::widen::widen;
use crate::metadata::ScaleConvention;
use crate::method::TernaryScale;
use crate::quantize::check_stored_scales;
use crate::simd::SimdLevel;

/// How the scales of one quantized tensor are stored, in a tensor of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleStorage {
    pub name: String,
    pub dtype: StoredType,
    pub convention: ScaleConvention,
}

/// The float type of a scale's or a bias's storage.
pub(crate) fn stored_type(dtype: StoredType) -> FloatDType {
    dtype
        .float()
        .expect("scales and biases are stored as floats")
}

/// The values to store for `scales`, and the scales adjusted to what the stored values mean
/// once rounded to their dtype, so that the reported error is that of the file as written.
pub fn stored_scales(storage: &ScaleStorage, scales: &mut [TernaryScale]) -> Result<Vec<f32>> {
    let mut stored = Vec::with_capacity(scales.len());
    for s in scales.iter_mut() {
        let value = match storage.convention {
            ScaleConvention::Divide => {
                let inv = stored_type(storage.dtype).round(s.inv);
                check_stored_scales(&[s.inv], &[inv], "group", || {
                    format!(
                        "a {} weight_scale, which holds 1/absmean for linear_class bitlinear; \
                         linear_class autobitlinear stores absmean instead",
                        storage.dtype
                    )
                })?;
                s.scale = 1.0 / inv;
                inv
            }
            ScaleConvention::Multiply => {
                let scale = stored_type(storage.dtype).round(s.scale);
                check_stored_scales(&[s.scale], &[scale], "group", || {
                    format!(
                        "a {} weight_scale; layouts i2 and t1 store float32 scales",
                        storage.dtype
                    )
                })?;
                s.scale = scale;
                scale
            }
        };
        stored.push(value);
    }
    Ok(stored)
}

/// `bias / divisor` (the bias of an `AutoBitLinear` layer), rounded to the bias's own dtype.
pub fn divide_bias(
    level: SimdLevel,
    dtype: FloatDType,
    bytes: &[u8],
    divisor: f32,
) -> Result<Vec<u8>> {
    let mut values = vec![0f32; bytes.len() / dtype.size()];
    widen(level, dtype, bytes, &mut values);
    for v in &mut values {
        *v /= divisor;
    }
    let stored: Vec<f32> = values.iter().map(|&v| dtype.round(v)).collect();
    if let Some(i) = stored.iter().position(|v| !v.is_finite()) {
        return Err(Error::ScaleRange(format!(
            "value {i} divided by its weight's scale {divisor} is {}, which {} cannot hold \
             (autobitlinear stores the bias divided by weight_scale); use linear_class \
             bitlinear, which stores the bias as it is",
            values[i],
            dtype.name()
        )));
    }
    Ok(dtype.encode(&stored))
}

/// `bytes` of a `from` tensor as `to`, each value multiplied by `factor` (if any) in float32
/// and rounded to nearest. In chunks, in parallel: an embedding of hundreds of megabytes is
/// never widened whole.
pub fn convert_float(
    level: SimdLevel,
    from: FloatDType,
    to: FloatDType,
    bytes: &[u8],
    factor: Option<f32>,
) -> Vec<u8> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let n = bytes.len() / from.size();
    let mut out = vec![0u8; n * to.size()];
    out.par_chunks_mut(CHUNK * to.size())
        .zip(bytes.par_chunks(CHUNK * from.size()))
        .for_each(|(out, input)| {
            let mut values = vec![0f32; input.len() / from.size()];
            widen(level, from, input, &mut values);
            if let Some(factor) = factor {
                for v in &mut values {
                    *v *= factor;
                }
            }
            to.encode_into(&values, out);
        });
    out
}
