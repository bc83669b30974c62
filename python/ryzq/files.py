"""Checkpoint files and model folders: quantize, dequantize, inspect."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.array import (
    LAYOUTS,
    METHODS,
    _check_choice,
    _check_threads,
    _dtype_name,
    _granularity_name,
)
from ryzq.config import RyzqWarning, granularity_warning, quantization_config
from ryzq.progress import ProgressBar
from ryzq.report import QuantizationReport

LINEAR_CLASSES = ("bitlinear", "autobitlinear")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
CONFIG = "config.json"


def _patterns(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The validated header of a safetensors file: ``size``, ``metadata`` (``__metadata__``)
    and ``tensors`` (name, dtype, shape and byte range of each, in file order)."""
    path = Path(path)
    if path.is_dir():
        raise RyzqError(f"{path}: a folder, not a safetensors file")
    return _ryzq.read_header(os.fspath(path))


def ryzq_description(path: str | os.PathLike, metadata: dict[str, str]) -> dict[str, Any] | None:
    """The ``ryzq`` entry of a file's ``__metadata__``, parsed, or None if it has none."""
    text = metadata.get("ryzq")
    if text is None:
        return None
    try:
        described = json.loads(text)
        if not isinstance(described.get("quantized"), dict):
            raise ValueError("no 'quantized' map")
    except (ValueError, AttributeError) as err:
        raise RyzqError(f"{path}: unreadable ryzq metadata ({err})") from None
    return described


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
    ``1/absmean`` for ``linear_class="bitlinear"``, ``absmean`` for ``"autobitlinear"``, whose
    biases are stored divided by ``weight_scale``); ``"i2"`` and ``"t1"`` write ryzq's own
    layouts with float32 scales, ``"tq2_0"``, ``"tq1_0"`` and ``"q2_0"`` GGUF's blocks. The
    granularity defaults to one scale per tensor, except absmax in the GGUF layouts (one per
    block). Every file records how it was written in its metadata, so :func:`dequantize_file`
    and ``ryzq inspect`` need nothing else. ``dst`` appears only when everything succeeded.
    Returns the error report.
    """
    return _quantize_file(
        src,
        dst,
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


def _quantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    layout: str,
    method: str,
    granularity: str | None,
    linear_class: str,
    include: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
    threads: int | None,
    progress: bool,
    simd: str | None,
    companions: Sequence[Path] = (),
    label: str | None = None,
) -> QuantizationReport:
    layout = _check_choice(layout, LAYOUTS, "layout")
    method = _check_choice(method, METHODS, "method")
    granularity = _granularity_name(granularity, layout, method)
    linear_class = _check_choice(linear_class, LINEAR_CLASSES, "linear_class")
    threads = _check_threads(threads)
    if Path(src).is_dir():
        raise RyzqError(f"{src}: a folder; quantize model folders with quantize_model")
    callback = None
    if progress:
        size = Path(src).stat().st_size if Path(src).is_file() else 0
        callback = ProgressBar(size, label=f"{label or Path(src).name} ")
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
        [os.fspath(c) for c in companions],
    )
    return QuantizationReport._from_native(report)


def dequantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
) -> int:
    """Write a plain float checkpoint from a file made by :func:`quantize_file`: original
    names and shapes, each quantized tensor in its original dtype. With ``dtype``
    ("float32", "bfloat16", ...) every float tensor, kept ones included, is written in it.
    Returns the number of tensors dequantized."""
    if Path(src).is_dir():
        raise RyzqError(f"{src}: a folder; dequantize model folders with dequantize_model")
    name = None if dtype is None else _dtype_name(dtype)
    return _ryzq.dequantize_file(
        os.fspath(src), os.fspath(dst), name, simd, _check_threads(threads)
    )


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RyzqError(f"{path}: {what} that is not valid JSON ({err})") from None


def model_shards(src_dir: str | os.PathLike) -> tuple[list[str], dict[str, Any] | None]:
    """The safetensors files of a model folder, and its index when it is sharded."""
    src_dir = Path(src_dir)
    index_path = src_dir / INDEX
    if index_path.is_file():
        index = _load_json(index_path, "a safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise RyzqError(f"{index_path}: not a safetensors index (no weight_map of names)")
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


def _check_destination_folder(dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise RyzqError(f"{dst}: exists and is not an empty folder")
    if not dst.parent.is_dir():
        raise RyzqError(f"{dst}: the folder {dst.parent} does not exist")


def _write_folder(
    src: Path,
    dst: Path,
    shards: list[str],
    index: dict[str, Any] | None,
    convert: Callable[[str, Path], None],
    config: Callable[[], dict[str, Any]],
) -> None:
    """Writes the model folder ``dst`` from ``src`` in a temporary folder beside it, renamed
    into place at the end: each shard through ``convert(shard, output path)``, the index
    rebuilt from the shards as written, ``config()`` (called once every shard is converted) as
    ``config.json``, every other file copied."""
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".ryzq-partial", dir=dst.parent))
    try:
        weight_map: dict[str, str] = {}
        total_size = 0
        for shard in shards:
            convert(shard, work / shard)
            for t in read_header(work / shard)["tensors"]:
                weight_map[t["name"]] = shard
                total_size += t["end"] - t["start"]
        if index is not None:
            new_index = {
                "metadata": {**index.get("metadata", {}), "total_size": total_size},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (work / INDEX).write_text(json.dumps(new_index, indent=2) + "\n")
        (work / CONFIG).write_text(json.dumps(config(), indent=2) + "\n")
        done = set(shards) | {INDEX, CONFIG}
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


def _model_config(src: Path) -> dict[str, Any]:
    config_path = src / CONFIG
    if not src.is_dir():
        raise RyzqError(f"{src}: not a folder")
    if not config_path.is_file():
        raise RyzqError(f"{src}: no config.json, so not a model folder")
    config = _load_json(config_path, "a config")
    if not isinstance(config, dict):
        raise RyzqError(f"{config_path}: not a JSON object")
    return config


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
    all. Returns one report for all shards. Asking a BitNet model for absmean at another
    granularity than per tensor warns (:class:`RyzqWarning`, and in the report)."""
    src, dst = Path(src_dir), Path(dst_dir)
    config = _model_config(src)
    _check_destination_folder(dst)
    shards, index = model_shards(src)
    layout = _check_choice(layout, LAYOUTS, "layout")
    method = _check_choice(method, METHODS, "method")
    granularity = _granularity_name(granularity, layout, method)
    advice = granularity_warning(config, method, granularity)
    if advice:
        warnings.warn(advice, RyzqWarning, stacklevel=2)

    reports = []

    def convert(shard: str, out: Path) -> None:
        reports.append(
            _quantize_file(
                src / shard,
                out,
                layout=layout,
                method=method,
                granularity=granularity,
                linear_class=linear_class,
                include=include,
                exclude=exclude,
                threads=threads,
                progress=progress,
                simd=simd,
                companions=[src / s for s in shards if s != shard],
            )
        )

    def finished_config() -> dict[str, Any]:
        report = reports[-1]
        tensors = [t for r in reports for t in r.tensors]
        weights = [t for t in tensors if len(t.shape) == 2 and t.name.endswith(".weight")]
        return {
            **config,
            "quantization_config": quantization_config(
                kept_weights=[t.name for t in weights if not t.quantized],
                quantized_weights=[t.name for t in weights if t.quantized],
                layout=layout,
                method=report.method,
                granularity=report.granularity,
                linear_class=linear_class,
            ),
        }

    _write_folder(src, dst, shards, index, convert, finished_config)
    return QuantizationReport.combine(
        reports, src=str(src), dst=str(dst), warnings=[advice] if advice else []
    )


def dequantize_model(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
) -> int:
    """Write a plain float model folder from one made by :func:`quantize_model`: every shard
    dequantized (as :func:`dequantize_file` does), an index with the new sizes, ``config.json``
    without its ``quantization_config``, every other file copied. Returns the number of tensors
    dequantized."""
    src, dst = Path(src_dir), Path(dst_dir)
    config = _model_config(src)
    _check_destination_folder(dst)
    shards, index = model_shards(src)
    config = {k: v for k, v in config.items() if k != "quantization_config"}
    counted = []

    def convert(shard: str, out: Path) -> None:
        counted.append(dequantize_file(src / shard, out, dtype=dtype, simd=simd, threads=threads))

    _write_folder(src, dst, shards, index, convert, lambda: config)
    return sum(counted)
