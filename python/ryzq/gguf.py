"""GGUF files from ryzq's TQ2_0 / TQ1_0 tensors, written by gguf-py's own ``GGUFWriter``.

ryzq's ``q2_0`` tensors are GGML type Q2_0 (42) byte for byte, but gguf-py 0.19, the newest
on PyPI, has no such type, so they cannot be written here."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ryzq._ryzq import RyzqError
from ryzq.array import TernaryTensor

#: ryzq layout -> GGML quantization type name
GGUF_TYPES = {"tq2_0": "TQ2_0", "tq1_0": "TQ1_0", "q2_0": "Q2_0"}
#: The GGML type ids, for the message when gguf-py lacks a type.
GGML_TYPE_IDS = {"TQ2_0": 35, "TQ1_0": 34, "Q2_0": 42}


def write_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, TernaryTensor | np.ndarray],
    *,
    arch: str = "llama",
) -> None:
    """Write ``tensors`` to the GGUF file ``path``: ``TernaryTensor`` values of layout
    ``tq2_0`` / ``tq1_0`` as raw blocks of that GGML type, float16 / float32 arrays as they
    are. Needs gguf-py (``pip install gguf``); ``q2_0`` tensors need a gguf-py that names GGML
    type Q2_0, which 0.19 (PyPI's newest) does not. ``path`` appears only once complete."""
    try:
        import gguf
    except ImportError:
        raise RyzqError("writing GGUF needs gguf-py: pip install gguf") from None
    path = Path(path)
    if not path.parent.is_dir():
        raise RyzqError(f"{path}: the output folder {path.parent} does not exist")
    entries: list[tuple[str, np.ndarray, Any]] = []
    for name, t in tensors.items():
        if isinstance(t, TernaryTensor):
            if t.layout not in GGUF_TYPES:
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} has no GGUF type; quantize it with "
                    f"layout 'tq2_0' or 'tq1_0'"
                )
            kind = GGUF_TYPES[t.layout]
            qtype = getattr(gguf.GGMLQuantizationType, kind, None)
            if qtype is None:
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} is GGML type {kind} "
                    f"({GGML_TYPE_IDS[kind]}), which this gguf-py ({_version('gguf')}) cannot "
                    f"name, so write_gguf cannot write it; quantize it with layout 'tq2_0' or "
                    f"'tq1_0'"
                )
            entries.append((name, np.ascontiguousarray(t.data), qtype))
        else:
            arr = np.ascontiguousarray(t)
            if arr.dtype not in (np.float32, np.float16):
                raise RyzqError(f"tensor {name!r}: GGUF takes float32 or float16, not {arr.dtype}")
            entries.append((name, arr, None))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".ryzq-partial", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        for name, data, qtype in entries:
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version(package: str) -> str:
    """The installed version of ``package``, or ``unknown version``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown version"
