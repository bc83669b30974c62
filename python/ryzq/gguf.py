"""GGUF files from ryzq's TQ2_0 / TQ1_0 tensors, written by gguf-py's own ``GGUFWriter``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ryzq._ryzq import RyzqError
from ryzq.array import LAYOUT_INFO, TernaryTensor


def _version(module: Any) -> str:
    try:
        from importlib.metadata import version

        return version(module.__name__)
    except Exception:
        return "unknown version"


def write_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, TernaryTensor | np.ndarray],
    *,
    arch: str = "llama",
) -> None:
    """Write ``tensors`` to the GGUF file ``path``: ``TernaryTensor`` values of layout
    ``tq2_0`` / ``tq1_0`` (and ``q2_0``, where the installed gguf-py names its type) as raw
    blocks of that GGML type (not ``i2_s``, whose one scale after the codes gguf-py cannot
    size), float16 / float32 arrays as they
    are. Needs gguf-py (``pip install gguf``). ``path`` appears only once complete."""
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
            type_id = LAYOUT_INFO[t.layout]["gguf_type"]
            if type_id is None:
                ggufs = [n for n, info in LAYOUT_INFO.items() if info["gguf_type"] is not None]
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} has no GGUF type; quantize it with "
                    f"a layout that has one: {', '.join(ggufs)}"
                )
            if LAYOUT_INFO[t.layout]["block"] is None:
                # gguf-py's writer takes a quantized tensor's shape from its bytes, counted in
                # blocks of its type; I2_S data (the codes, then one scale) is not blocks.
                blocks = [n for n, info in LAYOUT_INFO.items() if info["block"]]
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} is GGML type {type_id}, whose data "
                    f"(the codes, then one scale) gguf-py's writer cannot size, so write_gguf "
                    f"cannot write it; it writes {', '.join(blocks)}"
                )
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
            except ValueError:
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} is GGML type {t.layout.upper()} "
                    f"({type_id}), which this gguf-py ({_version(gguf)}) cannot name, so "
                    f"write_gguf cannot write it"
                ) from None
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
