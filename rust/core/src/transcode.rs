//! Packed codes carried into another layout without a round trip through floats: the codes
//! are unpacked and packed again as they are, and each group of the target's granularity
//! takes the one scale its values have in the source. The error reported is that of the
//! target's stored scales against the source's own: 0 where they are the same numbers, the
//! rounding of a scale where the target stores it in a narrower type (float16 in GGUF blocks).

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::layout::{Layout, TILE_VALUES};
use crate::method::{Granularity, TernaryScale};
use crate::model::gguf::HeadPermutation;
use crate::plan::ScaleStorage;
use crate::plan::scales::stored_scales;
use crate::simd::SimdLevel;
use crate::stats::ErrorStats;
use crate::tensor::TensorView;

/// One group's scale in a source: `w = code * scale`, with the stored reciprocal where the
/// source stores that (`inv`), so that a scale stored as a reciprocal is carried over to
/// another reciprocal storage bit for bit.
pub type SourceScale = TernaryScale;

/// The scale of a source group stored as `stored` under `divides` (the stored value is
/// `1/scale`) or not.
#[must_use]
pub fn source_scale(stored: f32, divides: bool) -> SourceScale {
    if divides {
        TernaryScale {
            inv: stored,
            scale: 1.0 / stored,
        }
    } else {
        TernaryScale {
            inv: 1.0 / stored,
            scale: stored,
        }
    }
}

/// The result of carrying one tensor over.
#[derive(Debug, Clone)]
pub struct Transcoded {
    pub packed: Vec<u8>,
    /// The values of its scale tensor, for a layout that keeps its scales apart.
    pub stored: Vec<f32>,
    /// Each target group's scale once stored (`w' = code * scale`).
    pub scales: Vec<f32>,
    pub stats: ErrorStats,
}

/// The values of a tensor whose codes are carried over: its codes, shape, source granularity
/// and scales.
pub struct Codes<'a> {
    pub codes: Vec<i8>,
    pub shape: &'a [usize],
    pub granularity: Granularity,
    pub scales: Vec<SourceScale>,
}

impl Codes<'_> {
    /// Reorders the rows (llama's q and k into GGUF's order, or back; see
    /// [`HeadPermutation`]), the scales with them.
    pub fn reorder_rows(&mut self, order: HeadPermutation) -> Result<()> {
        let (rows, cols) = match self.shape {
            [rows, cols] => (*rows, *cols),
            _ => {
                return Err(Error::Shape(format!(
                    "shape {:?}: only 2-D weights are permuted",
                    self.shape
                )));
            }
        };
        self.codes = order.apply(&self.codes, rows, cols)?;
        let (_, group_len) = self.granularity.groups(self.shape)?;
        if group_len < rows * cols {
            if !cols.is_multiple_of(group_len) {
                return Err(Error::Shape(format!(
                    "its scales (per {}) are not whole rows' and cannot be permuted with them",
                    self.granularity.name()
                )));
            }
            self.scales = order.apply(&self.scales, rows, cols / group_len)?;
        }
        Ok(())
    }
}

/// Consecutive values lying in one source group and one target group, and how many of their
/// codes are -1, 0 and +1.
struct Run {
    from: usize,
    to: usize,
    counts: [u64; 3],
}

/// The runs of `codes` for groups of `from_len` and `to_len` values, at most a tile each so
/// that they are counted in parallel.
fn runs(codes: &[i8], from_len: usize, to_len: usize) -> Vec<Run> {
    use rayon::prelude::*;
    let mut bounds = Vec::with_capacity(codes.len() / from_len.min(to_len).min(TILE_VALUES) + 1);
    let mut start = 0;
    while start < codes.len() {
        let (from, to) = (start / from_len, start / to_len);
        let end = ((from + 1) * from_len)
            .min((to + 1) * to_len)
            .min(start + TILE_VALUES);
        bounds.push((from, to, start..end));
        start = end;
    }
    bounds
        .into_par_iter()
        .map(|(from, to, range)| Run {
            from,
            to,
            counts: count_codes(&codes[range]),
        })
        .collect()
}

/// How many of `codes` (each -1, 0 or +1) are -1, 0 and +1. Byte lanes count the nonzero
/// (low bit set: -1 and +1 alike) and positive codes of 32 values at a time, emptied into
/// wide totals before they can overflow: a loop the compiler turns into byte-wise vector adds
/// at any SIMD level.
pub(crate) fn count_codes(codes: &[i8]) -> [u64; 3] {
    const LANES: usize = 32;
    let (mut nonzero, mut positive) = (0u64, 0u64);
    let mut blocks = codes.chunks_exact(LANES * 255);
    for block in blocks.by_ref() {
        let (mut nz, mut pos) = ([0u8; LANES], [0u8; LANES]);
        for v in block.chunks_exact(LANES) {
            for i in 0..LANES {
                nz[i] += v[i] as u8 & 1;
                pos[i] += u8::from(v[i] > 0);
            }
        }
        nonzero += nz.iter().map(|&n| u64::from(n)).sum::<u64>();
        positive += pos.iter().map(|&n| u64::from(n)).sum::<u64>();
    }
    for &c in blocks.remainder() {
        nonzero += u64::from(c as u8 & 1);
        positive += u64::from(c > 0);
    }
    [nonzero - positive, codes.len() as u64 - nonzero, positive]
}

/// The layouts that can hold scales of `granularity` for a tensor of `shape`, in words: those
/// that keep them apart at that granularity, and those whose stored scales (one per block)
/// each lie in one of its groups.
fn layouts_holding(granularity: Granularity, shape: &[usize]) -> Option<String> {
    let (_, len) = granularity.groups(shape).ok()?;
    let (mut apart, mut blocks) = (Vec::new(), Vec::new());
    for &l in Layout::ALL {
        let layout = l.get();
        if layout.packed_shape(shape).is_err() {
            continue;
        }
        match layout.packed_granularity() {
            Some(fixed) => {
                if fixed
                    .groups(shape)
                    .is_ok_and(|(_, fixed_len)| len.is_multiple_of(fixed_len))
                {
                    blocks.push(l.name());
                }
            }
            None => {
                if crate::quantize::check_granularity(l, granularity).is_ok()
                    && (l != Layout::Bitnet || granularity == Granularity::Tensor)
                {
                    apart.push(l.name());
                }
            }
        }
    }
    let mut ways = Vec::new();
    if !apart.is_empty() {
        ways.push(format!(
            "{} with granularity {}",
            apart.join(", "),
            granularity.name()
        ));
    }
    if !blocks.is_empty() {
        ways.push(format!("{} (a scale per block)", blocks.join(", ")));
    }
    (!ways.is_empty()).then(|| ways.join(", or "))
}

/// Each target group's scale: the one scale its nonzero codes have in the source. A group of
/// zero codes only takes the scale of the first source group it lies in, or, where the target
/// cannot store that (`nonzero`: a zero or non-finite scale in a reciprocal storage), the
/// previous group's: its values are 0 under any scale.
fn carried_scales(
    runs: &[Run],
    codes: &Codes<'_>,
    layout: Layout,
    granularity: Granularity,
    groups: usize,
    nonzero: bool,
) -> Result<Vec<SourceScale>> {
    let from = &codes.scales;
    let usable = |s: &SourceScale| !nonzero || (s.scale != 0.0 && s.scale.is_finite());
    let mut chosen: Vec<Option<usize>> = vec![None; groups];
    let mut first: Vec<Option<usize>> = vec![None; groups];
    for run in runs {
        first[run.to].get_or_insert(run.from);
        if run.counts[0] + run.counts[2] == 0 {
            continue;
        }
        match chosen[run.to] {
            None => chosen[run.to] = Some(run.from),
            Some(c) if from[c].scale.to_bits() == from[run.from].scale.to_bits() => {}
            Some(c) => {
                let holding = layouts_holding(codes.granularity, codes.shape);
                return Err(Error::InvalidArgument(format!(
                    "its codes have several scales (one per {} in the source; {} and {} in \
                     one {} group of the {} layout), which that layout cannot hold; {}",
                    codes.granularity.name(),
                    from[c].scale,
                    from[run.from].scale,
                    granularity.name(),
                    layout.name(),
                    holding.map_or_else(
                        || "dequantize it instead".to_owned(),
                        |ways| format!("convert to a layout that keeps them: {ways}")
                    )
                )));
            }
        }
    }
    let fallback = from.iter().copied().find(usable).unwrap_or(TernaryScale {
        inv: 1.0,
        scale: 1.0,
    });
    let mut scales = Vec::with_capacity(groups);
    let mut previous = fallback;
    for (chosen, first) in chosen.into_iter().zip(first) {
        let scale = match chosen.or(first).map(|g| from[g]) {
            Some(s) if chosen.is_some() || usable(&s) => s,
            _ => previous,
        };
        previous = if usable(&scale) { scale } else { previous };
        scales.push(scale);
    }
    Ok(scales)
}

/// Whether `storage` keeps reciprocals of the scales (transformers' `bitlinear`).
fn divides(storage: Option<&ScaleStorage>) -> bool {
    storage.is_some_and(|s| s.convention == crate::metadata::ScaleConvention::Divide)
}

/// Whether one source scale can be every target group's, stored as `storage` says: not a
/// zero or non-finite scale where the target stores reciprocals.
fn storable_everywhere(scale: SourceScale, storage: Option<&ScaleStorage>) -> bool {
    !divides(storage) || (scale.scale != 0.0 && scale.scale.is_finite())
}

/// Packs by `pack` and stores the groups' scales `target` as `layout` does: apart, as
/// `storage` says (`pack` is given no scales), or in its data (`pack` is given them, and they
/// are read back as the layout's readers see them, float16 in blocks). Returns the packed
/// bytes with their scales, and what `pack` gave besides.
fn pack_with_scales<T>(
    layout: Layout,
    storage: Option<&ScaleStorage>,
    target: &mut [SourceScale],
    pack: impl FnOnce(Option<&[f32]>) -> Result<(Vec<u8>, T)>,
) -> Result<(PackedWithScales, T)> {
    if let Some(storage) = storage {
        let stored = stored_scales(storage, target)?;
        let (packed, extra) = pack(None)?;
        let scales = target.iter().map(|s| s.scale).collect();
        return Ok((
            PackedWithScales {
                packed,
                stored,
                scales,
            },
            extra,
        ));
    }
    let wanted: Vec<f32> = target.iter().map(|s| s.scale).collect();
    let (packed, extra) = pack(Some(&wanted))?;
    let scales = layout.get().block_scales(&packed);
    crate::quantize::check_stored_scales(&wanted, &scales, "block", || {
        format!("the {} layout's stored scales", layout.name())
    })?;
    Ok((
        PackedWithScales {
            packed,
            stored: Vec::new(),
            scales,
        },
        extra,
    ))
}

/// Packed bytes and their scales: the values of the scale tensor kept apart, and each group's
/// scale once stored (`w' = code * scale`).
struct PackedWithScales {
    packed: Vec<u8>,
    stored: Vec<f32>,
    scales: Vec<f32>,
}

/// Carries `codes` into `layout` at `granularity` (the layout's own where it stores its
/// scales in its blocks), its scales stored as `storage` says where it keeps them apart.
pub fn transcode(
    codes: &Codes<'_>,
    layout: Layout,
    granularity: Granularity,
    storage: Option<&ScaleStorage>,
    level: SimdLevel,
) -> Result<Transcoded> {
    let (groups, to_len) = granularity.groups(codes.shape)?;
    let (_, from_len) = codes.granularity.groups(codes.shape)?;
    let divides = divides(storage);
    // One scale for the whole source (transformers' layout, I2_S, ryzq's per-tensor files):
    // every target group takes it, and the codes are only counted, in tiles.
    let one = match codes.scales[..] {
        [scale] if storable_everywhere(scale, storage) => Some(scale),
        _ => None,
    };
    let (counted, mut target) = if let Some(scale) = one {
        (runs(&codes.codes, from_len, from_len), vec![scale; groups])
    } else {
        let runs = runs(&codes.codes, from_len, to_len);
        let target = carried_scales(&runs, codes, layout, granularity, groups, divides)?;
        (runs, target)
    };
    let (
        PackedWithScales {
            packed,
            stored,
            scales,
        },
        (),
    ) = pack_with_scales(layout, storage, &mut target, |wanted| {
        Ok((
            crate::pack(&codes.codes, codes.shape, layout, wanted, level)?,
            (),
        ))
    })?;
    let stats = match one {
        // The one scale stored the same way in every group: the counts say everything.
        Some(_) if scales.iter().all(|s| s.to_bits() == scales[0].to_bits()) => {
            error_stats(&counted, &codes.scales, &scales[..1])
        }
        Some(_) => error_stats(
            &runs(&codes.codes, from_len, to_len),
            &codes.scales,
            &scales,
        ),
        None => error_stats(&counted, &codes.scales, &scales),
    };
    Ok(Transcoded {
        packed,
        stored,
        scales,
        stats,
    })
}

/// Carries the packed tensor `packed` (as `from` describes it, its groups' `scales` read)
/// into `layout`, its rows reordered first where `order` says. A tensor of one scale whose
/// rows stay in place goes tile by tile ([`crate::quantize::repack`]): every target group
/// takes that scale, and only the codes' counts are needed besides. The others are unpacked
/// whole, since their target scales depend on where the codes lie.
pub fn carry(
    packed: &[u8],
    from: &crate::plan::PackedSource,
    scales: Vec<SourceScale>,
    order: Option<HeadPermutation>,
    target: (Layout, Granularity, Option<&ScaleStorage>),
    level: SimdLevel,
) -> Result<Transcoded> {
    let (layout, granularity, storage) = target;
    if let (None, [scale]) = (order, &scales[..])
        && let Some(carried) = carry_one_scale(packed, from, *scale, target, level)?
    {
        return Ok(carried);
    }
    let mut codes = Codes {
        codes: crate::unpack(packed, &from.shape, from.layout, level)?,
        shape: &from.shape,
        granularity: from.granularity,
        scales,
    };
    if let Some(order) = order {
        codes.reorder_rows(order)?;
    }
    transcode(&codes, layout, granularity, storage, level)
}

/// [`carry`] of a tensor with one scale, tile by tile; `None` where that scale cannot be
/// stored the same in every target group (a reciprocal storage of 0), which [`transcode`]
/// handles.
fn carry_one_scale(
    packed: &[u8],
    from: &crate::plan::PackedSource,
    scale: SourceScale,
    (layout, granularity, storage): (Layout, Granularity, Option<&ScaleStorage>),
    level: SimdLevel,
) -> Result<Option<Transcoded>> {
    let shape = &from.shape[..];
    if !storable_everywhere(scale, storage) {
        return Ok(None);
    }
    let (groups, _) = granularity.groups(shape)?;
    let mut target = vec![scale; groups];
    let (
        PackedWithScales {
            packed,
            stored,
            scales,
        },
        counts,
    ) = pack_with_scales(layout, storage, &mut target, |wanted| {
        crate::repack(packed, shape, from.layout, layout, wanted, level)
    })?;
    let Some(&first) = scales.first() else {
        return Ok(None);
    };
    if scales.iter().any(|s| s.to_bits() != first.to_bits()) {
        return Ok(None);
    }
    let run = Run {
        from: 0,
        to: 0,
        counts,
    };
    let stats = error_stats(&[run], &[scale], &[first]);
    Ok(Some(Transcoded {
        packed,
        stored,
        scales,
        stats,
    }))
}

/// The error of the target's scales against the source's, over every value.
fn error_stats(runs: &[Run], from: &[SourceScale], to: &[f32]) -> ErrorStats {
    let mut stats = ErrorStats::default();
    for run in runs {
        let nonzero = run.counts[0] + run.counts[2];
        let (w, w_) = (from[run.from].scale, to[run.to]);
        stats.numel += run.counts.iter().sum::<u64>();
        for (a, b) in stats.counts.iter_mut().zip(run.counts) {
            *a += b;
        }
        if nonzero > 0 {
            let e = f64::from(w) - f64::from(w_);
            stats.sse += nonzero as f64 * e * e;
            stats.sum_sq += nonzero as f64 * f64::from(w) * f64::from(w);
            stats.max_abs_error = stats.max_abs_error.max((w - w_).abs());
        }
    }
    stats
}

/// Each group's scale where every group of `granularity` of `view` is exactly ternary times
/// one scale (`w ∈ {-s, 0, +s}`, bit for bit: a TriLM-style checkpoint), else `None`. An
/// all-zero group takes absmean's quantizer of zeros; a tensor of zeros is not one of these.
#[must_use]
pub fn exact_ternary_scales(
    view: &TensorView<'_>,
    granularity: Granularity,
) -> Option<Vec<TernaryScale>> {
    use rayon::prelude::*;
    let (_, len) = granularity.groups(view.shape()).ok()?;
    let dtype = view.dtype();
    let size = dtype.size();
    let (mask, decode): (u32, fn(u32) -> f32) = match dtype {
        FloatDType::F32 => (0x7fff_ffff, f32::from_bits),
        FloatDType::F16 => (0x7fff, |b| half::f16::from_bits(b as u16).to_f32()),
        FloatDType::BF16 => (0x7fff, |b| half::bf16::from_bits(b as u16).to_f32()),
    };
    let bytes = view.raw(0..view.numel()).bytes;
    // Master weights fail at their second nonzero value, so each group stops early.
    let magnitudes: Vec<u32> = bytes
        .par_chunks(len * size)
        .map(|group| {
            let mut s = 0u32;
            for v in group.chunks_exact(size) {
                let bits = match *v {
                    [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
                    [a, b] => u32::from(u16::from_le_bytes([a, b])),
                    _ => unreachable!("float types of 2 or 4 bytes"),
                } & mask;
                if bits != 0 && bits != s {
                    if s != 0 {
                        return None;
                    }
                    s = bits;
                }
            }
            Some(s)
        })
        .collect::<Option<_>>()?;
    if magnitudes.iter().all(|&s| s == 0) {
        return None;
    }
    magnitudes
        .into_iter()
        .map(|bits| {
            let s = decode(bits);
            if bits == 0 {
                Some(TernaryScale::absmean(0.0, len))
            } else {
                s.is_finite().then(|| TernaryScale {
                    inv: 1.0 / s,
                    scale: s,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_counted_as_one_by_one() {
        let codes: Vec<i8> = (0..300_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as i8 % 2)
            .map(|c| c.clamp(-1, 1))
            .collect();
        let mut expected = [0u64; 3];
        for &c in &codes {
            expected[(c + 1) as usize] += 1;
        }
        assert_eq!(count_codes(&codes), expected);
        assert_eq!(count_codes(&[]), [0, 0, 0]);
        let runs = runs(&codes, 256, codes.len());
        let mut total = [0u64; 3];
        for run in &runs {
            for (t, c) in total.iter_mut().zip(run.counts) {
                *t += c;
            }
        }
        assert_eq!(total, expected);
    }
}
