//! The one conversion loop: every tensor of a [`Source`], as its [`Plan`] says, into a
//! [`Sink`], one tensor at a time, with a report of what happened to each.
//! `quantize_file`, `quantize_model`, `dequantize_file` and `dequantize_model` are calls to it.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use crate::dtype::FloatDType;
use crate::error::{Error, Result};
use crate::kernels::widen::widen;
use crate::metadata::ScaleConvention;
use crate::model::gguf::permute_rows;
use crate::plan::scales::{convert_float, divide_bias, stored_scales, stored_type};
use crate::plan::{Action, Plan, PlannedTensor, QuantizeRequest, ScaleSource};
use crate::report::{FileReport, TensorReport};
use crate::simd::SimdLevel;
use crate::sink::{Sink, TensorFile};
use crate::source::{SafetensorsFile, Source};
use crate::tensor::TensorView;
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

/// Carries out `plan` on `source` into `sink`; returns the report of every tensor and the
/// bytes written. On any error nothing is left at the destination.
pub fn convert(
    source: &Source,
    plan: &Plan,
    sink: Sink,
    run: &Run<'_>,
    progress: &mut Progress<'_>,
) -> Result<(Vec<TensorReport>, u64)> {
    let total = plan.tensors().count();
    let mut reports = Vec::with_capacity(total);
    let mut bytes_out = 0;
    for file in &plan.files {
        let mut writer = sink.create(plan, file)?;
        for t in &file.tensors {
            let holder = source.file(t.source);
            let report = convert_tensor(holder, t, run, &mut writer)
                .map_err(|e| e.in_file(holder.path(), Some(&t.name)))?;
            progress(&report, reports.len() + 1, total)?;
            reports.push(report);
        }
        bytes_out += writer.size();
        writer.finish()?;
    }
    sink.finish(source, plan)?;
    Ok((reports, bytes_out))
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
    let mut plan = Plan::for_output(&source, crate::sink::is_gguf(dst), request)?;
    let stale = crate::sink::atomic::remove_stale(dst);
    if !stale.is_empty() {
        plan.warnings.push(format!(
            "removed what an interrupted run of ryzq had left for this output: {}",
            stale.join(", ")
        ));
    }
    let run = Run {
        level: request.level,
        threads,
        request: Some(request),
    };
    let (tensors, file_bytes_out) = convert(&source, &plan, sink, &run, progress)?;
    Ok(FileReport {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        layout: request.layout.name().into(),
        method: request.method.name().into(),
        granularity: request.granularity.name(),
        linear_class: request.linear_class.name().into(),
        tensors,
        file_bytes_in: source.size(),
        file_bytes_out,
        seconds: start.elapsed().as_secs_f64(),
        threads: threads.unwrap_or_else(rayon::current_num_threads),
        warnings: plan.warnings.clone(),
        skipped_files: plan.other_files.skipped.clone(),
    })
}

/// Dequantizes the file (or, with `folder`, the model folder) `src`, written by ryzq, into
/// `dst`; returns the number of tensors dequantized.
pub fn dequantize(
    src: &Path,
    dst: &Path,
    folder: bool,
    dtype: Option<FloatDType>,
    level: SimdLevel,
    threads: Option<usize>,
    progress: &mut Progress<'_>,
) -> Result<usize> {
    let threads = crate::threads::resolve(threads)?;
    let source = open(src, folder)?;
    let sink = Sink::for_source(&source, dst)?;
    let plan = Plan::dequantize(&source, dtype)?;
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

/// Reads, converts and writes one tensor as planned; returns its report.
fn convert_tensor(
    file: &SafetensorsFile,
    planned: &PlannedTensor,
    run: &Run<'_>,
    writer: &mut TensorFile,
) -> Result<TensorReport> {
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
    if let Some(n_head) = planned.permute_heads {
        let rows = t.shape[0];
        bytes = Cow::Owned(permute_rows(&bytes, rows, bytes.len() / rows, n_head)?);
    }
    let t1 = Instant::now();
    let mut report = TensorReport {
        name: t.name.clone(),
        dtype: t.dtype.name().into(),
        shape: t.shape.clone(),
        kept_because: None,
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
            writer.copy_from(name, file.file(), t.range.start as u64, bytes.len())?;
            report.write_seconds = t1.elapsed().as_secs_f64();
        }
        Action::Drop => {
            report.kept_because = Some("the scales of a dequantized tensor".into());
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
        Action::Dequantize {
            layout,
            granularity,
            scales,
            convention,
            dtype,
        } => {
            let stored = match scales {
                ScaleSource::Blocks => layout.get().block_scales(&bytes),
                ScaleSource::Tensor(name) => {
                    let scale_tensor = file.tensor(name).ok_or_else(|| {
                        Error::Format(format!("its scale tensor {name:?} is missing"))
                    })?;
                    let scale_dtype = scale_tensor.dtype.float().ok_or_else(|| {
                        Error::Format(format!(
                            "its scale tensor {name:?} has dtype {}, not a float",
                            scale_tensor.dtype
                        ))
                    })?;
                    let mut stored = vec![0f32; scale_tensor.numel()];
                    widen(
                        run.level,
                        scale_dtype,
                        file.read(scale_tensor)?,
                        &mut stored,
                    );
                    file.release(scale_tensor);
                    stored
                }
            };
            let scales: Vec<f32> = match convention {
                ScaleConvention::Multiply => stored,
                ScaleConvention::Divide => stored.iter().map(|s| 1.0 / s).collect(),
            };
            let shape = &planned.outputs[0].shape;
            let out = crate::threads::run(run.threads, || {
                crate::dequantize(
                    &bytes,
                    &scales,
                    shape,
                    *layout,
                    *granularity,
                    *dtype,
                    run.level,
                )
            })?
            .0?;
            computed(out, &mut report)?;
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
                let mut scales =
                    group_scales(&view, *layout, request.method, *granularity, request.level)?;
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
                Ok((stored, q))
            };
            let (stored, q) = crate::threads::run(run.threads, work)?.0?;
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
