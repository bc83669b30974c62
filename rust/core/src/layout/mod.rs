//! Packed layouts of ternary codes. Each layout says how big the packed tensor is, how the tensor
//! splits into independent tiles, and how to pack and unpack one tile; the quantize and
//! dequantize drivers need nothing else, so a new layout is one more implementation of
//! [`PackedLayout`].

use std::ops::Range;

use half::slice::HalfFloatSliceExt;

use crate::error::{Error, Result};
use crate::method::{Granularity, Method};
use crate::simd::SimdLevel;

pub mod bitnet;
pub mod i2;
pub mod i2_s;
pub mod q2_0;
pub mod q8_0;
pub mod t1;
pub mod tq;

/// About how many values one tile holds: small enough for the codes, the widened input and the
/// packed bytes of a tile to stay in L2, large enough to amortize the per-tile work.
pub const TILE_VALUES: usize = 16 * 1024;

/// An independent unit of packing work: the values `values` of the flat tensor, whose codes
/// pack into the bytes `packed`.
///
/// A layout that stores values from distant places of the tensor in one byte (bitnet: four
/// rows) packs each byte in `parts`: tile of part `k` writes its own bits of its bytes, which
/// start zeroed. Tiles of one part write disjoint bytes and may run in parallel; parts run one
/// after the other. [`PackedLayout::tiles`] lists tiles by part, and within a part in the order
/// of their `packed` ranges, which cover the packed tensor but its
/// [`PackedLayout::tensor_scale_len`] last bytes. Every value is in exactly one tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub values: Range<usize>,
    pub packed: Range<usize>,
    pub part: usize,
}

/// A packed layout. Besides its shapes and tiles, a layout states the packed length of a tile
/// ([`Self::packed_len`]), its kernels at each SIMD level ([`Self::pack_codes`],
/// [`Self::unpack_codes`]) and, where the defaults do not fit, how to find a corrupt byte
/// ([`Self::first_corrupt_byte`]) and where block scales go ([`Self::put_scales`]);
/// [`Self::pack`] and [`Self::unpack`] check the lengths, call those and name the corrupt byte.
pub trait PackedLayout: Sync {
    fn name(&self) -> &'static str;

    /// One line on what the layout is and who reads it (the CLI's help, `ryzq info`).
    fn description(&self) -> &'static str;

    /// The shapes the layout takes, in words.
    fn shape_rule(&self) -> &'static str;

    /// The GGML type id of the layout's blocks in a GGUF file, if it has one.
    fn gguf_type(&self) -> Option<u32> {
        None
    }

    /// Packed bits per value, block scales included (scales kept apart are not), from the
    /// layout's own packed size of a tensor every layout takes.
    fn bits_per_value(&self) -> f64 {
        let shape = [4, 256 * 160];
        let packed: usize = self
            .packed_shape(&shape)
            .expect("every layout takes this shape")
            .iter()
            .product();
        packed as f64 * 8.0 / (shape[0] * shape[1]) as f64
    }

    /// The shape of the packed uint8 tensor, or why `shape` cannot use this layout.
    fn packed_shape(&self, shape: &[usize]) -> Result<Vec<usize>>;

    /// The tiles of a tensor of `shape` (already accepted by [`Self::packed_shape`]).
    fn tiles(&self, shape: &[usize]) -> Vec<Tile>;

    /// For a layout that stores a float16 scale in every block of values (GGUF's TQ1_0,
    /// TQ2_0 and Q2_0), the block size: its groups are whole blocks. `None`: the scales are kept apart,
    /// in a tensor of their own.
    fn block(&self) -> Option<usize> {
        None
    }

    /// Replaces each scale by the value it has once stored (GGUF blocks keep it as float16).
    fn store_scales(&self, _scales: &mut [f32]) {}

    /// The scales stored in packed data: each block's for a layout that has [`Self::block`],
    /// the tensor's one for a layout that has [`Self::tensor_scale_len`].
    fn block_scales(&self, _packed: &[u8]) -> Vec<f32> {
        Vec::new()
    }

    /// For a layout that stores the tensor's one scale in its packed data, after the codes
    /// (bitnet.cpp's I2_S), the number of bytes that hold it; 0 for the others. They are the
    /// last bytes of the packed tensor, in no tile; [`Self::put_tensor_scale`] writes them.
    /// Such a layout takes granularity tensor only.
    fn tensor_scale_len(&self) -> usize {
        0
    }

    /// Writes the tensor's stored `scale` into `out`, its last [`Self::tensor_scale_len`]
    /// bytes.
    fn put_tensor_scale(&self, _scale: f32, _out: &mut [u8]) {}

    /// The granularity of the scales the packed data holds: each block's for a layout that
    /// has [`Self::block`], the tensor's for one that has [`Self::tensor_scale_len`]; `None`
    /// where the scales are kept apart, in a tensor of their own.
    fn packed_granularity(&self) -> Option<Granularity> {
        match (self.block(), self.tensor_scale_len()) {
            (Some(block), _) => Some(Granularity::Group(block)),
            (None, 0) => None,
            (None, _) => Some(Granularity::Tensor),
        }
    }

    /// The number of bytes the codes of a tile of `values` values pack into: the length of
    /// its `packed` range.
    fn packed_len(&self, values: usize) -> usize;

    /// Packs the codes into `out` at `level` (the layout's kernel for it); returns false if a
    /// code is not -1, 0 or 1. Block scales are [`Self::put_scales`]' work.
    ///
    /// # Safety
    /// `out.len() == self.packed_len(codes.len())`, and `codes` are whole blocks for a layout
    /// with [`Self::block`]: the kernels rely on it, and [`Self::pack`] checks it.
    unsafe fn pack_codes(
        &self,
        level: SimdLevel,
        part: usize,
        codes: &[i8],
        out: &mut [u8],
    ) -> bool;

    /// Unpacks the codes from `data` at `level`; returns false if a byte holds a bit pattern no
    /// code packs to.
    ///
    /// # Safety
    /// As for [`Self::pack_codes`], with `data` for `out`; [`Self::unpack`] checks it.
    unsafe fn unpack_codes(
        &self,
        level: SimdLevel,
        part: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> bool;

    /// The offset in `data` (a tile's bytes, of `values` values) of the first byte holding a
    /// bit pattern no code packs to, if any. By default, the first byte with a 2-bit field
    /// of 0b11.
    fn first_corrupt_byte(&self, data: &[u8], _values: usize) -> Option<usize> {
        first_0b11_byte(data)
    }

    /// Writes the stored `scales` of a tile's blocks into its bytes `out`, for layouts that
    /// have [`Self::block`].
    fn put_scales(&self, _scales: &[f32], _out: &mut [u8]) {}

    /// Packs one tile's codes into its bytes `out` (for a layout of several parts, adds the
    /// tile's bits to `out`). `scales` are the stored scales of the tile's blocks, for layouts
    /// that have [`Self::block`]. Returns false if a code is not -1, 0 or 1.
    fn pack(
        &self,
        level: SimdLevel,
        part: usize,
        codes: &[i8],
        scales: &[f32],
        out: &mut [u8],
    ) -> bool {
        if let Some(block) = self.block() {
            assert_eq!(codes.len(), scales.len() * block, "one scale per block");
        }
        assert_eq!(out.len(), self.packed_len(codes.len()), "packed length");
        // SAFETY: the lengths are checked above.
        let valid = unsafe { self.pack_codes(level, part, codes, out) };
        self.put_scales(scales, out);
        valid
    }

    /// Unpacks one tile's codes from its bytes. Fails with the offset in `data` of the first
    /// byte holding a bit pattern no code packs to.
    fn unpack(
        &self,
        level: SimdLevel,
        part: usize,
        data: &[u8],
        codes: &mut [i8],
    ) -> std::result::Result<(), usize> {
        if let Some(block) = self.block() {
            assert!(codes.len().is_multiple_of(block), "whole blocks");
        }
        assert_eq!(data.len(), self.packed_len(codes.len()), "packed length");
        // SAFETY: the lengths are checked above.
        if unsafe { self.unpack_codes(level, part, data, codes) } {
            Ok(())
        } else {
            Err(self
                .first_corrupt_byte(data, codes.len())
                .expect("a kernel found a corrupt byte"))
        }
    }
}

/// Whether a byte of four 2-bit fields has one of 0b11, which no code packs to.
fn has_0b11_field(byte: u8) -> bool {
    (0..4).any(|k| (byte >> (2 * k)) & 0b11 == 0b11)
}

/// The offset of the first byte of `data` with a 2-bit field of 0b11.
pub(crate) fn first_0b11_byte(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| has_0b11_field(b))
}

/// The offset in `data`, whole blocks of `block_bytes` bytes, of the first corrupt byte, given
/// `find`, the offset of the first in one block.
pub(crate) fn first_in_blocks(
    data: &[u8],
    block_bytes: usize,
    find: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    data.chunks_exact(block_bytes)
        .enumerate()
        .find_map(|(b, block)| find(block).map(|m| b * block_bytes + m))
}

/// Stores `scales` as little-endian float16 at bytes `at..at + 2` of each block of
/// `block_bytes` bytes of `out`.
pub(crate) fn put_f16_scales(scales: &[f32], out: &mut [u8], block_bytes: usize, at: usize) {
    // Whole slices: one conversion call (and one check of the processor's F16C) for many.
    let mut halves = [half::f16::ZERO; 64];
    for (scales, out) in scales
        .chunks(halves.len())
        .zip(out.chunks_mut(block_bytes * halves.len()))
    {
        let halves = &mut halves[..scales.len()];
        halves.convert_from_f32_slice(scales);
        for (d, o) in halves.iter().zip(out.chunks_exact_mut(block_bytes)) {
            o[at..at + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
}

/// The packed shape of a layout that cuts rows into blocks of `block` values, `block_bytes`
/// bytes each (GGUF's block types), or why the rows of `shape` do not split into them.
pub(crate) fn block_shape(
    name: &str,
    block: usize,
    block_bytes: usize,
    shape: &[usize],
) -> Result<Vec<usize>> {
    require_nonempty(shape)?;
    let last = *shape.last().expect("at least one dimension");
    if !last.is_multiple_of(block) {
        return Err(Error::Shape(format!(
            "the {name} layout packs rows in blocks of {block} values, but the rows of shape \
             {shape:?} hold {last}"
        )));
    }
    let row_bytes = (last / block).checked_mul(block_bytes).ok_or_else(|| {
        Error::Shape(format!(
            "the {name} layout cannot hold rows of {last} values: their bytes overflow"
        ))
    })?;
    let mut packed = shape.to_vec();
    *packed.last_mut().expect("at least one dimension") = row_bytes;
    Ok(packed)
}

/// Rounds `scales` to float16 and back, as blocks that store a float16 scale keep them.
pub(crate) fn round_to_f16(scales: &mut [f32]) {
    // Whole slices: one conversion call (and one check of the processor's F16C) for many.
    let mut halves = [half::f16::ZERO; 64];
    for chunk in scales.chunks_mut(halves.len()) {
        let halves = &mut halves[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        halves.convert_to_f32_slice(chunk);
    }
}

/// The float16 scales at bytes `at..at + 2` of each block of `block_bytes` bytes of `packed`.
pub(crate) fn read_f16_scales(packed: &[u8], block_bytes: usize, at: usize) -> Vec<f32> {
    let halves: Vec<half::f16> = packed
        .chunks_exact(block_bytes)
        .map(|b| half::f16::from_le_bytes([b[at], b[at + 1]]))
        .collect();
    // One conversion call for all: one at a time costs more than the rest of a block.
    let mut scales = vec![0.0; halves.len()];
    halves.convert_to_f32_slice(&mut scales);
    scales
}

/// The registry of layouts: one line per layout names its variant of [`Layout`] and its
/// [`PackedLayout`]. Everything else ryzq says about a layout (in Python, the CLI's help, `ryzq
/// info`, the demo and the tests) is read from that implementation.
macro_rules! registry {
    ($($(#[$doc:meta])* $variant:ident => $imp:expr),* $(,)?) => {
        /// The layouts ryzq knows, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Layout {
            $($(#[$doc])* $variant),*
        }

        impl Layout {
            /// Every layout, in the order ryzq lists them.
            pub const ALL: &'static [Layout] = &[$(Layout::$variant),*];

            #[must_use]
            pub fn get(self) -> &'static dyn PackedLayout {
                match self {
                    $(Layout::$variant => &$imp),*
                }
            }
        }
    };
}

registry! {
    /// transformers' BitNet layout: 2 bits, striped along dim 0.
    Bitnet => bitnet::Bitnet,
    /// 2 bits per value, 4 consecutive values per byte.
    I2 => i2::I2,
    /// Base-3, 5 values per byte (1.6 bits per value).
    T1 => t1::T1,
    /// GGUF TQ2_0: blocks of 256 values in 66 bytes, a float16 scale each.
    Tq2_0 => tq::TQ2_0,
    /// GGUF TQ1_0: blocks of 256 values in 54 bytes, a float16 scale each.
    Tq1_0 => tq::TQ1_0,
    /// GGUF Q2_0: blocks of 64 values in 18 bytes, a float16 scale each.
    Q2_0 => q2_0::Q2_0,
    /// GGUF Q8_0 holding ternary codes: blocks of 32 values in 34 bytes, a float16 scale each.
    Q8_0 => q8_0::Q8_0,
    /// bitnet.cpp's I2_S for its x86 builds: blocks of 128 values, one float32 scale after the
    /// codes.
    I2S => i2_s::X86,
    /// bitnet.cpp's I2_S for its ARM builds: blocks of 64 values, one float32 scale after the
    /// codes.
    I2SArm => i2_s::ARM,
}

impl Layout {
    /// Names are case-insensitive, like every name ryzq takes.
    pub fn parse(name: &str) -> Result<Self> {
        let wanted = name.trim().to_ascii_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|l| l.name() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|l| l.name()).collect();
                Error::InvalidArgument(format!(
                    "unknown layout {name:?}: expected one of {}",
                    known.join(", ")
                ))
            })
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        self.get().name()
    }

    /// The granularity `method` uses in this layout unless asked otherwise: the quantizer the
    /// method comes from. BitNet b1.58 models are trained with one absmean scale per weight
    /// matrix, so absmean (and optimal) are per tensor in every layout, block layouts storing
    /// the tensor's scale in each block; absmax is ggml's per-block quantizer where the layout
    /// has blocks, per tensor elsewhere.
    #[must_use]
    pub fn default_granularity(self, method: Method) -> Granularity {
        match (method, self.get().block()) {
            (Method::AbsMax, Some(block)) => Granularity::Group(block),
            _ => Granularity::Tensor,
        }
    }
}

/// Tiles of a layout that packs the flat tensor in order, `block` values into `block_bytes`
/// bytes: a tile is a whole number of blocks (the last block may be shorter and take
/// `ceil(len * block_bytes / block)` bytes).
pub(crate) fn flat_tiles(numel: usize, block: usize, block_bytes: usize) -> Vec<Tile> {
    let step = (TILE_VALUES / block).max(1) * block;
    let bytes = |values: usize| {
        values / block * block_bytes + (values % block * block_bytes).div_ceil(block)
    };
    (0..numel)
        .step_by(step)
        .map(|start| {
            let end = (start + step).min(numel);
            Tile {
                values: start..end,
                packed: bytes(start)..bytes(end),
                part: 0,
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
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} has too many elements")))?;
    if numel == 0 {
        return Err(Error::Shape(format!(
            "tensor of shape {shape:?} has no elements"
        )));
    }
    Ok(numel)
}
