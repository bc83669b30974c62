"""GGUF files from ryzq's TQ2_0 / TQ1_0 tensors, written by gguf-py's own ``GGUFWriter``."""

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
GGUF_TYPES = {"tq2_0": "TQ2_0", "tq1_0": "TQ1_0"}


def write_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, TernaryTensor | np.ndarray],
    *,
    arch: str = "llama",
) -> None:
    """Write ``tensors`` to the GGUF file ``path``: ``TernaryTensor`` values of layout
    ``tq2_0`` / ``tq1_0`` as raw blocks of that GGML type, float16 / float32 arrays as they
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
            if t.layout not in GGUF_TYPES:
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} has no GGUF type; quantize it with "
                    f"layout 'tq2_0' or 'tq1_0'"
                )
            qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[t.layout])
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
