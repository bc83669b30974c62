"""The error report of a quantized checkpoint: per tensor, per layer and for the whole file.

The report itself is the core's: :class:`QuantizationReport`, :class:`TensorReport` and
:class:`QuantizationStats` are its structs, frozen, every field defined once, in Rust, with the
values derived from them. What is here is how a report reads (its summary, its JSON) and what
follows from tensor names (the layer a tensor is in, the pooled errors of a layer); the methods of
those classes that give them call the functions here.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryzq._ryzq import QuantizationReport, QuantizationStats, TensorReport

# The outermost numbered block: T5's `encoder.block.3.layer.1.` is block 3 of `encoder.block`.
_BLOCK = re.compile(r"^(?:(.*?)\.)?(layers|layer|blocks|block|h)\.(\d+)\.")


def block_of(name: str) -> tuple[str, int] | None:
    """The numbered block a tensor belongs to, as (everything before the index, the index):
    ``model.layers.12.mlp.up_proj.weight`` -> ``("model.layers", 12)``. Towers that number
    their blocks alike (``vision_tower...layers.0``, ``language_model...layers.0``) differ by
    the prefix."""
    m = _BLOCK.match(name)
    if not m:
        return None
    head = f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(2)
    return head, int(m.group(3))


def layer_of(name: str) -> int | None:
    """The block index in a tensor name (``model.layers.12.mlp...`` -> 12), if any."""
    block = block_of(name)
    return block[1] if block else None


def block_name(name: str) -> str | None:
    """The whole name of the numbered block a tensor belongs to (``model.layers.12``), if any."""
    block = block_of(name)
    return f"{block[0]}.{block[1]}" if block else None


def plural(n: int, word: str) -> str:
    """``1 tensor``, ``2 tensors``."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int, align: str = "<") -> str:
    """``text`` padded to ``width`` terminal columns."""
    fill = " " * max(width - display_width(text), 0)
    return text + fill if align == "<" else fill + text


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _size(nbytes: float) -> str:
    """A byte count in decimal units, as the progress bar and the GB/s rates count them."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def _finite_values(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its infinite and NaN floats as None, which JSON has no other word for."""
    return {k: _finite(v) if isinstance(v, float) else v for k, v in d.items()}


def stats_dict(stats: QuantizationStats) -> dict[str, Any]:
    """``QuantizationStats.to_dict()``."""
    return {
        "numel": stats.numel,
        "mse": stats.mse,
        "nmse": stats.nmse,
        "snr_db": stats.snr_db,
        "max_abs_error": stats.max_abs_error,
        "zeros_fraction": stats.zeros_fraction,
        "counts": {str(k): v for k, v in stats.counts.items()},
    }


def tensor_dict(tensor: TensorReport) -> dict[str, Any]:
    """``TensorReport.to_dict()``: the tensor's entry in the report's JSON."""
    d: dict[str, Any] = {
        "name": tensor.name,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "quantized": tensor.quantized,
        "kept_because": tensor.kept_because,
        "carried_over": tensor.carried_over,
        "layer": layer_of(tensor.name),
        "block": block_name(tensor.name),
        "scale": tensor.scale,
        "bytes_in": tensor.bytes_in,
        "bytes_out": tensor.bytes_out,
        "seconds": {
            "read": tensor.read_seconds,
            "quantize": tensor.quantize_seconds,
            "write": tensor.write_seconds,
        },
    }
    if tensor.stats is not None:
        d.update(_finite_values(stats_dict(tensor.stats)))
    return d


@dataclass(frozen=True)
class GroupReport:
    """The quantized tensors of one layer (or of the whole file), their errors pooled."""

    #: block index, or None for tensors outside numbered blocks
    layer: int | None
    #: the whole block name (``model.layers.12``), or None for tensors outside numbered blocks
    block: str | None
    tensors: int
    quantized: int
    bytes_in: int
    bytes_out: int
    stats: QuantizationStats

    @classmethod
    def pool(cls, block: tuple[str, int] | None, tensors: list[TensorReport]) -> GroupReport:
        stats = [t.stats for t in tensors if t.stats is not None]
        counts: Counter[int] = Counter()
        for s in stats:
            counts.update(s.counts)
        return cls(
            layer=block[1] if block else None,
            block=f"{block[0]}.{block[1]}" if block else None,
            tensors=len(tensors),
            quantized=len(stats),
            bytes_in=sum(t.bytes_in for t in tensors),
            bytes_out=sum(t.bytes_out for t in tensors),
            # Exactly rounded sums, so that a layer's error does not depend on the order of
            # its tensors.
            stats=QuantizationStats(
                numel=sum(s.numel for s in stats),
                sse=math.fsum(s.sse for s in stats),
                sum_sq=math.fsum(s.sum_sq for s in stats),
                max_abs_error=max((s.max_abs_error for s in stats), default=0.0),
                counts={k: counts[k] for k in (-1, 0, 1)},
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {
            "layer": self.layer,
            "block": self.block,
            "tensors": self.tensors,
            "quantized": self.quantized,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }
        d.update(_finite_values(stats_dict(self.stats)))
        return d


def layers(report: QuantizationReport) -> list[GroupReport]:
    """``QuantizationReport.layers``: the tensors by numbered block, towers in the order they
    first appear and each tower's blocks by index, then those outside numbered blocks."""
    by_block: dict[tuple[str, int] | None, list[TensorReport]] = {}
    for t in report.tensors:
        by_block.setdefault(block_of(t.name), []).append(t)
    towers = list(dict.fromkeys(k[0] for k in by_block if k is not None))
    numbered = sorted(
        (k for k in by_block if k is not None), key=lambda k: (towers.index(k[0]), k[1])
    )
    keys = numbered + ([None] if None in by_block else [])
    return [GroupReport.pool(k, by_block[k]) for k in keys]


def total(report: QuantizationReport) -> GroupReport:
    """``QuantizationReport.total``: every tensor in one group."""
    return GroupReport.pool(None, report.tensors)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None, "std": None}
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.pstdev(values),
    }


def report_dict(report: QuantizationReport) -> dict[str, Any]:
    """``QuantizationReport.to_dict()``."""
    tensors = report.tensors
    q = [t for t in tensors if t.quantized]
    parameters = report.parameters
    seconds = report.seconds
    return {
        "src": report.src,
        "dst": report.dst,
        "layout": report.layout,
        "method": report.method,
        "granularity": report.granularity,
        "linear_class": report.linear_class if report.layout == "bitnet" else None,
        "threads": report.threads,
        "warnings": list(report.warnings),
        "skipped_files": [{"path": p, "why": why} for p, why in report.skipped_files],
        "summary": {
            "tensors": len(tensors),
            "quantized_tensors": len(q),
            "carried_over_tensors": sum(t.carried_over is not None for t in q),
            "parameters": parameters,
            "quantized_parameters": sum(t.numel for t in q),
            "mse": _spread([t.stats.mse for t in q if t.stats]),
            "nmse": _spread([t.stats.nmse for t in q if t.stats]),
            "pooled_nmse": total(report).stats.nmse,
            "bytes_in": report.file_bytes_in,
            "bytes_out": report.file_bytes_out,
            "compression_ratio": _finite(report.compression_ratio),
            "quantized_compression_ratio": _finite(report.quantized_compression_ratio),
            "seconds": report.seconds_by_phase,
            "parameters_per_second": parameters / seconds if seconds else None,
            "bytes_per_second": report.file_bytes_in / seconds if seconds else None,
        },
        "layers": [g.to_dict() for g in layers(report)],
        "tensors": [tensor_dict(t) for t in tensors],
    }


def report_json(report: QuantizationReport, path: str | Path | None = None) -> str:
    """``QuantizationReport.to_json()``."""
    text = json.dumps(report_dict(report), indent=2)
    if path is not None:
        Path(path).write_text(text + "\n")
    return text


def summary(report: QuantizationReport) -> str:
    """``QuantizationReport.summary()``."""
    tensors = report.tensors
    q = [t for t in tensors if t.quantized]
    groups = layers(report)
    pooled = total(report).stats
    parameters = report.parameters
    nmse = _spread([t.stats.nmse for t in q if t.stats])
    secs = report.seconds_by_phase
    ratio = report.quantized_compression_ratio
    alone = f"quantized tensors alone: {ratio:.2f}x" if q else "no tensor quantized"
    carried = Counter(t.carried_over for t in q if t.carried_over is not None)
    of_them = f", {sum(carried.values()):,} of them carried over" if carried else ""
    lines = [
        f"ryzq: {report.src} -> {report.dst}",
        f"layout {report.layout}"
        + (f" ({report.linear_class})" if report.layout == "bitnet" else "")
        + f", method {report.method}, granularity {report.granularity}, "
        + plural(report.threads, "thread"),
        f"{plural(len(tensors), 'tensor')} ({len(q):,} quantized{of_them}, "
        f"{len(tensors) - len(q):,} kept), {plural(parameters, 'parameter')}",
        f"size {_size(report.file_bytes_in)} -> {_size(report.file_bytes_out)}: "
        f"{report.compression_ratio:.2f}x ({alone})",
    ]
    if q:
        lines.append(
            f"NMSE over quantized tensors: mean {nmse['mean']:.4f}, min {nmse['min']:.4f}, "
            f"max {nmse['max']:.4f}, std {nmse['std']:.4f}; pooled "
            f"{pooled.nmse:.4f} (SNR {pooled.snr_db:.2f} dB)"
        )
    rate = report.file_bytes_in / report.seconds / 1e9 if report.seconds else math.inf
    lines.append(
        f"time {secs['total']:.2f} s (read {secs['read']:.2f}, quantize "
        f"{secs['quantize']:.2f}, write {secs['write']:.2f}): {rate:.2f} GB/s, "
        f"{parameters / max(report.seconds, 1e-12) / 1e6:,.0f} Mparam/s"
    )
    lines.append("")
    towers = {g.block.rsplit(".", 1)[0] for g in groups if g.block}
    labels = [
        "-" if g.block is None else (g.block if len(towers) > 1 else str(g.layer)) for g in groups
    ]
    width = max([display_width(label) for label in labels] + [len("layer")])
    lines.append(
        f"{pad('layer', width, '>')} {'tensors':>8} {'params':>13} {'NMSE':>8} "
        f"{'SNR dB':>7} {'max err':>9} {'zeros':>6} {'in':>11} {'out':>11}"
    )
    for label, g in zip(labels, groups, strict=True):
        s = g.stats
        if g.quantized:
            err = (
                f"{s.nmse:>8.4f} {s.snr_db:>7.2f} {s.max_abs_error:>9.3g} {s.zeros_fraction:>6.1%}"
            )
        else:
            err = f"{'kept':>8} {'':>7} {'':>9} {'':>6}"
        counted = f"{g.quantized}/{g.tensors}"
        params = s.numel if g.quantized else 0
        lines.append(
            f"{pad(label, width, '>')} {counted:>8} {params:>13,} {err} "
            f"{_size(g.bytes_in):>11} {_size(g.bytes_out):>11}"
        )
    if carried:
        lines.append("")
        lines.append(
            "carried over (codes already ternary; error: their scales against the source's):"
        )
        for reason, n in carried.most_common():
            lines.append(f"  {n:>4} x {reason}")
    reasons = Counter(t.kept_because for t in tensors if not t.quantized)
    if reasons:
        lines.append("")
        lines.append("kept as they are:")
        for reason, n in reasons.most_common():
            lines.append(f"  {n:>4} x {reason}")
    if report.skipped_files:
        lines.append("")
        lines.append("files of the model folder left out:")
        for path, why in report.skipped_files:
            lines.append(f"  {path}: {why}")
    for warning in report.warnings:
        lines.append("")
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
