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


def groups_of(x: np.ndarray, granularity: str) -> np.ndarray:
    """The values of `x` as (groups, values per group)."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "row":
        # One row per index of dim 0; a 1-D tensor is one row, as for group:N.
        return x.reshape(1 if x.ndim == 1 else x.shape[0], -1)
    n = int(granularity.removeprefix("group:"))
    return x.reshape(-1, n)


def absmean_quantize(w: np.ndarray, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of BitNet's absmean quantizer per tensor, row or group."""
    x = as_f32(w)
    groups = groups_of(x, granularity)
    invs = [absmean_inv(g) for g in groups]
    codes = np.stack([bitnet_codes(g, i) for g, i in zip(groups, invs, strict=True)])
    scales = np.array([np.float32(1.0) / i for i in invs], dtype=np.float32)
    return codes.reshape(x.shape), scales


def round_half_away(y: np.ndarray) -> np.ndarray:
    """C's lroundf: halfway cases away from zero. (floor(|y| + 0.5) would be wrong: the sum
    rounds 0.49999997 + 0.5 up to 1.)"""
    a = np.abs(y)
    whole = np.floor(a)
    return np.sign(y) * (whole + np.floor(2 * (a - whole)))


def absmax_quantize(w: np.ndarray, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of ggml's absmax quantizer: d = max |w|, lroundf(w / d) in float32."""
    x = as_f32(w)
    groups = groups_of(x, granularity)
    d = np.abs(groups).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(1) / d
    # An all-zero group, or one whose inverse max overflows float32, quantizes to zeros.
    zero = ~np.isfinite(inv)
    inv = np.where(zero, np.float32(0), inv).astype(np.float32)
    d = np.where(zero, np.float32(0), d).astype(np.float32)
    y = groups * inv[:, None]
    codes = np.clip(round_half_away(y), -1, 1).astype(np.int8)
    return codes.reshape(x.shape), d


def optimal_scale(values: np.ndarray) -> np.float32:
    """argmax over k of S_k^2 / k, S_k the sum of the k largest |w| (float64, in order),
    at the k after which the next value is smaller; the scale is S_k / k."""
    a = np.sort(np.abs(values.astype(np.float32)).ravel())[::-1].astype(np.float64)
    sums = np.cumsum(a)
    k = np.arange(1, len(a) + 1)
    gains = sums * sums / k
    boundary = np.append(a[1:] != a[:-1], True)
    gains = np.where(boundary, gains, -1.0)
    best = int(np.argmax(gains))
    if gains[best] <= 0:
        return np.float32(0)
    return np.float32(sums[best] / k[best])


def optimal_quantize(w: np.ndarray, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    x = as_f32(w)
    groups = groups_of(x, granularity)
    scales = np.array([optimal_scale(g) for g in groups], dtype=np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scales > 0, np.float32(1) / scales, np.float32(0)).astype(np.float32)
    codes = np.stack([bitnet_codes(g, i) for g, i in zip(groups, inv, strict=True)])
    return codes.reshape(x.shape), scales


def brute_force_sse(values: np.ndarray) -> float:
    """The least squared error of {-a, 0, a} over every threshold and scale, by trying each."""
    x = values.astype(np.float64).ravel()
    best = float(np.sum(x * x))
    for v in np.unique(np.abs(x)):
        chosen = np.abs(x) >= v
        a = np.abs(x[chosen]).mean()
        best = min(best, float(np.sum((x - a * np.sign(x) * chosen) ** 2)))
    return best


METHOD_REFERENCES = {
    "absmean": absmean_quantize,
    "absmax": absmax_quantize,
    "optimal": optimal_quantize,
}


def quantize(w: np.ndarray, layout: str, method: str, granularity: str):
    """(codes, stored scales) as ryzq's layout stores them (GGUF blocks: float16 scales)."""
    codes, scales = METHOD_REFERENCES[method](w, granularity)
    if layout in ("tq2_0", "tq1_0", "q2_0", "q8_0"):
        scales = scales.astype(np.float16).astype(np.float32)
    return codes, scales


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


def pack_tq2_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GGUF TQ2_0: per 256 values, byte 32 j + m holds values 128 j + m + 32 n at bits 2n."""
    c = (codes.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 2, 4, 32)
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    d = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.concatenate([qs.reshape(-1, 64), d], axis=1).reshape(-1)


def _base3(digits: np.ndarray) -> np.ndarray:
    """Digits (..., n, m) most significant first -> ceil(q * 256 / 243) per m."""
    q = np.zeros(digits.shape[:-2] + digits.shape[-1:], np.int64)
    for n in range(digits.shape[-2]):
        q = q * 3 + digits[..., n, :]
    return ((q * 256 + 242) // 243).astype(np.uint8)


def pack_tq1_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GGUF TQ1_0: qs[32] (values m + 32 n), qs[16] (160 + m + 16 n), qh[4] (240 + j + 4 n,
    then a fifth digit 0), d."""
    c = (codes.astype(np.int16) + 1).astype(np.int64).reshape(-1, 256)
    qs0 = _base3(c[:, :160].reshape(-1, 5, 32))
    qs1 = _base3(c[:, 160:240].reshape(-1, 5, 16))
    tail = np.concatenate([c[:, 240:].reshape(-1, 4, 4), np.zeros((len(c), 1, 4), np.int64)], 1)
    qh = _base3(tail)
    d = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.concatenate([qs0, qs1, qh, d], axis=1).reshape(-1)


def pack_q2_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GGUF Q2_0: per 64 values d FIRST, then byte m holds values 4 m + n at bits 2n."""
    c = (codes.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 16, 4)
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    d = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.concatenate([d, qs], axis=1).reshape(-1)


def pack_q8_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GGUF Q8_0: per 32 values d FIRST, then one int8 per value (here the code itself)."""
    qs = codes.astype(np.int8).view(np.uint8).reshape(-1, 32)
    d = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.concatenate([d, qs], axis=1).reshape(-1)


def pack_i2_s(codes: np.ndarray, scale: np.float32, block: int) -> np.ndarray:
    """bitnet.cpp's I2_S: per block of the flat tensor (128 values x86, 64 ARM), byte m holds
    values m + block/4 * j at bits 6 - 2j; then the float32 scale and 28 zero bytes."""
    c = (codes.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4, block // 4)
    qs = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    tail = np.concatenate([np.float32(scale).reshape(1).view(np.uint8), np.zeros(28, np.uint8)])
    return np.concatenate([qs.reshape(-1), tail])


def block_scales(scales: np.ndarray, numel: int, block: int = 256) -> np.ndarray:
    """The scale of each block of `block` values: that of the group holding it (groups are
    whole blocks)."""
    group = numel // len(scales)
    return np.repeat(np.asarray(scales, np.float32), group // block)


PACKERS = {
    "bitnet": lambda c, s: pack_bitnet(c),
    "i2": lambda c, s: pack_i2(c),
    "t1": lambda c, s: pack_t1(c),
    "tq2_0": lambda c, s: pack_tq2_0(c, block_scales(s, c.size)),
    "tq1_0": lambda c, s: pack_tq1_0(c, block_scales(s, c.size)),
    "q2_0": lambda c, s: pack_q2_0(c, block_scales(s, c.size, 64)),
    "q8_0": lambda c, s: pack_q8_0(c, block_scales(s, c.size, 32)),
    "i2_s": lambda c, s: pack_i2_s(c, s[0], 128),
    "i2_s_arm": lambda c, s: pack_i2_s(c, s[0], 64),
}


def packed_nbytes(shape: tuple[int, ...], layout: str) -> int:
    n = math.prod(shape)
    return {
        "bitnet": n // 4,
        "i2": -(-n // 4),
        "t1": -(-n // 5),
        "tq2_0": n // 256 * 66,
        "tq1_0": n // 256 * 54,
        "q2_0": n // 64 * 18,
        "q8_0": n // 32 * 34,
        "i2_s": n // 4 + 32,
        "i2_s_arm": n // 4 + 32,
    }[layout]


def supported_levels() -> list[str]:
    return ryzq.simd_levels()
