//! The one conversion loop: every tensor of a [`Source`], as its [`Plan`] says, into a
//! [`Sink`], one tensor at a time, with a report of what happened to each.
//! `quantize_file`, `quantize_model`, `dequantize_file` and `dequantize_model` are calls to it.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::kernels::widen::widen;
use crate::metadata::ScaleConvention;
use crate::method::Granularity;
use crate::plan::scales::{convert_float, divide_bias, stored_scales, stored_type};
use crate::plan::{
    Action, LinearClass, OutputFile, PackedSource, Plan, PlannedTensor, QuantizeRequest,
    ScaleSource,
};
use crate::report::{FileReport, TensorReport};
use crate::simd::SimdLevel;
use crate::sink::{Sink, TensorFile};
use crate::source::Source;
use crate::tensor::TensorView;
use crate::transcode::{carry, exact_ternary_scales, source_scale};
use crate::{group_scales, quantize_with_scales};

/// Called after each tensor with its report, the number of tensors done and their total; an
/// error from it stops the work.
pub type Progress<'a> = dyn FnMut(&TensorReport, usize, usize) -> Result<()> + 'a;

/// What the loop needs besides the plan: the kernels' level and threads, and for quantizing,
/// the request.
pub struct Run<'a> {
    pub level: SimdLevel,
    pub threads: Option<usize>,
    pub request: Option<&'a QuantizeRequest>,
}

/// Opens `src` as a file or, with `folder`, a model folder.
pub fn open(src: &Path, folder: bool) -> Result<Source> {
    if folder {
        Source::open_folder(src)
    } else {
        Source::open_file(src)
    }
}

/// What a conversion did: the report of every tensor, the bytes written, and what the data
/// showed that the user likely wants to know (weights exactly ternary at a finer granularity
/// than the one asked for).
pub struct Converted {
    pub reports: Vec<TensorReport>,
    pub bytes_out: u64,
    pub notes: Vec<String>,
}

/// What converting one output file did: its tensors' reports, the bytes it holds, and the
/// weights found exactly ternary per row where a coarser granularity was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The file's name in a model folder; `None` for a single file.
    pub shard: Option<String>,
    pub reports: Vec<TensorReport>,
    pub bytes_out: u64,
    pub finer: Vec<String>,
}

impl Converted {
    /// The parts of one conversion, in the plan's order of files, as one.
    #[must_use]
    pub fn of_parts(parts: Vec<Part>) -> Self {
        let mut reports = Vec::new();
        let mut bytes_out = 0;
        let mut finer = Vec::new();
        for part in parts {
            reports.extend(part.reports);
            bytes_out += part.bytes_out;
            finer.extend(part.finer);
        }
        let mut notes = Vec::new();
        if let Some(first) = finer.first() {
            notes.push(format!(
                "{} weight{} exactly ternary with one scale per row ({first}{}), but \
                 quantized at a coarser granularity, which loses that: --granularity row \
                 (granularity=\"row\") carries them over exactly",
                finer.len(),
                if finer.len() == 1 { " is" } else { "s are" },
                if finer.len() > 1 { ", ..." } else { "" }
            ));
        }
        Self {
            reports,
            bytes_out,
            notes,
        }
    }
}

/// Carries out `plan` on `source` into `sink`. On any error nothing is left at the
/// destination.
pub fn convert(
    source: &Source,
    plan: &Plan,
    sink: Sink,
    run: &Run<'_>,
    progress: &mut Progress<'_>,
) -> Result<Converted> {
    let total = plan.tensors().count();
    let mut done = 0;
    let mut parts = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let writer = sink.create(plan, file)?;
        parts.push(convert_file(source, file, writer, run, &mut |report| {
            done += 1;
            progress(report, done, total)
        })?);
    }
    sink.finish(source, plan)?;
    Ok(Converted::of_parts(parts))
}

/// Converts the tensors of one output file of a plan into `writer`, then completes it.
pub fn convert_file(
    source: &Source,
    file: &OutputFile,
    mut writer: TensorFile,
    run: &Run<'_>,
    progress: &mut dyn FnMut(&TensorReport) -> Result<()>,
) -> Result<Part> {
    let mut reports = Vec::with_capacity(file.tensors.len() + file.generated.len());
    let mut finer = Vec::new();
    for t in &file.tensors {
        let holder = source.file(t.source);
        let report = convert_tensor(source, t, run, &mut writer, &mut finer)
            .map_err(|e| e.in_file(holder.path(), Some(&t.name)))?;
        progress(&report)?;
        reports.push(report);
    }
    for g in &file.generated {
        writer.write(&g.output.name, &g.data)?;
        reports.push(TensorReport {
            name: g.output.name.clone(),
            dtype: g.output.dtype.name().into(),
            shape: g.output.shape.clone(),
            kept_because: Some(format!("made for the output: {}", g.why)),
            carried_over: None,
            scale: None,
            stats: None,
            bytes_in: 0,
            bytes_out: g.data.len() as u64,
            read_seconds: 0.0,
            quantize_seconds: 0.0,
            write_seconds: 0.0,
        });
    }
    let bytes_out = writer.size();
    writer.finish()?;
    Ok(Part {
        shard: file.shard.clone(),
        reports,
        bytes_out,
        finer,
    })
}

/// Quantizes the file (or, with `folder`, the model folder) `src` into `dst`.
pub fn quantize(
    src: &Path,
    dst: &Path,
    folder: bool,
    request: &QuantizeRequest,
    progress: &mut Progress<'_>,
) -> Result<FileReport> {
    let start = Instant::now();
    let threads = crate::threads::resolve(request.threads)?;
    let source = open(src, folder)?;
    let sink = Sink::for_source(&source, dst)?;
    let mut plan = Plan::for_output(&source, crate::sink::output_kind(&source, dst), request)?;
    remove_stale(dst, &mut plan);
    let run = Run {
        level: request.level,
        threads,
        request: Some(request),
    };
    let converted = convert(&source, &plan, sink, &run, progress)?;
    Ok(quantize_report(
        src, dst, request, &source, plan, converted, threads, start,
    ))
}

/// Removes what interrupted runs of ryzq left for `dst`, and says so among `plan`'s warnings.
pub(crate) fn remove_stale(dst: &Path, plan: &mut Plan) {
    let stale = crate::sink::atomic::remove_stale(dst);
    if !stale.is_empty() {
        plan.warnings.push(format!(
            "removed what an interrupted run of ryzq had left for this output: {}",
            stale.join(", ")
        ));
    }
}

/// The report of quantizing `source` (named `src`) into `dst` as `plan` said, which gave
/// `converted`, on `threads` threads, from `started` on.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_report(
    src: &Path,
    dst: &Path,
    request: &QuantizeRequest,
    source: &Source,
    mut plan: Plan,
    converted: Converted,
    threads: Option<usize>,
    started: Instant,
) -> FileReport {
    plan.warnings.extend(converted.notes);
    FileReport {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        layout: request.layout.name().into(),
        method: request.method.name().into(),
        granularity: request.granularity.name(),
        linear_class: request.linear_class.name().into(),
        tensors: converted.reports,
        file_bytes_in: source.size(),
        file_bytes_out: converted.bytes_out,
        seconds: started.elapsed().as_secs_f64(),
        threads: threads.unwrap_or_else(crate::threads::default_count),
        warnings: plan.warnings,
        skipped_files: plan.other_files.skipped,
    }
}

/// How to dequantize.
#[derive(Debug, Clone, Copy)]
pub struct DequantizeRequest {
    /// The float type of every output tensor; `None`: each tensor's original.
    pub dtype: Option<FloatDType>,
    /// The scale convention of a transformers packed source whose `config.json` does not say.
    pub source_linear_class: Option<LinearClass>,
    pub level: SimdLevel,
    pub threads: Option<usize>,
}

/// Dequantizes the file (or, with `folder`, the model folder) `src`, whatever packed it
/// (ryzq, a GGUF writer, transformers), into `dst`; returns the number of tensors
/// dequantized.
pub fn dequantize(
    src: &Path,
    dst: &Path,
    folder: bool,
    request: &DequantizeRequest,
    progress: &mut Progress<'_>,
) -> Result<usize> {
    let DequantizeRequest {
        dtype,
        source_linear_class,
        level,
        threads,
    } = *request;
    let threads = crate::threads::resolve(threads)?;
    let source = open(src, folder)?;
    let sink = Sink::for_source(&source, dst)?;
    let kind = crate::sink::output_kind(&source, dst);
    let plan = Plan::dequantize(&source, dtype, source_linear_class, kind)?;
    crate::sink::atomic::remove_stale(dst);
    let run = Run {
        level,
        threads,
        request: None,
    };
    let count = plan
        .tensors()
        .filter(|t| matches!(t.action, Action::Dequantize { .. }))
        .count();
    convert(&source, &plan, sink, &run, progress)?;
    Ok(count)
}

/// The scales of the packed tensor `from` (`bytes`, its packed data), as `w = code * scale`.
fn source_scales(
    source: &Source,
    from: &PackedSource,
    bytes: &[u8],
    level: SimdLevel,
) -> Result<Vec<crate::transcode::SourceScale>> {
    let stored = match &from.scales {
        ScaleSource::Blocks => from.layout.get().block_scales(bytes),
        ScaleSource::Tensor(name) => {
            let (place, scale_tensor) = source
                .find(name)
                .ok_or_else(|| Error::Format(format!("its scale tensor {name:?} is missing")))?;
            let holder = source.file(place);
            let scale_dtype = scale_tensor.dtype.float().ok_or_else(|| {
                Error::Format(format!(
                    "its scale tensor {name:?} has dtype {}, not a float",
                    scale_tensor.dtype
                ))
            })?;
            let (groups, _) = from.granularity.groups(&from.shape)?;
            Error::check_size(scale_tensor.numel(), groups, || {
                format!(
                    "scales in {name:?}: one per {} of shape {:?}",
                    from.granularity.name(),
                    from.shape
                )
            })?;
            let mut stored = vec![0f32; scale_tensor.numel()];
            widen(level, scale_dtype, holder.read(scale_tensor)?, &mut stored);
            holder.release(scale_tensor);
            stored
        }
    };
    let divides = from.convention == ScaleConvention::Divide;
    Ok(stored.iter().map(|&s| source_scale(s, divides)).collect())
}

/// Reads, converts and writes one tensor as planned; returns its report.
fn convert_tensor(
    source: &Source,
    planned: &PlannedTensor,
    run: &Run<'_>,
    writer: &mut TensorFile,
    finer: &mut Vec<String>,
) -> Result<TensorReport> {
    let file = source.file(planned.source);
    let t = &file.tensors()[planned.source.index];
    let t0 = Instant::now();
    let mut bytes = Cow::Borrowed(
        if matches!(planned.action, Action::Copy(_) | Action::Drop) {
            // Copies go through read calls, which report a short file themselves.
            file.bytes(t)
        } else {
            file.read(t)?
        },
    );
    // Packed rows are reordered as codes, after unpacking; float rows here.
    let packed = matches!(
        planned.action,
        Action::Dequantize { .. } | Action::Transcode { .. }
    );
    if let (Some(order), false) = (planned.row_order, packed) {
        let rows = t.shape[0];
        bytes = Cow::Owned(order.apply(&bytes, rows, bytes.len() / rows)?);
    }
    let t1 = Instant::now();
    // A packed tensor counts the values of the weight it holds.
    let shape = match &planned.action {
        Action::Dequantize { from, .. } | Action::Transcode { from, .. } => from.shape.clone(),
        _ => t.shape.clone(),
    };
    let mut report = TensorReport {
        name: t.name.clone(),
        dtype: t.dtype.name().into(),
        shape,
        kept_because: None,
        carried_over: None,
        scale: None,
        stats: None,
        bytes_in: bytes.len() as u64,
        bytes_out: bytes.len() as u64,
        read_seconds: (t1 - t0).as_secs_f64(),
        quantize_seconds: 0.0,
        write_seconds: 0.0,
    };
    let mut computed = |out: Vec<u8>, report: &mut TensorReport| -> Result<()> {
        let t2 = Instant::now();
        writer.write(&planned.outputs[0].name, &out)?;
        report.quantize_seconds = (t2 - t1).as_secs_f64();
        report.write_seconds = t2.elapsed().as_secs_f64();
        report.bytes_out = out.len() as u64;
        Ok(())
    };
    match &planned.action {
        Action::Copy(reason) => {
            report.kept_because = Some(reason.clone());
            let name = &planned.outputs[0].name;
            if planned.row_order.is_some() {
                // Reordered above: the rows as the output has them.
                writer.write(name, &bytes)?;
            } else {
                writer.copy_from(name, file.file(), t.range.start as u64, bytes.len())?;
            }
            report.write_seconds = t1.elapsed().as_secs_f64();
        }
        Action::Drop => {
            report.kept_because = Some("the scales of a packed tensor, read with it".into());
            report.bytes_out = 0;
        }
        Action::DivideBias { divisor, .. } => {
            report.kept_because = Some(
                "a bias of an autobitlinear layer: stored divided by its weight's weight_scale, \
                 since the layer multiplies its sum, bias included, by that scale"
                    .into(),
            );
            let dtype = t.dtype.float().expect("planned for float biases");
            computed(
                divide_bias(run.level, dtype, &bytes, *divisor)?,
                &mut report,
            )?;
        }
        Action::ConvertFloat { from, to, factor } => {
            report.kept_because = Some(format!("not quantized; written as {}", to.name()));
            let out = crate::threads::run(run.threads, || {
                convert_float(run.level, *from, *to, &bytes, *factor)
            })?
            .0;
            computed(out, &mut report)?;
        }
        Action::Dequantize { from, dtype } => {
            let scales: Vec<f32> = source_scales(source, from, &bytes, run.level)?
                .iter()
                .map(|s| s.scale)
                .collect();
            report.kept_because = Some(format!(
                "packed in the source ({}): dequantized to {}",
                from.describe(),
                dtype.name()
            ));
            let mut out = crate::threads::run(run.threads, || {
                crate::dequantize(
                    &bytes,
                    &scales,
                    &from.shape,
                    from.layout,
                    from.granularity,
                    *dtype,
                    run.level,
                )
            })?
            .0?;
            if let Some(order) = planned.row_order {
                let rows = from.shape[0];
                out = order.apply(&out, rows, out.len() / rows)?;
            }
            computed(out, &mut report)?;
        }
        Action::Transcode {
            from,
            layout,
            granularity,
            scale,
        } => {
            let scales = source_scales(source, from, &bytes, run.level)?;
            if let Some((g, s)) = scales
                .iter()
                .enumerate()
                .find(|(_, s)| !s.scale.is_finite() || !s.inv.is_finite() && s.scale != 0.0)
            {
                return Err(Error::ScaleRange(format!(
                    "the scale of its group {g} is {} (stored {}): not a number its codes can \
                     be carried over with",
                    s.scale,
                    if from.convention == ScaleConvention::Divide {
                        s.inv
                    } else {
                        s.scale
                    }
                )));
            }
            let work = || {
                carry(
                    &bytes,
                    from,
                    scales,
                    planned.row_order,
                    (*layout, *granularity, scale.as_ref()),
                    run.level,
                )
            };
            let carried = crate::threads::run(run.threads, work)?.0?;
            let t2 = Instant::now();
            writer.write(&planned.outputs[0].name, &carried.packed)?;
            let mut scale_bytes = Vec::new();
            if let Some(scale) = scale {
                scale_bytes = stored_type(scale.dtype).encode(&carried.stored);
                writer.write(&scale.name, &scale_bytes)?;
            }
            report.quantize_seconds = (t2 - t1).as_secs_f64();
            report.write_seconds = t2.elapsed().as_secs_f64();
            report.bytes_out = (carried.packed.len() + scale_bytes.len()) as u64;
            report.carried_over = Some(format!("from the source's {}", from.describe()));
            report.scale = (carried.scales.len() == 1).then(|| carried.scales[0]);
            report.stats = Some(carried.stats);
        }
        Action::Quantize {
            layout,
            granularity,
            scale,
        } => {
            let request = run.request.expect("quantize plans come with their request");
            let dtype: FloatDType = t.dtype.float().expect("planned for float tensors");
            let view = TensorView::new(&bytes, dtype, &t.shape)?;
            let work = || -> Result<_> {
                let exact = exact_ternary_scales(&view, *granularity);
                let carried = exact.is_some();
                // Exact per row where a coarser granularity was asked for: worth saying.
                let per_row = !carried
                    && *granularity != Granularity::Row
                    && granularity.groups(view.shape())?.1
                        > view.shape().last().copied().unwrap_or(1)
                    && exact_ternary_scales(&view, Granularity::Row).is_some();
                let mut scales = match exact {
                    Some(mut scales) => {
                        // As the layout stores them (float16 in GGUF blocks): the error
                        // reported is that of the file as written.
                        crate::quantize::store_scales(layout.get(), &mut scales)?;
                        scales
                    }
                    None => {
                        group_scales(&view, *layout, request.method, *granularity, request.level)?
                    }
                };
                let stored = match scale {
                    Some(scale) => stored_scales(scale, &mut scales)?,
                    None => Vec::new(),
                };
                let q = quantize_with_scales(
                    &view,
                    *layout,
                    *granularity,
                    request.method.ties(),
                    &scales,
                    request.level,
                )?;
                Ok((stored, q, carried, per_row))
            };
            let (stored, q, carried, per_row) = crate::threads::run(run.threads, work)?.0?;
            if per_row {
                finer.push(t.name.clone());
            }
            if carried {
                report.carried_over = Some(format!(
                    "exactly ternary in the source, one scale per {}: codes and scales taken \
                     as they are",
                    granularity.name()
                ));
            }
            let t2 = Instant::now();
            writer.write(&planned.outputs[0].name, &q.packed)?;
            let mut scale_bytes = Vec::new();
            if let Some(scale) = scale {
                scale_bytes = stored_type(scale.dtype).encode(&stored);
                writer.write(&scale.name, &scale_bytes)?;
            }
            report.quantize_seconds = (t2 - t1).as_secs_f64();
            report.write_seconds = t2.elapsed().as_secs_f64();
            report.bytes_out = (q.packed.len() + scale_bytes.len()) as u64;
            report.scale = (q.scales.len() == 1).then(|| q.scales[0]);
            report.stats = Some(q.stats);
        }
    }
    file.release(t);
    Ok(report)
}
