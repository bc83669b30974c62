//! The drivers: quantize a tensor into a packed layout with its scales and error statistics,
//! and the inverse operations. Work is split into the layout's tiles and spread over rayon's
//! threads; per-tile results are combined in tile order, so the output never depends on the
//! number of threads.

use std::ops::Range;

use rayon::prelude::*;

use crate::dtype::FloatDType;
use crate::error::{Error, Index, Result};
use crate::kernels::LANES;
use crate::kernels::Raw;
use crate::kernels::expand::{Values, expand16, expand16_groups, expand32, expand32_groups};
use crate::kernels::reduce::{abs_max, abs_sum};
use crate::kernels::ternarize::{ternarize, ternarize_groups};
use crate::layout::{Layout, PackedLayout, TILE_VALUES, Tile, require_nonempty};
use crate::method::{Granularity, Method, TernaryScale, Ties};
use crate::optimal::optimal_scales as optimal_scales_of;
use crate::simd::SimdLevel;
use crate::stats::ErrorStats;
use crate::tensor::TensorView;

#[derive(Debug, Clone, Copy)]
pub struct QuantizeOptions {
    pub layout: Layout,
    pub method: Method,
    pub granularity: Granularity,
    pub level: SimdLevel,
}

#[derive(Debug, Clone)]
pub struct Quantized {
    pub packed: Vec<u8>,
    pub packed_shape: Vec<usize>,
    /// The dequantization scale of each group: `w' = code * scale`.
    pub scales: Vec<f32>,
    pub stats: ErrorStats,
}

/// The consecutive pieces of `range` that lie in one group each, with the group's index.
fn group_runs(
    range: Range<usize>,
    group_len: usize,
) -> impl Iterator<Item = (usize, Range<usize>)> {
    let mut start = range.start;
    std::iter::from_fn(move || {
        (start < range.end).then(|| {
            let group = start / group_len;
            let end = ((group + 1) * group_len).min(range.end);
            let run = start..end;
            start = end;
            (group, run)
        })
    })
}

/// Splits `buf` into the consecutive pieces given by the packed ranges of one part's tiles.
fn split_by_tiles<'b>(mut buf: &'b mut [u8], tiles: &[Tile]) -> Vec<&'b mut [u8]> {
    tiles
        .iter()
        .map(|tile| {
            let (head, rest) = std::mem::take(&mut buf).split_at_mut(tile.packed.len());
            buf = rest;
            head
        })
        .collect()
}

/// Each group's values in chunks whose bounds depend only on the shape, so that reductions
/// give the same result for any thread count.
fn group_chunks(groups: usize, group_len: usize) -> Vec<(usize, Range<usize>)> {
    (0..groups)
        .flat_map(|g| {
            let group = g * group_len..(g + 1) * group_len;
            group
                .clone()
                .step_by(TILE_VALUES)
                .map(move |s| (g, s..(s + TILE_VALUES).min(group.end)))
        })
        .collect()
}

/// Each group's quantizer from a reduction of its values: `chunk` reduces each chunk of
/// [`group_chunks`], `fold` combines a group's chunks in order (from `empty`), and `finish`
/// turns the total into the quantizer, or `None` where a value was not finite.
fn reduced_scales<T: Copy + Send>(
    view: &TensorView<'_>,
    groups: usize,
    group_len: usize,
    empty: T,
    chunk: impl Fn(Raw<'_>) -> T + Sync,
    fold: impl Fn(T, T) -> T,
    finish: impl Fn(T) -> Option<TernaryScale>,
) -> Result<Vec<TernaryScale>> {
    let chunks = group_chunks(groups, group_len);
    let parts: Vec<T> = chunks
        .par_iter()
        .map(|(_, range)| chunk(view.raw(range.clone())))
        .collect();
    let mut totals = vec![empty; groups];
    for ((g, _), part) in chunks.iter().zip(parts) {
        totals[*g] = fold(totals[*g], part);
    }
    totals
        .into_iter()
        .map(finish)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| view.non_finite_error())
}

/// Groups' quantizers computed together: as many groups as fill a tile (at least one).
fn optimal_scales(
    view: &TensorView<'_>,
    groups: usize,
    group_len: usize,
    level: SimdLevel,
) -> Result<Vec<TernaryScale>> {
    let per_call = (TILE_VALUES / group_len).max(1);
    let scales: Option<Vec<Vec<TernaryScale>>> = (0..groups)
        .step_by(per_call)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|g| {
            let end = (g + per_call).min(groups);
            optimal_scales_of(level, view.raw(g * group_len..end * group_len), group_len)
        })
        .collect();
    scales
        .map(|s| s.concat())
        .ok_or_else(|| view.non_finite_error())
}

/// The absmean quantizer of a group of `n` values from `sum |w|` (`None` if not finite).
fn absmean_of(sum: f64, n: usize) -> Option<TernaryScale> {
    sum.is_finite().then(|| TernaryScale::absmean(sum, n))
}

/// The absmax quantizer of a group from `(max |w|, all finite)` (`None` if not finite).
fn absmax_of((max, finite): (f32, bool)) -> Option<TernaryScale> {
    finite.then(|| TernaryScale::absmax(max))
}

/// The quantizers of consecutive whole groups `x` that fit in a tile, computed where their
/// values are already in cache; the same arithmetic as the pass over all groups (`None` if a
/// value is not finite).
fn tile_group_scales(
    method: Method,
    level: SimdLevel,
    x: Raw<'_>,
    group_len: usize,
) -> Option<Vec<TernaryScale>> {
    let groups = (0..x.len()).step_by(group_len);
    let mut scales = Vec::with_capacity(x.len() / group_len);
    match method {
        Method::AbsMean => {
            for g in groups {
                scales.push(absmean_of(
                    abs_sum(level, x.slice(g..g + group_len)),
                    group_len,
                )?);
            }
        }
        Method::AbsMax => {
            for g in groups {
                scales.push(absmax_of(abs_max(level, x.slice(g..g + group_len)))?);
            }
        }
        Method::Optimal => return optimal_scales_of(level, x, group_len),
    }
    Some(scales)
}

/// The quantizer of each group of `view`, its scale as `layout` stores it.
pub fn group_scales(
    view: &TensorView<'_>,
    layout: Layout,
    method: Method,
    granularity: Granularity,
    level: SimdLevel,
) -> Result<Vec<TernaryScale>> {
    require_nonempty(view.shape())?;
    let (groups, group_len) = granularity.groups(view.shape())?;
    let mut scales = match method {
        Method::AbsMean => reduced_scales(
            view,
            groups,
            group_len,
            0.0f64,
            |x| abs_sum(level, x),
            |a, b| a + b,
            |sum| absmean_of(sum, group_len),
        ),
        Method::AbsMax => reduced_scales(
            view,
            groups,
            group_len,
            (0.0f32, true),
            |x| abs_max(level, x),
            |a, b| (a.0.max(b.0), a.1 && b.1),
            absmax_of,
        ),
        Method::Optimal => optimal_scales(view, groups, group_len, level),
    }?;
    store_scales(layout.get(), &mut scales)?;
    Ok(scales)
}

/// Replaces each quantizer's scale by the value `layout` stores; fails where storing it would
/// change what the codes mean (see [`check_stored_scales`]).
pub(crate) fn store_scales(
    layout: &dyn PackedLayout,
    quantizers: &mut [TernaryScale],
) -> Result<()> {
    let wanted: Vec<f32> = quantizers.iter().map(|q| q.scale).collect();
    let mut stored = wanted.clone();
    layout.store_scales(&mut stored);
    check_stored_scales(&wanted, &stored, "group", || {
        format!(
            "the {} layout's float16 block scales; layouts i2 and t1 store float32 scales",
            layout.name()
        )
    })?;
    for (q, s) in quantizers.iter_mut().zip(stored) {
        q.scale = s;
    }
    Ok(())
}

/// Fails unless every scale, once `stored` in its storage (named by `storage`), is still finite
/// and, where it was positive, still positive: an infinite or zero stored scale would turn
/// every weight it scales into infinity or zero.
pub(crate) fn check_stored_scales(
    wanted: &[f32],
    stored: &[f32],
    unit: &str,
    storage: impl FnOnce() -> String,
) -> Result<()> {
    let bad = wanted
        .iter()
        .zip(stored)
        .position(|(&w, &s)| !w.is_finite() || !s.is_finite() || (w != 0.0 && s == 0.0));
    match bad {
        None => Ok(()),
        Some(i) => {
            let (w, s) = (wanted[i], stored[i]);
            let what = if wanted.len() == 1 {
                "the scale".to_owned()
            } else {
                format!("the scale of {unit} {i}")
            };
            let became = if w.is_finite() {
                format!(", which becomes {s} there")
            } else {
                String::new()
            };
            Err(Error::ScaleRange(format!(
                "{what} is {w}{became}: it does not fit {}",
                storage()
            )))
        }
    }
}

/// Refuses a granularity the layout cannot store: a layout with a scale in every block takes
/// any granularity whose groups are whole blocks (one per tensor, per row, or `group:N` with
/// `N` a multiple of the block), and stores each group's scale in each of its blocks; a layout
/// that stores one scale after the codes takes granularity tensor only.
pub fn check_granularity(layout: Layout, granularity: Granularity) -> Result<()> {
    if layout.get().tensor_scale_len() > 0 && granularity != Granularity::Tensor {
        return Err(Error::InvalidArgument(format!(
            "the {} layout stores one float32 scale per tensor, after its codes, so it takes \
             granularity tensor only, not {}",
            layout.name(),
            granularity.name()
        )));
    }
    match (layout.get().block(), granularity) {
        (Some(block), Granularity::Group(n)) if !n.is_multiple_of(block) => {
            Err(Error::InvalidArgument(format!(
                "the {} layout stores a scale in every block of {block} values, so its groups \
                 must be whole blocks: use granularity tensor, row or group:N with N a multiple \
                 of {block}, not {}",
                layout.name(),
                granularity.name()
            )))
        }
        _ => Ok(()),
    }
}

/// Quantizes `view` with `opts`.
///
/// Groups that fit in the layout's tiles are quantized in one pass: each group's scale is
/// computed right before its codes, from cache. Larger groups (a whole tensor, long rows) take
/// a pass for the scales first.
pub fn quantize(view: &TensorView<'_>, opts: &QuantizeOptions) -> Result<Quantized> {
    let layout = opts.layout.get();
    layout.packed_shape(view.shape())?;
    check_granularity(opts.layout, opts.granularity)?;
    require_nonempty(view.shape())?;
    let (_, group_len) = opts.granularity.groups(view.shape())?;
    let tiles = layout.tiles(view.shape());
    let in_tiles = matches!(opts.granularity, Granularity::Group(_))
        && tiles
            .iter()
            .all(|t| t.values.start % group_len == 0 && t.values.end % group_len == 0);
    if in_tiles {
        let scales_of = |groups: Range<usize>| {
            let x = view.raw(groups.start * group_len..groups.end * group_len);
            let mut scales = tile_group_scales(opts.method, opts.level, x, group_len)
                .ok_or_else(|| view.non_finite_error())?;
            store_scales(layout, &mut scales)?;
            Ok(scales)
        };
        return quantize_tiles(
            view,
            opts.layout,
            &tiles,
            opts.granularity,
            opts.method.ties(),
            &scales_of,
            opts.level,
        );
    }
    let scales = group_scales(view, opts.layout, opts.method, opts.granularity, opts.level)?;
    quantize_tiles(
        view,
        opts.layout,
        &tiles,
        opts.granularity,
        opts.method.ties(),
        &|groups| Ok(scales[groups].to_vec()),
        opts.level,
    )
}

/// Quantizes `view` with given group quantizers (see [`group_scales`]); the stats and the
/// returned scales use each group's `scale`.
pub fn quantize_with_scales(
    view: &TensorView<'_>,
    layout: Layout,
    granularity: Granularity,
    ties: Ties,
    scales: &[TernaryScale],
    level: SimdLevel,
) -> Result<Quantized> {
    let (groups, _) = granularity.groups(view.shape())?;
    assert_eq!(scales.len(), groups, "one quantizer per group");
    let tiles = layout.get().tiles(view.shape());
    quantize_tiles(
        view,
        layout,
        &tiles,
        granularity,
        ties,
        &|groups| Ok(scales[groups].to_vec()),
        level,
    )
}

/// The quantize driver: every tile of `tiles` (the layout's) in parallel, the parts of a
/// layout in turn, the quantizers of the groups a tile touches from `scales_of`.
fn quantize_tiles(
    view: &TensorView<'_>,
    layout: Layout,
    tiles: &[Tile],
    granularity: Granularity,
    ties: Ties,
    scales_of: &(dyn Fn(Range<usize>) -> Result<Vec<TernaryScale>> + Sync),
    level: SimdLevel,
) -> Result<Quantized> {
    let layout = layout.get();
    let packed_shape = layout.packed_shape(view.shape())?;
    let (groups, group_len) = granularity.groups(view.shape())?;
    let block = layout.block();
    let mut packed = vec![0u8; packed_shape.iter().product()];
    let mut stored = vec![0f32; groups];
    let stored_out = DisjointOut::new(&mut stored);
    let mut per_tile: Vec<ErrorStats> = Vec::with_capacity(tiles.len());
    for part in tiles.chunk_by(|a, b| a.part == b.part) {
        let outs = split_by_tiles(&mut packed, part);
        let stats: Result<Vec<ErrorStats>> = part
            .par_iter()
            .zip(outs)
            .map_init(
                || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
                |(codes, tile_scales, tile_groups, block_scales), (tile, out)| {
                    codes.resize(tile.values.len(), 0i8);
                    tile_scales.clear();
                    let mut stats = ErrorStats::default();
                    let first = tile.values.start;
                    let whole_groups = first % group_len == 0
                        && tile.values.end % group_len == 0
                        && group_len.is_multiple_of(LANES);
                    tile_groups.clear();
                    let first_group = first / group_len;
                    let last_group = (tile.values.end - 1) / group_len + 1;
                    let quantizers = scales_of(first_group..last_group)?;
                    tile_scales.extend(quantizers.iter().map(|s| s.scale));
                    if whole_groups {
                        // SAFETY: the tile holds these groups whole, and alone writes their
                        // scales.
                        let slots = unsafe { stored_out.range(first_group..last_group) };
                        slots.copy_from_slice(tile_scales);
                        tile_groups.extend(quantizers.iter().map(|s| (s.inv, s.scale)));
                        // One call for the tile's groups: the per-call work is not repeated
                        // for every small group.
                        let x = view.raw(tile.values.clone());
                        stats = ternarize_groups(level, x, group_len, tile_groups, ties, codes);
                    } else {
                        for (g, run) in group_runs(tile.values.clone(), group_len) {
                            let s = quantizers[g - first_group];
                            if run.start == g * group_len {
                                // SAFETY: each group starts in exactly one tile, which alone
                                // writes its scale.
                                let slot = unsafe { stored_out.range(g..g + 1) };
                                slot[0] = s.scale;
                            }
                            let at = run.start - first..run.end - first;
                            let x = view.raw(run);
                            stats.merge(&ternarize(level, x, s.inv, s.scale, ties, &mut codes[at]));
                        }
                    }
                    let scales_for_pack: &[f32] = match block {
                        None => &[],
                        Some(block) if block == group_len => tile_scales,
                        Some(block) => {
                            // Groups of whole blocks: each block stores its group's scale.
                            block_scales.clear();
                            block_scales.extend(
                                tile.values
                                    .clone()
                                    .step_by(block)
                                    .map(|v| tile_scales[v / group_len - first_group]),
                            );
                            block_scales
                        }
                    };
                    let valid = layout.pack(level, tile.part, codes, scales_for_pack, out);
                    debug_assert!(valid, "ternarize only writes -1, 0 and 1");
                    Ok(stats)
                },
            )
            .collect();
        per_tile.extend(stats?);
    }
    put_tensor_scale(layout, &stored, &mut packed);
    let mut stats = ErrorStats::default();
    for s in &per_tile {
        stats.merge(s);
    }
    Ok(Quantized {
        packed,
        packed_shape,
        scales: stored,
        stats,
    })
}

/// Writes the one stored scale into the last bytes of `packed`, for a layout that keeps it
/// there.
fn put_tensor_scale(layout: &dyn PackedLayout, stored: &[f32], packed: &mut [u8]) {
    let len = layout.tensor_scale_len();
    if len > 0 {
        assert_eq!(stored.len(), 1, "one scale per tensor");
        let at = packed.len() - len;
        layout.put_tensor_scale(stored[0], &mut packed[at..]);
    }
}

fn check_packed_len(layout: &dyn PackedLayout, shape: &[usize], packed: &[u8]) -> Result<()> {
    let packed_shape = layout.packed_shape(shape)?;
    Error::check_size(packed.len(), packed_shape.iter().product(), || {
        format!(
            "packed {} data for shape {shape:?} (packed shape {packed_shape:?})",
            layout.name()
        )
    })
}

/// The scales a packed tensor of `shape` stores in its data, as `layout` stores them: one per
/// block for layouts with blocks, the tensor's one for layouts that keep it after the codes,
/// none for the others; checked against those the layout takes.
fn stored_for_pack(
    layout: &dyn PackedLayout,
    shape: &[usize],
    scales: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let name = layout.name();
    let numel: usize = shape.iter().product();
    Ok(match (layout.block(), scales) {
        (Some(block), Some(scales)) => {
            if scales.len() != numel / block {
                return Err(Error::Shape(format!(
                    "{} scales given, but the {name} layout stores one per block of {block} \
                     values: {} for shape {shape:?}",
                    scales.len(),
                    numel / block
                )));
            }
            let mut stored = scales.to_vec();
            layout.store_scales(&mut stored);
            check_stored_scales(scales, &stored, "block", || {
                format!("the {name} layout's float16 block scales")
            })?;
            stored
        }
        (Some(block), None) => {
            return Err(Error::InvalidArgument(format!(
                "the {name} layout stores a scale in every block of {block} values: give the \
                 scales too"
            )));
        }
        (None, scales) if layout.tensor_scale_len() > 0 => match scales {
            Some(&[scale]) => {
                check_stored_scales(&[scale], &[scale], "tensor", || {
                    format!("the {name} layout's float32 tensor scale")
                })?;
                vec![scale]
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "the {name} layout stores the tensor's one scale after its codes: give \
                     that scale, one value{}",
                    scales.map_or(String::new(), |s| format!(", not {}", s.len()))
                )));
            }
        },
        (None, Some(_)) => {
            return Err(Error::InvalidArgument(format!(
                "the {name} layout keeps its scales apart from the codes: give no scales"
            )));
        }
        (None, None) => Vec::new(),
    })
}

/// The stored scales of a tile's blocks, for layouts that have blocks.
fn tile_scales<'s>(layout: &dyn PackedLayout, stored: &'s [f32], tile: &Tile) -> &'s [f32] {
    match layout.block() {
        Some(block) => &stored[tile.values.start / block..tile.values.end / block],
        None => &[][..],
    }
}

/// Packs int8 codes (each -1, 0 or 1) of a tensor of `shape`. Layouts that store a scale in
/// every block take those `scales` (one per block), layouts that store the tensor's scale
/// after the codes take that one; the others take none.
pub fn pack(
    codes: &[i8],
    shape: &[usize],
    layout: Layout,
    scales: Option<&[f32]>,
    level: SimdLevel,
) -> Result<Vec<u8>> {
    let layout = layout.get();
    let packed_shape = layout.packed_shape(shape)?;
    let numel: usize = shape.iter().product();
    Error::check_size(codes.len(), numel, || {
        format!("int8 codes of shape {shape:?}")
    })?;
    let stored = stored_for_pack(layout, shape, scales)?;
    let tiles = layout.tiles(shape);
    let mut packed = vec![0u8; packed_shape.iter().product()];
    let mut valid = true;
    for part in tiles.chunk_by(|a, b| a.part == b.part) {
        let outs = split_by_tiles(&mut packed, part);
        valid &= part.par_iter().zip(outs).all(|(tile, out)| {
            layout.pack(
                level,
                tile.part,
                &codes[tile.values.clone()],
                tile_scales(layout, &stored, tile),
                out,
            )
        });
    }
    put_tensor_scale(layout, &stored, &mut packed);
    if !valid {
        let (i, &value) = codes
            .iter()
            .enumerate()
            .find(|&(_, c)| !(-1..=1).contains(c))
            .expect("pack reported an invalid code");
        return Err(Error::InvalidCode {
            value,
            index: Index::from_flat(i, shape),
        });
    }
    Ok(packed)
}

/// Carries the codes of `packed` (a tensor of `shape` in layout `from`) into layout `to`, as
/// [`unpack`] then [`pack`] would, without the codes of the whole tensor: each tile of `to`
/// unpacks the source tiles it overlaps into a buffer of its own, so the codes stay in cache.
/// Returns the packed bytes and how many codes are -1, 0 and +1.
pub fn repack(
    packed: &[u8],
    shape: &[usize],
    from: Layout,
    to: Layout,
    scales: Option<&[f32]>,
    level: SimdLevel,
) -> Result<(Vec<u8>, [u64; 3])> {
    let (source, target) = (from.get(), to.get());
    check_packed_len(source, shape, packed)?;
    let packed_shape = target.packed_shape(shape)?;
    let stored = stored_for_pack(target, shape, scales)?;
    let mut sources = source.tiles(shape);
    sources.sort_by_key(|t| t.values.start);
    let targets = target.tiles(shape);
    let mut out = vec![0u8; packed_shape.iter().product()];
    let mut counts = [0u64; 3];
    let mut corrupt = false;
    for part in targets.chunk_by(|a, b| a.part == b.part) {
        let outs = split_by_tiles(&mut out, part);
        let tiles = part.par_iter().zip(outs).map_init(
            || (Vec::new(), Vec::new()),
            |(codes, scratch): &mut (Vec<i8>, Vec<i8>), (tile, out)| {
                codes.resize(tile.values.len(), 0);
                let first = sources.partition_point(|s| s.values.end <= tile.values.start);
                for s in sources[first..]
                    .iter()
                    .take_while(|s| s.values.start < tile.values.end)
                {
                    scratch.resize(s.values.len(), 0);
                    source
                        .unpack(level, s.part, &packed[s.packed.clone()], scratch)
                        .ok()?;
                    let lo = s.values.start.max(tile.values.start);
                    let hi = s.values.end.min(tile.values.end);
                    codes[lo - tile.values.start..hi - tile.values.start]
                        .copy_from_slice(&scratch[lo - s.values.start..hi - s.values.start]);
                }
                let valid = target.pack(
                    level,
                    tile.part,
                    codes,
                    tile_scales(target, &stored, tile),
                    out,
                );
                assert!(valid, "unpacked codes are -1, 0 or +1");
                Some(crate::transcode::count_codes(codes))
            },
        );
        let part_counts: Option<Vec<[u64; 3]>> = tiles.collect();
        let Some(part_counts) = part_counts else {
            corrupt = true;
            break;
        };
        for c in part_counts {
            for (total, n) in counts.iter_mut().zip(c) {
                *total += n;
            }
        }
    }
    if corrupt {
        // Names the first corrupt byte, whichever tile a thread stopped at.
        let err = unpack(packed, shape, from, level).expect_err("a source tile was refused");
        return Err(err);
    }
    put_tensor_scale(target, &stored, &mut out);
    Ok((out, counts))
}

/// A buffer that tiles fill in parallel, each tile at element ranges no other tile touches.
struct DisjointOut<'a, T> {
    ptr: *mut T,
    len: usize,
    _buffer: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the buffer is only reached through `range`, whose callers write disjoint ranges.
unsafe impl<T: Send> Send for DisjointOut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for DisjointOut<'_, T> {}

impl<'a, T> DisjointOut<'a, T> {
    fn new(buffer: &'a mut [T]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: std::marker::PhantomData,
        }
    }

    /// # Safety
    /// No two live slices returned by this method may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "within the buffer"
        );
        // SAFETY: in bounds (checked above); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Unpacks every tile, in parallel, and hands its codes to `f`; fails on corrupt packed data.
fn for_each_unpacked_tile(
    packed: &[u8],
    shape: &[usize],
    layout: &dyn PackedLayout,
    level: SimdLevel,
    f: impl Fn(&Tile, &[i8]) + Sync,
) -> Result<()> {
    check_packed_len(layout, shape, packed)?;
    let tiles = layout.tiles(shape);
    let unpacked = tiles.par_iter().try_for_each_init(Vec::new, |codes, tile| {
        codes.resize(tile.values.len(), 0);
        layout
            .unpack(level, tile.part, &packed[tile.packed.clone()], codes)
            .map_err(|offset| tile.packed.start + offset)?;
        f(tile, codes);
        Ok::<(), usize>(())
    });
    unpacked.map_err(|_| {
        // Name the first corrupt byte, whichever tile a thread stopped at.
        let byte = tiles
            .iter()
            .find_map(|tile| {
                let mut codes = vec![0; tile.values.len()];
                layout
                    .unpack(level, tile.part, &packed[tile.packed.clone()], &mut codes)
                    .err()
                    .map(|offset| tile.packed.start + offset)
            })
            .expect("unpack refused a tile");
        Error::CorruptPacked {
            layout: layout.name(),
            byte,
            value: packed[byte],
        }
    })
}

/// Unpacks the int8 codes of a tensor of `shape`.
pub fn unpack(packed: &[u8], shape: &[usize], layout: Layout, level: SimdLevel) -> Result<Vec<i8>> {
    // Checked before the codes are allocated: the shape may be any size, the packed bytes are
    // real.
    check_packed_len(layout.get(), shape, packed)?;
    let mut codes = vec![0i8; shape.iter().product()];
    let out = DisjointOut::new(&mut codes);
    for_each_unpacked_tile(packed, shape, layout.get(), level, |tile, tile_codes| {
        // SAFETY: every value is in exactly one tile, so no two tiles write the same codes.
        let dst = unsafe { out.range(tile.values.clone()) };
        dst.copy_from_slice(tile_codes);
    })?;
    Ok(codes)
}

/// The values `-scale` and `+scale` as `dtype` bits (rounded to nearest, ties to even).
fn output_values(dtype: FloatDType, scale: f32) -> (Values<u32>, Values<u16>) {
    let v16 = match dtype {
        FloatDType::F16 => Values {
            negative: half::f16::from_f32(-scale).to_bits(),
            positive: half::f16::from_f32(scale).to_bits(),
        },
        _ => Values {
            negative: half::bf16::from_f32(-scale).to_bits(),
            positive: half::bf16::from_f32(scale).to_bits(),
        },
    };
    let v32 = Values {
        negative: (-scale).to_bits(),
        positive: scale.to_bits(),
    };
    (v32, v16)
}

/// Dequantizes packed codes to little-endian `dtype` bytes: `w' = code * scale` of its group.
pub fn dequantize(
    packed: &[u8],
    scales: &[f32],
    shape: &[usize],
    layout: Layout,
    granularity: Granularity,
    dtype: FloatDType,
    level: SimdLevel,
) -> Result<Vec<u8>> {
    // Checked before the output is allocated: the shape may be any size (a file's metadata
    // says it), the packed bytes are real.
    check_packed_len(layout.get(), shape, packed)?;
    let mut out = vec![0u8; shape.iter().product::<usize>() * dtype.size()];
    dequantize_into(
        packed,
        scales,
        shape,
        layout,
        granularity,
        dtype,
        level,
        &mut out,
    )?;
    Ok(out)
}

/// [`dequantize`] into `out`, which must hold exactly the tensor's bytes.
#[allow(clippy::too_many_arguments)]
pub fn dequantize_into(
    packed: &[u8],
    scales: &[f32],
    shape: &[usize],
    layout: Layout,
    granularity: Granularity,
    dtype: FloatDType,
    level: SimdLevel,
    out: &mut [u8],
) -> Result<()> {
    check_granularity(layout, granularity)?;
    let layout = layout.get();
    layout.packed_shape(shape)?;
    let (groups, group_len) = granularity.groups(shape)?;
    if scales.len() != groups {
        return Err(Error::Shape(format!(
            "{} scales given for a tensor of shape {shape:?} quantized per {}, expected {groups}",
            scales.len(),
            granularity.name()
        )));
    }
    if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "scale {i} is {}: scales must be finite",
            scales[i]
        )));
    }
    let size = dtype.size();
    Error::check_size(out.len(), shape.iter().product::<usize>() * size, || {
        format!(
            "the output for a {} tensor of shape {shape:?}",
            dtype.name()
        )
    })?;
    let (values32, values16): (Vec<_>, Vec<_>) =
        scales.iter().map(|&s| output_values(dtype, s)).unzip();
    let out = DisjointOut::new(out);
    for_each_unpacked_tile(packed, shape, layout, level, |tile, codes| {
        let first = tile.values.start;
        if first % group_len == 0 && tile.values.end % group_len == 0 {
            // Whole groups: one call for the tile.
            let groups = first / group_len..tile.values.end / group_len;
            // SAFETY: every value is in exactly one tile, so no two tiles write the same bytes.
            let dst = unsafe { out.range(first * size..tile.values.end * size) };
            match dtype {
                FloatDType::F32 => expand32_groups(level, codes, group_len, &values32[groups], dst),
                FloatDType::F16 | FloatDType::BF16 => {
                    expand16_groups(level, codes, group_len, &values16[groups], dst);
                }
            }
            return;
        }
        for (g, run) in group_runs(tile.values.clone(), group_len) {
            let c = &codes[run.start - first..run.end - first];
            // SAFETY: every value is in exactly one tile, so no two tiles write the same bytes.
            let dst = unsafe { out.range(run.start * size..run.end * size) };
            match dtype {
                FloatDType::F32 => expand32(level, c, values32[g], dst),
                FloatDType::F16 | FloatDType::BF16 => expand16(level, c, values16[g], dst),
            }
        }
    })
}
