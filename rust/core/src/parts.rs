//! A model folder converted one output file at a time, each by a job of its own (on another
//! process or machine), then put together. Every job plans the whole conversion as a
//! one-process run would, converts one output file of that plan into the parts folder beside
//! the destination, and returns its [`Part`]; the driver gives the parts back in the plan's
//! order, and the output (its files, index and config) and the report are those of a
//! one-process run. Until [`finish`] succeeds there is nothing at the destination, and the
//! parts stay where a rerun finds them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::convert::{Converted, Part, Progress, Run, convert_file, open};
use crate::error::{Error, Result};
use crate::plan::{Action, Plan, QuantizeRequest, ScaleSource};
use crate::report::FileReport;
use crate::sink::atomic::parent;
use crate::sink::{OutputKind, SafetensorsWriter, Sink};
use crate::source::Source;

/// The suffix of the folder beside the destination that holds the finished parts.
pub const PARTS_SUFFIX: &str = ".ryzq-parts";

/// The parts folder of the destination `dst`: `.{name}.ryzq-parts` beside it.
#[must_use]
pub fn parts_folder(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy());
    parent(dst).join(format!(".{name}{PARTS_SUFFIX}"))
}

/// One output file of the plan, as a job converts it: its name, and the source files its
/// tensors are read from and its plan reads (their scales, the weights that divide biases),
/// which a job waits for and a rerun checks for changes.
#[derive(Debug, Clone)]
pub struct PlannedPart {
    pub name: String,
    pub sources: Vec<PathBuf>,
    /// The bytes of its tensors in the source.
    pub bytes_in: u64,
}

/// The parts a conversion of `src` into the model folder `dst` splits into, and the warnings
/// of its plan; checks the destination as a one-process run does and makes the parts folder.
pub fn plan(
    src: &Path,
    dst: &Path,
    request: &QuantizeRequest,
) -> Result<(Vec<PlannedPart>, Vec<String>)> {
    let source = open(src, true)?;
    let plan = plan_of(&source, dst, request)?;
    let parts = parts_folder(dst);
    std::fs::create_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
    let planned = plan
        .files
        .iter()
        .map(|file| {
            let mut files: Vec<usize> = Vec::new();
            let mut bytes_in = 0u64;
            for t in &file.tensors {
                files.push(t.source.file);
                let stored = &source.file(t.source).tensors()[t.source.index];
                bytes_in += stored.range.len() as u64;
                // Files whose data the plan of this tensor reads besides its own: a packed
                // weight's scales, and the weight whose scale an autobitlinear bias is divided by.
                let read = match &t.action {
                    Action::Transcode { from, .. } | Action::Dequantize { from, .. } => {
                        match &from.scales {
                            ScaleSource::Tensor(name) => Some(name),
                            ScaleSource::Blocks => None,
                        }
                    }
                    Action::DivideBias { weight, .. } => Some(weight),
                    _ => None,
                };
                if let Some((place, _)) = read.and_then(|name| source.find(name)) {
                    files.push(place.file);
                }
            }
            files.sort_unstable();
            files.dedup();
            PlannedPart {
                name: part_name(file.shard.as_deref()),
                sources: files
                    .into_iter()
                    .map(|f| source.files()[f].path().to_path_buf())
                    .collect(),
                bytes_in,
            }
        })
        .collect();
    Ok((planned, plan.warnings))
}

fn part_name(shard: Option<&str>) -> String {
    shard.unwrap_or("model.safetensors").to_owned()
}

/// The plan of a model-folder output of `source` at `dst`, which must be one.
fn plan_of(source: &Source, dst: &Path, request: &QuantizeRequest) -> Result<Plan> {
    let kind = crate::sink::output_kind(source, dst);
    if kind != OutputKind::Folder {
        return Err(Error::InvalidArgument(format!(
            "{}: a GGUF file is one output file, written by one process; convert it without \
             an executor (--workers, --scheduler), or into a model folder",
            dst.display()
        )));
    }
    crate::sink::check_folder_destination(source, dst)?;
    Plan::for_output(source, kind, request)
}

/// Converts the output file `index` of the plan of `src` into `dst`'s parts folder, under its
/// name there, complete or not at all.
pub fn convert_part(
    src: &Path,
    dst: &Path,
    request: &QuantizeRequest,
    index: usize,
    progress: &mut Progress<'_>,
) -> Result<Part> {
    let threads = crate::threads::resolve(request.threads)?;
    let source = open(src, true)?;
    let plan = plan_of(&source, dst, request)?;
    let total = plan.files.len();
    let file = plan.files.get(index).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "part {index} of a conversion of {total} output files"
        ))
    })?;
    let parts = parts_folder(dst);
    if !parts.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: the parts folder of {} is missing (plan the parts first)",
            parts.display(),
            dst.display()
        )));
    }
    let path = parts.join(part_name(file.shard.as_deref()));
    let outputs: Vec<_> = file.outputs().cloned().collect();
    let writer = SafetensorsWriter::create(&path, &outputs, file.metadata.clone())
        .map_err(|e| e.in_file(&path, None))?;
    let run = Run {
        level: request.level,
        threads,
        request: Some(request),
    };
    let count = file.tensors.len();
    let mut done = 0;
    convert_file(&source, file, writer, &run, &mut |report| {
        done += 1;
        progress(report, done, count)
    })
}

/// Puts the `parts` (of every output file, in the plan's order) together into the model
/// folder `dst`: each part's file linked (or copied) into the output's temporary folder, the
/// index, `config.json` and the model's other files written, the folder moved into place; then
/// the parts folder is removed. `started` is when the run began, for the report's time;
/// `reused` parts were made by an earlier run, which the report says. The report names
/// `shown_src` as the source where it is given (the folder `src` stands for).
pub fn finish(
    src: &Path,
    dst: &Path,
    request: &QuantizeRequest,
    parts: Vec<Part>,
    started: Instant,
    reused: usize,
    shown_src: Option<&Path>,
) -> Result<FileReport> {
    let threads = crate::threads::resolve(request.threads)?;
    let source = open(src, true)?;
    let mut plan = plan_of(&source, dst, request)?;
    let folder = parts_folder(dst);
    if parts.len() != plan.files.len() {
        return Err(Error::InvalidArgument(format!(
            "{} parts given for a conversion of {} output files",
            parts.len(),
            plan.files.len()
        )));
    }
    for (file, part) in plan.files.iter().zip(&parts) {
        if part.shard != file.shard {
            return Err(Error::InvalidArgument(format!(
                "a part for {:?} given where the plan has {:?}",
                part.shard, file.shard
            )));
        }
    }
    crate::convert::remove_stale(dst, &mut plan);
    let sink = Sink::for_source(&source, dst)?;
    let Sink::Folder(out) = &sink else {
        unreachable!("a model folder's plan has a folder sink");
    };
    for file in &plan.files {
        let name = part_name(file.shard.as_deref());
        let from = folder.join(&name);
        let expected: u64 = file.outputs().map(|o| o.nbytes() as u64).sum();
        let size = std::fs::metadata(&from)
            .map_err(|e| Error::io(&from, e))?
            .len();
        if size < expected {
            return Err(Error::Format(format!(
                "{}: {size} bytes, too short for the {expected} bytes of tensor data its part \
                 holds",
                from.display()
            )));
        }
        let to = out.path_of(&name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    sink.finish(&source, &plan)?;
    // The output is complete; the parts are no longer needed, and what is left of them
    // (nothing, where the links worked, but the folder) goes.
    let _ = std::fs::remove_dir_all(&folder);
    let total = parts.len();
    let mut converted = Converted::of_parts(parts);
    if reused > 0 {
        converted.notes.push(format!(
            "{reused} of {total} output files were made by an earlier run that stopped, and \
             reused: their sha256 and their source files had not changed"
        ));
    }
    Ok(crate::convert::quantize_report(
        shown_src.unwrap_or(src),
        dst,
        request,
        &source,
        plan,
        converted,
        threads,
        started,
    ))
}
