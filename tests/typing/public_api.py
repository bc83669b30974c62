"""The public API as a user's code calls it, type-checked by ``mypy --strict`` in CI (not run
by pytest: its name does not start with ``test_``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ryzq


def convert(src: Path, dst: Path) -> float:
    w = np.zeros((4, 256), dtype=np.float32)
    t: ryzq.TernaryTensor = ryzq.quantize(w, layout="tq2_0", method="absmean")
    codes: np.ndarray = t.codes()
    packed = ryzq.pack(codes, "t1")
    back = ryzq.unpack(packed, codes.shape, "t1")
    assert back.shape == codes.shape
    report: ryzq.QuantizationReport = ryzq.quantize_file(src, dst, layout="t1")
    for tensor in report.tensors:
        carried: str | None = tensor.carried_over
        if tensor.stats is not None and carried is None:
            return tensor.stats.nmse
    n: int = ryzq.dequantize_file(dst, dst.with_suffix(".float.safetensors"))
    model = ryzq.quantize_model(src.parent, dst.parent / "out.gguf", layout="tq2_0")
    print(model.summary(), n, ryzq.simd_level(), ryzq.__version__)
    ryzq.write_gguf(dst.with_suffix(".gguf"), {"w": t})
    return float(t.stats.nmse)


def evaluate(reference: Path, candidate: Path) -> float:
    report: ryzq.EvalReport = ryzq.evaluate(reference, candidate, tokens=64, context=32)
    print(report.summary(), report.to_json())
    kl: list[float] = report.positions.kl
    return report.summary_values["kl_mean"] + sum(kl)
