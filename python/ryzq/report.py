"""The error report of a quantized checkpoint: per tensor, per layer and for the whole file."""

from __future__ import annotations

import json
import math
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ryzq.array import QuantizationStats

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


@dataclass(frozen=True)
class TensorReport:
    name: str
    shape: tuple[int, ...]
    #: dtype of the input tensor ("bfloat16")
    dtype: str
    #: None when quantized, else why the tensor was copied as it is
    kept_because: str | None
    #: the dequantization scale (w' = code * scale) when the tensor has one scale
    scale: float | None
    stats: QuantizationStats | None
    bytes_in: int
    bytes_out: int
    read_seconds: float
    quantize_seconds: float
    write_seconds: float

    @property
    def quantized(self) -> bool:
        return self.kept_because is None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def layer(self) -> int | None:
        return layer_of(self.name)

    @property
    def block(self) -> str | None:
        """The numbered block (``model.layers.12``) the tensor belongs to, if any."""
        block = block_of(self.name)
        return f"{block[0]}.{block[1]}" if block else None

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> TensorReport:
        return cls(
            name=d["name"],
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            kept_because=d["kept_because"],
            scale=d["scale"],
            stats=QuantizationStats._from_native(d["stats"]) if d["stats"] else None,
            bytes_in=d["bytes_in"],
            bytes_out=d["bytes_out"],
            read_seconds=d["read_seconds"],
            quantize_seconds=d["quantize_seconds"],
            write_seconds=d["write_seconds"],
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quantized": self.quantized,
            "kept_because": self.kept_because,
            "layer": self.layer,
            "block": self.block,
            "scale": self.scale,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": {
                "read": self.read_seconds,
                "quantize": self.quantize_seconds,
                "write": self.write_seconds,
            },
        }
        if self.stats is not None:
            d.update(
                {
                    k: _finite(v) if isinstance(v, float) else v
                    for k, v in self.stats.to_dict().items()
                }
            )
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
        d.update(
            {k: _finite(v) if isinstance(v, float) else v for k, v in self.stats.to_dict().items()}
        )
        return d


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None, "std": None}
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.pstdev(values),
    }


@dataclass(frozen=True)
class QuantizationReport:
    """What quantizing a checkpoint did. ``str(report)`` is :meth:`summary`."""

    src: str
    dst: str
    layout: str
    method: str
    granularity: str
    linear_class: str
    tensors: list[TensorReport]
    file_bytes_in: int
    file_bytes_out: int
    seconds: float
    threads: int
    #: what the conversion did that is likely not what the model needs
    warnings: list[str] = field(default_factory=list)
    #: files of a model folder left out of the output, and why
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    layers: list[GroupReport] = field(init=False)
    total: GroupReport = field(init=False)

    def __post_init__(self) -> None:
        by_block: dict[tuple[str, int] | None, list[TensorReport]] = {}
        for t in self.tensors:
            by_block.setdefault(block_of(t.name), []).append(t)
        # Towers in the order they first appear, each tower's blocks by index.
        towers = list(dict.fromkeys(k[0] for k in by_block if k is not None))
        numbered = sorted(
            (k for k in by_block if k is not None), key=lambda k: (towers.index(k[0]), k[1])
        )
        keys = numbered + ([None] if None in by_block else [])
        object.__setattr__(self, "layers", [GroupReport.pool(k, by_block[k]) for k in keys])
        object.__setattr__(self, "total", GroupReport.pool(None, self.tensors))

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> QuantizationReport:
        return cls(
            src=d["src"],
            dst=d["dst"],
            layout=d["layout"],
            method=d["method"],
            granularity=d["granularity"],
            linear_class=d["linear_class"],
            tensors=[TensorReport._from_native(t) for t in d["tensors"]],
            file_bytes_in=d["file_bytes_in"],
            file_bytes_out=d["file_bytes_out"],
            seconds=d["seconds"],
            threads=d["threads"],
            warnings=list(d.get("warnings", [])),
            skipped_files=[tuple(f) for f in d.get("skipped_files", [])],
        )

    @property
    def quantized(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.quantized]

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def compression_ratio(self) -> float:
        """File bytes in / file bytes out."""
        return self.file_bytes_in / self.file_bytes_out if self.file_bytes_out else math.inf

    @property
    def quantized_compression_ratio(self) -> float:
        """Bytes of the quantized tensors in / their packed bytes and scales out."""
        q = self.quantized
        out = sum(t.bytes_out for t in q)
        return sum(t.bytes_in for t in q) / out if out else math.nan

    @property
    def seconds_by_phase(self) -> dict[str, float]:
        return {
            "read": math.fsum(t.read_seconds for t in self.tensors),
            "quantize": math.fsum(t.quantize_seconds for t in self.tensors),
            "write": math.fsum(t.write_seconds for t in self.tensors),
            "total": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        q = self.quantized
        return {
            "src": self.src,
            "dst": self.dst,
            "layout": self.layout,
            "method": self.method,
            "granularity": self.granularity,
            "linear_class": self.linear_class if self.layout == "bitnet" else None,
            "threads": self.threads,
            "warnings": list(self.warnings),
            "skipped_files": [{"path": p, "why": why} for p, why in self.skipped_files],
            "summary": {
                "tensors": len(self.tensors),
                "quantized_tensors": len(q),
                "parameters": self.parameters,
                "quantized_parameters": sum(t.numel for t in q),
                "mse": _spread([t.stats.mse for t in q if t.stats]),
                "nmse": _spread([t.stats.nmse for t in q if t.stats]),
                "pooled_nmse": self.total.stats.nmse,
                "bytes_in": self.file_bytes_in,
                "bytes_out": self.file_bytes_out,
                "compression_ratio": _finite(self.compression_ratio),
                "quantized_compression_ratio": _finite(self.quantized_compression_ratio),
                "seconds": self.seconds_by_phase,
                "parameters_per_second": self.parameters / self.seconds if self.seconds else None,
                "bytes_per_second": self.file_bytes_in / self.seconds if self.seconds else None,
            },
            "layers": [g.to_dict() for g in self.layers],
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def summary(self) -> str:
        q = self.quantized
        nmse = _spread([t.stats.nmse for t in q if t.stats])
        secs = self.seconds_by_phase
        ratio = self.quantized_compression_ratio
        alone = f"quantized tensors alone: {ratio:.2f}x" if q else "no tensor quantized"
        lines = [
            f"ryzq: {self.src} -> {self.dst}",
            f"layout {self.layout}"
            + (f" ({self.linear_class})" if self.layout == "bitnet" else "")
            + f", method {self.method}, granularity {self.granularity}, "
            + plural(self.threads, "thread"),
            f"{plural(len(self.tensors), 'tensor')} ({len(q):,} quantized, "
            f"{len(self.tensors) - len(q):,} kept), {plural(self.parameters, 'parameter')}",
            f"size {_size(self.file_bytes_in)} -> {_size(self.file_bytes_out)}: "
            f"{self.compression_ratio:.2f}x ({alone})",
        ]
        if q:
            lines.append(
                f"NMSE over quantized tensors: mean {nmse['mean']:.4f}, min {nmse['min']:.4f}, "
                f"max {nmse['max']:.4f}, std {nmse['std']:.4f}; pooled "
                f"{self.total.stats.nmse:.4f} (SNR {self.total.stats.snr_db:.2f} dB)"
            )
        rate = self.file_bytes_in / self.seconds / 1e9 if self.seconds else math.inf
        lines.append(
            f"time {secs['total']:.2f} s (read {secs['read']:.2f}, quantize "
            f"{secs['quantize']:.2f}, write {secs['write']:.2f}): {rate:.2f} GB/s, "
            f"{self.parameters / max(self.seconds, 1e-12) / 1e6:,.0f} Mparam/s"
        )
        lines.append("")
        towers = {g.block.rsplit(".", 1)[0] for g in self.layers if g.block}
        labels = [
            "-" if g.block is None else (g.block if len(towers) > 1 else str(g.layer))
            for g in self.layers
        ]
        width = max([display_width(label) for label in labels] + [len("layer")])
        lines.append(
            f"{pad('layer', width, '>')} {'tensors':>8} {'params':>13} {'NMSE':>8} "
            f"{'SNR dB':>7} {'max err':>9} {'zeros':>6} {'in':>11} {'out':>11}"
        )
        for label, g in zip(labels, self.layers, strict=True):
            s = g.stats
            if g.quantized:
                err = (
                    f"{s.nmse:>8.4f} {s.snr_db:>7.2f} {s.max_abs_error:>9.3g} "
                    f"{s.zeros_fraction:>6.1%}"
                )
            else:
                err = f"{'kept':>8} {'':>7} {'':>9} {'':>6}"
            counted = f"{g.quantized}/{g.tensors}"
            params = s.numel if g.quantized else 0
            lines.append(
                f"{pad(label, width, '>')} {counted:>8} {params:>13,} {err} "
                f"{_size(g.bytes_in):>11} {_size(g.bytes_out):>11}"
            )
        reasons = Counter(t.kept_because for t in self.tensors if not t.quantized)
        if reasons:
            lines.append("")
            lines.append("kept as they are:")
            for reason, n in reasons.most_common():
                lines.append(f"  {n:>4} x {reason}")
        if self.skipped_files:
            lines.append("")
            lines.append("files of the model folder left out:")
            for path, why in self.skipped_files:
                lines.append(f"  {path}: {why}")
        for warning in self.warnings:
            lines.append("")
            lines.append(f"warning: {warning}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
