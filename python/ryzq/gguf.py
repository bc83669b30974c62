"""GGUF files of single tensors: ``write_gguf`` lays out ryzq's packed tensors and float arrays
with the core's GGUF writer (whole model files come from ``quantize_model(src, "x.gguf")``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ryzq import _ryzq
from ryzq._ryzq import RyzqError
from ryzq.array import LAYOUT_INFO, TernaryTensor


def write_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, TernaryTensor | np.ndarray],
    *,
    arch: str = "llama",
) -> None:
    """Write ``tensors`` to the GGUF file ``path``: ``TernaryTensor`` values of a layout with a
    GGML type (``tq2_0``, ``tq1_0``, ``q2_0``, ``q8_0``, ``i2_s``, ``i2_s_arm``) as their
    packed blocks, float32 / float16 arrays as they are, under ``general.architecture =
    arch``. ``path`` appears only once complete. For a model llama.cpp loads, quantize its
    folder into a ``.gguf`` file with :func:`ryzq.quantize_model` instead."""
    entries = []
    for name, t in tensors.items():
        if isinstance(t, TernaryTensor):
            if LAYOUT_INFO[t.layout]["gguf_type"] is None:
                ggufs = [n for n, info in LAYOUT_INFO.items() if info["gguf_type"] is not None]
                raise RyzqError(
                    f"tensor {name!r}: layout {t.layout} has no GGUF type; quantize it with "
                    f"a layout that has one: {', '.join(ggufs)}"
                )
            data = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
            entries.append((name, t.layout, list(t.shape), data))
        else:
            arr = np.ascontiguousarray(t)
            if arr.dtype not in (np.float32, np.float16):
                raise RyzqError(f"tensor {name!r}: GGUF takes float32 or float16, not {arr.dtype}")
            kind = "float32" if arr.dtype == np.float32 else "float16"
            entries.append((name, kind, list(arr.shape), arr.reshape(-1).view(np.uint8)))
    layouts = {kind for _, kind, _, _ in entries if kind in LAYOUT_INFO}
    if {"i2_s", "i2_s_arm"} <= layouts:
        raise RyzqError(
            "i2_s and i2_s_arm tensors in one file: bitnet.cpp reads I2_S one way per build "
            "(x86 or ARM), so a file holds one of them"
        )
    # Readers tell I2_S's two byte orders apart by the layout the file was written in.
    layout = next(iter(layouts)) if len(layouts) == 1 else None
    _ryzq.write_gguf_file(os.fspath(path), arch, entries, layout)
