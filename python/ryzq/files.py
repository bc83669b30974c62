"""Checkpoint files and model folders: quantize, dequantize, inspect. The conversion itself,
and everything that touches a file, is the core's; this module is its Python face."""

from __future__ import annotations

import concurrent.futures
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.array import _dtype_name
from ryzq.config import RyzqWarning
from ryzq.hub import HubModel, HubStream, fetch, is_hub, open_stream
from ryzq.plan import ConversionPlan
from ryzq.progress import ProgressBar
from ryzq.report import QuantizationReport

LINEAR_CLASSES = ("bitlinear", "autobitlinear")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The validated header of a safetensors file: ``size``, ``metadata`` (``__metadata__``)
    and ``tensors`` (name, dtype, shape and byte range of each, in file order)."""
    path = Path(path)
    if path.is_dir():
        raise RyzqError(f"{path}: a folder, not a safetensors file")
    return _ryzq.read_header(os.fspath(path))


def ryzq_description(path: str | os.PathLike, metadata: dict[str, str]) -> dict[str, Any] | None:
    """The ``ryzq`` entry of a file's ``__metadata__``, checked and parsed, or None if it has
    none."""
    text = metadata.get("ryzq")
    if text is None:
        return None
    try:
        return json.loads(_ryzq.parse_ryzq_metadata(text))
    except RyzqError as err:
        error = RyzqError(f"{path}: {err}")
        error.kind, error.path = err.kind, str(path)
        raise error from None


def _quantize(
    src: str | os.PathLike,
    dst: str | os.PathLike | None,
    *,
    folder: bool,
    progress: bool,
    dry_run: bool,
    options: dict[str, Any],
) -> QuantizationReport | ConversionPlan:
    # The keywords, their defaults and their checks are the request's, in the native module.
    request = _ryzq.QuantizeRequest(**options)
    if dry_run:
        plan = ConversionPlan._from_native(
            _ryzq.plan_quantize(
                os.fspath(src),
                folder=folder,
                request=request,
                dst=None if dst is None else os.fspath(dst),
            )
        )
        _warn(plan.warnings)
        return plan
    _require_destination(dst, dry_run)
    callback = None
    if progress:
        callback = ProgressBar(_source_bytes(Path(src)), label=f"{Path(src).name} ")
    report = _ryzq.quantize_checkpoint(
        os.fspath(src), os.fspath(dst), folder=folder, request=request, progress=callback
    )
    _warn(report.warnings)
    return report


def _warn(messages: list[str], stacklevel: int = 4) -> None:
    # By default, for the caller of the public function that called _quantize.
    for message in messages:
        warnings.warn(message, RyzqWarning, stacklevel=stacklevel)


def _require_destination(dst: str | os.PathLike | None, dry_run: bool) -> None:
    if dst is None and not dry_run:
        raise RyzqError("give a destination, or dry_run=True")


def _is_gguf(dst: str | os.PathLike | None) -> bool:
    return dst is not None and os.fspath(dst).lower().endswith(".gguf")


def _source_bytes(src: Path) -> int:
    if src.is_file():
        return src.stat().st_size
    if src.is_dir():
        return sum(p.stat().st_size for p in src.glob("*.safetensors") if p.is_file())
    return 0


def quantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    dry_run: bool = False,
    **options: Any,
) -> QuantizationReport:
    """Quantize the safetensors checkpoint ``src`` into ``dst``, one tensor at a time.

    The keywords, and their defaults: ``layout="bitnet"``, ``method="absmean"``,
    ``granularity=None``, ``linear_class="bitlinear"``, ``include=None``, ``exclude=None``,
    ``threads=None``, ``simd=None`` (those of ``ryzq._ryzq.QuantizeRequest``, which checks them),
    and ``progress=False`` (a progress bar on stderr), ``dry_run=False``.

    By default the 2-D ``*.weight`` tensors of linear layers are quantized and everything else
    (embeddings, ``lm_head``, norms, biases, non-float tensors) is copied byte for byte;
    ``include`` / ``exclude`` glob patterns override that. ``layout="bitnet"`` writes
    transformers' BitNet layout (``X.weight`` packed, ``X.weight_scale`` in the weight's dtype,
    ``1/absmean`` for ``linear_class="bitlinear"``, ``absmean`` for ``"autobitlinear"``, whose
    biases are stored divided by ``weight_scale``); ``"i2"`` and ``"t1"`` write ryzq's own
    layouts with float32 scales, ``"tq2_0"``, ``"tq1_0"`` and ``"q2_0"`` GGUF's blocks,
    ``"i2_s"`` and ``"i2_s_arm"`` bitnet.cpp's I2_S tensor data (its one float32 scale after
    the codes; one scale per tensor only). The granularity defaults to one scale per tensor,
    except absmax in the GGUF block layouts (one per block). Every
    file records how it was written in its metadata, so :func:`dequantize_file` and ``ryzq
    inspect`` need nothing else. ``dst`` appears only when everything succeeded. Returns the
    error report; with ``dry_run=True``, writes nothing and returns the
    :class:`~ryzq.plan.ConversionPlan`.

    A source that is already packed (a file ryzq wrote, a GGUF file, transformers' packed
    BitNet layout: a uint8 ``X.weight`` beside its ``X.weight_scale``) has its codes carried
    into ``layout`` as they are, their scales converted to its storage: no dequantize and
    requantize. So are float weights that are exactly ternary times one scale per group. The
    report says ``carried_over`` for such tensors, and their error is that of the stored
    scales against the source's (0 where the target holds them exactly). ``source_linear_class``
    says which of transformers' two scale conventions a packed source uses where no
    ``config.json`` says it (``"bitlinear"``: the layer divides by ``weight_scale``;
    ``"autobitlinear"``: it multiplies). A GGUF model file becomes a model folder
    (``model.safetensors`` under Hugging Face names and a ``config.json`` from its keys) unless
    ``dst`` ends in ``.safetensors``.
    """
    if Path(src).is_dir():
        raise RyzqError(f"{src}: a folder; quantize model folders with quantize_model")
    return _quantize(src, dst, folder=False, progress=progress, dry_run=dry_run, options=options)


def quantize_model(
    src_dir: str | os.PathLike | HubModel | HubStream,
    dst_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    dry_run: bool = False,
    executor: concurrent.futures.Executor | None = None,
    **options: Any,
) -> QuantizationReport:
    """Quantize a Hugging Face model folder (``config.json`` and ``model.safetensors`` or
    shards with ``model.safetensors.index.json``), or a model on the Hub
    (``"hf://ORG/MODEL[@REVISION]"``, fetched into the Hub's cache first), into ``dst_dir``:
    the packed shards, a correct index, ``config.json`` with its ``quantization_config``,
    and the model's other files copied unchanged. It takes the keywords of
    :func:`quantize_file`, and ``copy_also``.
    Left out (and listed in the report's ``skipped_files``):
    version-control folders and other copies of the weights (``*.pth``, ``*.pt``, ``*.bin``,
    ``*.ckpt``, ``*.gguf``, ``*.safetensors`` the index does not list), unless a glob of
    ``copy_also`` matches their path in the folder. ``dst_dir`` must not exist or be empty; it
    appears complete or not at all. Returns one report for all shards (or, with
    ``dry_run=True``, the plan). Asking a BitNet model for absmean at another granularity than
    per tensor warns (:class:`RyzqWarning`, and in the report).

    A ``dst_dir`` ending in ``.gguf`` is one complete GGUF model file instead, for llama.cpp
    (layouts ``tq2_0``, ``tq1_0``, ``q2_0``, ``q8_0``) or bitnet.cpp (``i2_s``): the linear
    weights in ``layout``; a weight whose rows do not split into its blocks in the type
    ``fallback`` names (by default ``q2_0``, then ``q8_0``, then ``f16``: the smallest that
    holds its ternary weights exactly; ``"error"`` refuses it); the token embeddings in
    ``embeddings`` (default ``"float16"``); norms in float32; the hyperparameters from
    ``config.json`` and the folder's tokenizer (``tokenizer=False`` writes none).

    A Hub model into a model folder converts while its weights download: each output file as
    soon as the shards it reads are in the cache.

    A folder output gets a model card, ``README.md``: how the weights were made, their error
    per layer, how to load them, and the source folder's own card after it
    (``model_card=False`` copies the source's card as it is instead).

    With ``executor`` (any :class:`concurrent.futures.Executor`: ``dask.distributed``'s
    ``Client.get_executor()``, a ``ProcessPoolExecutor``), each output file is converted by a
    job of its own on the executor's workers, which must see ``src_dir`` and ``dst_dir``'s
    folder at the same paths (a shared file system). The output and the report are those of a
    one-process run. Finished files are kept beside ``dst_dir`` (``.NAME.ryzq-parts``) until
    all are done, so that after a failure the same call redoes only what is missing."""
    model_card = options.pop("model_card", True)
    _require_destination(dst_dir, dry_run)  # before anything is fetched
    hub_model = None
    stream = src_dir if isinstance(src_dir, HubStream) else None
    if stream is None and is_hub(src_dir) and not dry_run and not _is_gguf(dst_dir):
        # Converted while its weight files download, one output file as soon as its own are in.
        stream = open_stream(src_dir, progress=progress)
    if stream is not None:
        hub_model = stream.model
        src_dir = hub_model.path
    elif isinstance(src_dir, HubModel) or is_hub(src_dir):
        hub_model = src_dir if isinstance(src_dir, HubModel) else fetch(src_dir, progress=progress)
        src_dir = hub_model.path
    if stream is not None:
        if dst_dir is None or dry_run:
            raise RyzqError("a model fetched as it converts needs a destination, and no dry_run")
        from ryzq.distributed import quantize_streamed

        report = quantize_streamed(stream, dst_dir, options, progress=progress, executor=executor)
        _warn(report.warnings, stacklevel=3)
    elif executor is not None and not dry_run:
        from ryzq.distributed import quantize_model_with

        report = quantize_model_with(executor, src_dir, dst_dir, options, progress=progress)
        _warn(report.warnings, stacklevel=3)
    else:
        report = _quantize(
            src_dir, dst_dir, folder=True, progress=progress, dry_run=dry_run, options=options
        )
    if not dry_run and model_card and dst_dir is not None and Path(dst_dir).is_dir():
        from ryzq.model_card import write_card

        write_card(dst_dir, report.to_dict(), source=src_dir, hub=hub_model)
    return report


def dequantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
    source_linear_class: str | None = None,
) -> int:
    """Write a plain float checkpoint from a packed one (made by :func:`quantize_file`, a
    GGUF file, or transformers' packed BitNet layout, whose scale convention
    ``source_linear_class`` gives where no ``config.json`` says it): original names and shapes,
    each packed tensor in its original dtype. With ``dtype`` ("float32", "bfloat16", ...)
    every float tensor, kept ones included, is written in it. Returns the number of tensors
    dequantized."""
    if Path(src).is_dir():
        raise RyzqError(f"{src}: a folder; dequantize model folders with dequantize_model")
    return _dequantize(
        src,
        dst,
        folder=False,
        dtype=dtype,
        simd=simd,
        threads=threads,
        source_linear_class=source_linear_class,
    )


def dequantize_model(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    simd: str | None = None,
    threads: int | None = None,
    source_linear_class: str | None = None,
) -> int:
    """Write a plain float model folder from a packed one (made by :func:`quantize_model`,
    or a transformers packed BitNet checkpoint): every shard dequantized (as
    :func:`dequantize_file` does), an index with the new sizes, ``config.json`` without its
    ``quantization_config``, every other file copied. Returns the number of tensors
    dequantized."""
    return _dequantize(
        src_dir,
        dst_dir,
        folder=True,
        dtype=dtype,
        simd=simd,
        threads=threads,
        source_linear_class=source_linear_class,
    )


def _dequantize(src, dst, *, folder, dtype, simd, threads, source_linear_class) -> int:
    name = None if dtype is None else _dtype_name(dtype)
    return _ryzq.dequantize_checkpoint(
        os.fspath(src),
        os.fspath(dst),
        folder=folder,
        dtype=name,
        simd=simd,
        threads=threads,
        source_linear_class=source_linear_class,
    )


def read_model_folder(path: str | os.PathLike) -> dict[str, Any]:
    """A model folder, read and checked as every conversion reads it: ``shards`` (its
    safetensors files, in order), ``config`` (``config.json``), and for a sharded model
    ``index_file`` (the index's name) and ``index``, else None."""
    folder = _ryzq.read_model_folder(os.fspath(path))
    return {
        "shards": folder["shards"],
        "config": json.loads(folder["config"]),
        "index_file": folder["index_file"],
        "index": None if folder["index"] is None else json.loads(folder["index"]),
    }
