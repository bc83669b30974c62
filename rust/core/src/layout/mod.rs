//! Packed layouts of ternary codes. Each layout says how big the packed tensor is, how the tensor
//! splits into independent tiles, and how to pack and unpack one tile; the quantize and
//! dequantize drivers need nothing else, so a new layout is one more implementation of
//! [`PackedLayout`].

use std::ops::Range;

use crate::error::{Error, Result};
use crate::simd::SimdLevel;

pub mod bitnet;
pub mod i2;
pub mod t1;

/// About how many values one tile holds: small enough for the codes, the widened input and the
/// packed bytes of a tile to stay in L2, large enough to amortize the per-tile work.
pub const TILE_VALUES: usize = 16 * 1024;

/// An independent unit of packing work.
///
/// The tile's codes are its `segments` (flat element ranges of the tensor) laid end to end; they
/// pack into the bytes `packed` of the packed tensor. Tiles of a tensor are listed in the order of
/// their `packed` ranges, which partition the packed tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub segments: Vec<Range<usize>>,
    pub packed: Range<usize>,
}

impl Tile {
    #[must_use]
    pub fn len(&self) -> usize {
        self.segments.iter().map(ExactSizeIterator::len).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub trait PackedLayout: Sync {
    fn name(&self) -> &'static str;

    /// The shape of the packed uint8 tensor, or why `shape` cannot use this layout.
    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>>;

    /// The tiles of a tensor of `shape` (already accepted by [`Self::packed_shape`]).
    fn tiles(&self, shape: &[usize]) -> Vec<Tile>;

    /// Packs one tile. Returns false if a code is not -1, 0 or 1 (then `out` is unspecified).
    fn pack(&self, level: SimdLevel, codes: &[i8], out: &mut [u8]) -> bool;

    /// Unpacks one tile. Returns false if `data` holds a bit pattern no code packs to.
    fn unpack(&self, level: SimdLevel, data: &[u8], codes: &mut [i8]) -> bool;
}

/// The layouts ryzq knows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// transformers' BitNet layout: 2 bits, striped along dim 0.
    Bitnet,
    /// 2 bits per value, 4 consecutive values per byte.
    I2,
    /// Base-3, 5 values per byte (1.6 bits per value).
    T1,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Bitnet, Layout::I2, Layout::T1];

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown layout {name:?}: expected one of bitnet, i2, t1"
                ))
            })
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        self.get().name()
    }

    #[must_use]
    pub fn get(self) -> &'static dyn PackedLayout {
        match self {
            Layout::Bitnet => &bitnet::Bitnet,
            Layout::I2 => &i2::I2,
            Layout::T1 => &t1::T1,
        }
    }
}

/// Tiles of a layout that packs the flat tensor in order: `block` values make `block_bytes`
/// bytes, and a tile is a whole number of blocks (except the last).
pub(crate) fn flat_tiles(numel: usize, block: usize, per_byte: usize) -> Vec<Tile> {
    let step = (TILE_VALUES / block).max(1) * block;
    (0..numel)
        .step_by(step)
        .map(|start| {
            let end = (start + step).min(numel);
            Tile {
                segments: std::iter::once(start..end).collect(),
                packed: start / per_byte..end.div_ceil(per_byte),
            }
        })
        .collect()
}

pub fn require_nonempty(shape: &[usize]) -> Result<usize> {
    if shape.is_empty() {
        return Err(Error::Shape(
            "a 0-d (scalar) tensor cannot be quantized: give at least one dimension".into(),
        ));
    }
    let numel: usize = shape.iter().product();
    if numel == 0 {
        return Err(Error::Shape(format!(
            "tensor of shape {shape:?} has no elements"
        )));
    }
    Ok(numel)
}
