"""Checkpoint files and model folders: quantize, dequantize, inspect."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.array import LAYOUTS, METHODS, _check_choice, default_granularity
from ryzq.progress import ProgressBar
from ryzq.report import QuantizationReport

LINEAR_CLASSES = ("bitlinear", "autobitlinear")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def _patterns(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The validated header of a safetensors file: ``size``, ``metadata`` (``__metadata__``)
    and ``tensors`` (name, dtype, shape and byte range of each, in file order)."""
    return _ryzq.read_header(os.fspath(path))


def quantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    layout: str = "bitnet",
    method: str = "absmean",
    granularity: str | None = None,
    linear_class: str = "bitlinear",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    threads: int | None = None,
    progress: bool = False,
    simd: str | None = None,
) -> QuantizationReport:
    """Quantize the safetensors checkpoint ``src`` into ``dst``, one tensor at a time.

    By default the 2-D ``*.weight`` tensors of linear layers are quantized and everything else
    (embeddings, ``lm_head``, norms, biases, non-float tensors) is copied byte for byte;
    ``include`` / ``exclude`` glob patterns override that. ``layout="bitnet"`` writes
    transformers' BitNet layout (``X.weight`` packed, ``X.weight_scale`` in the weight's dtype,
    ``1/absmean`` for ``linear_class="bitlinear"``, ``absmean`` for ``"autobitlinear"``);
    ``"i2"`` and ``"t1"`` write ryzq's own layouts with float32 scales. Every file records how
    it was written in its metadata, so :func:`dequantize_file` and ``ryzq inspect`` need
    nothing else. ``dst`` appears only when everything succeeded. Returns the error report.
    """
    _check_choice(layout, LAYOUTS, "layout")
    _check_choice(method, METHODS, "method")
    granularity = granularity or default_granularity(layout)
    _check_choice(linear_class, LINEAR_CLASSES, "linear_class")
    callback = None
    if progress:
        size = Path(src).stat().st_size if Path(src).is_file() else 0
        callback = ProgressBar(size, label=f"{Path(src).name} ")
    report = _ryzq.quantize_file(
        os.fspath(src),
        os.fspath(dst),
        layout,
        method,
        granularity,
        linear_class,
        _patterns(include),
        _patterns(exclude),
        threads,
        callback,
        simd,
    )
    return QuantizationReport._from_native(report)


def dequantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str | None = None,
    simd: str | None = None,
) -> int:
    """Write a plain float checkpoint from a file made by :func:`quantize_file`: original
    names and shapes, original dtypes unless ``dtype`` ("float32", "bfloat16", ...) is given.
    Returns the number of tensors dequantized."""
    return _ryzq.dequantize_file(os.fspath(src), os.fspath(dst), dtype, simd)


def _shards(src_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    index_path = src_dir / INDEX
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise RyzqError(f"{index_path}: not a safetensors index ({err})") from None
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (src_dir / shard).is_file():
                names = [n for n, s in weight_map.items() if s == shard]
                raise RyzqError(
                    f"{index_path}: shard {shard!r} (holding {names[0]!r} and "
                    f"{len(names) - 1} more tensors) does not exist"
                )
        return shards, index
    if (src_dir / SINGLE).is_file():
        return [SINGLE], None
    raise RyzqError(f"{src_dir}: no {SINGLE} and no {INDEX}")


def quantize_model(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    layout: str = "bitnet",
    method: str = "absmean",
    granularity: str | None = None,
    linear_class: str = "bitlinear",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    threads: int | None = None,
    progress: bool = False,
    simd: str | None = None,
) -> QuantizationReport:
    """Quantize a Hugging Face model folder (``config.json`` and ``model.safetensors`` or
    shards with ``model.safetensors.index.json``) into ``dst_dir``: the packed shards, a
    correct index, ``config.json`` with its ``quantization_config``, and every other file
    copied unchanged. ``dst_dir`` must not exist or be empty; it appears complete or not at
    all. Returns one report for all shards."""
    src, dst = Path(src_dir), Path(dst_dir)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise RyzqError(f"{src}: no config.json, so not a model folder")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise RyzqError(f"{dst}: exists and is not an empty folder")
    if not dst.parent.is_dir():
        raise RyzqError(f"{dst}: the folder {dst.parent} does not exist")
    shards, index = _shards(src)
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise RyzqError(f"{config_path}: not valid JSON ({err})") from None

    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".ryzq-partial", dir=dst.parent))
    try:
        reports = []
        weight_map: dict[str, str] = {}
        total_size = 0
        for shard in shards:
            report = quantize_file(
                src / shard,
                work / shard,
                layout=layout,
                method=method,
                granularity=granularity,
                linear_class=linear_class,
                include=include,
                exclude=exclude,
                threads=threads,
                progress=progress,
                simd=simd,
            )
            reports.append(report)
            for t in read_header(work / shard)["tensors"]:
                weight_map[t["name"]] = shard
                total_size += t["end"] - t["start"]
        if index is not None:
            new_index = {
                "metadata": {**index.get("metadata", {}), "total_size": total_size},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (work / INDEX).write_text(json.dumps(new_index, indent=2) + "\n")
        report = QuantizationReport.combine(reports, src=str(src), dst=str(dst))
        config["quantization_config"] = _quantization_config(report, layout, linear_class)
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        done = set(shards) | {INDEX, "config.json"}
        for entry in src.iterdir():
            if entry.name in done:
                continue
            if entry.is_dir():
                shutil.copytree(entry, work / entry.name)
            else:
                shutil.copy2(entry, work / entry.name)
        if dst.exists():
            dst.rmdir()
        work.rename(dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def _quantization_config(
    report: QuantizationReport, layout: str, linear_class: str
) -> dict[str, Any]:
    kept = sorted(
        t.name.removesuffix(".weight")
        for t in report.tensors
        if not t.quantized and len(t.shape) == 2 and t.name.endswith(".weight")
    )
    if layout == "bitnet":
        return {
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": "offline",
            "modules_to_not_convert": kept,
        }
    # The other layouts (i2, t1 and GGUF's blocks in safetensors) are for ryzq, whose
    # dequantize_file reads each file's own metadata; transformers cannot load them.
    return {
        "quant_method": "ryzq",
        "layout": layout,
        "method": report.method,
        "granularity": report.granularity,
        "modules_to_not_convert": kept,
    }
