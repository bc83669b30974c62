"""Plain numpy versions of ryzq's formulas and layouts, written from the format descriptions
(README "Packed layouts", BitNet b1.58), for the tests to hold the native code to."""

from __future__ import annotations

import math

import numpy as np

import ryzq


def as_f32(w: np.ndarray) -> np.ndarray:
    return np.asarray(w).astype(np.float32)


def absmean_inv(values: np.ndarray) -> np.float32:
    """``1 / max(mean |w|, 1e-5)`` in float32; the mean is the exactly rounded float64 mean."""
    a = np.abs(as_f32(values).astype(np.float64)).ravel()
    mean = np.float32(math.fsum(a.tolist()) / a.size)
    return np.float32(1.0) / np.maximum(mean, np.float32(1e-5))


def bitnet_codes(w: np.ndarray, inv: np.float32) -> np.ndarray:
    """BitNet b1.58: clamp(round(w * inv), -1, 1), ties to even, float32 math."""
    y = as_f32(w) * inv
    return np.clip(np.round(y), -1, 1).astype(np.int8)


def absmean_quantize(w: np.ndarray, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of BitNet's absmean quantizer per tensor or per index of dim 0."""
    x = as_f32(w)
    if granularity == "tensor":
        inv = absmean_inv(x)
        return bitnet_codes(x, inv), np.array([np.float32(1.0) / inv], dtype=np.float32)
    rows = x.reshape(x.shape[0], -1)
    invs = [absmean_inv(r) for r in rows]
    codes = np.stack([bitnet_codes(r, i) for r, i in zip(rows, invs, strict=True)])
    scales = np.array([np.float32(1.0) / i for i in invs], dtype=np.float32)
    return codes.reshape(x.shape), scales


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """code * scale of its group (one scale, or one per index of dim 0), in float32."""
    c = codes.reshape(len(scales), -1).astype(np.float32)
    return (c * scales[:, None]).reshape(codes.shape)


def error_stats(w: np.ndarray, codes: np.ndarray, scales: np.ndarray) -> dict[str, float]:
    """Error statistics computed in float64."""
    x = as_f32(w).astype(np.float64)
    d = dequantize(codes, scales).astype(np.float64)
    e = x - d
    return {
        "sse": float(np.sum(e * e)),
        "sum_sq": float(np.sum(x * x)),
        "max_abs_error": float(np.max(np.abs(e))),
        "counts": {k: int(np.sum(codes == k)) for k in (-1, 0, 1)},
    }


def pack_bitnet(codes: np.ndarray) -> np.ndarray:
    c = (codes.astype(np.int16) + 1).astype(np.uint8)
    stripe = c.shape[0] // 4
    s = [c[k * stripe : (k + 1) * stripe] for k in range(4)]
    return s[0] | (s[1] << 2) | (s[2] << 4) | (s[3] << 6)


def pack_i2(codes: np.ndarray) -> np.ndarray:
    c = (codes.ravel().astype(np.int16) + 1).astype(np.uint8)
    c = np.concatenate([c, np.ones(-len(c) % 4, np.uint8)]).reshape(-1, 4)
    return c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)


def pack_t1(codes: np.ndarray) -> np.ndarray:
    c = (codes.ravel().astype(np.int16) + 1).astype(np.int64)
    out = []
    for start in range(0, len(c), 160):
        block = c[start : start + 160]
        width = -(-len(block) // 5)
        digits = np.concatenate([block, np.ones(5 * width - len(block), np.int64)])
        digits = digits.reshape(5, width)  # digits[n, m] is value m + width * n
        q = np.zeros(width, np.int64)
        for n in range(5):
            q = q * 3 + digits[n]
        out.append(((q * 256 + 242) // 243).astype(np.uint8))
    return np.concatenate(out)


PACKERS = {"bitnet": pack_bitnet, "i2": pack_i2, "t1": pack_t1}


def packed_nbytes(shape: tuple[int, ...], layout: str) -> int:
    n = math.prod(shape)
    return {"bitnet": n // 4, "i2": -(-n // 4), "t1": -(-n // 5)}[layout]


def supported_levels() -> list[str]:
    return ryzq.simd_levels()
