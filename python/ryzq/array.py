"""Quantization of in-memory arrays: the Python face of the native kernels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ryzq import _ryzq
from ryzq._ryzq import QuantizationStats, RyzqError

#: What ryzq knows of each layout, read from its registry: name, description, shape rule,
#: block (values per block that holds its own scale, or None), bits per value, GGUF type id and
#: the default granularity of each method.
LAYOUT_INFO: dict[str, dict[str, Any]] = {info["name"]: info for info in _ryzq.layouts()}
LAYOUTS = tuple(LAYOUT_INFO)
#: The layouts that store a float16 scale in every block (GGUF's TQ1_0, TQ2_0 and Q2_0).
BLOCK_LAYOUTS = tuple(name for name, info in LAYOUT_INFO.items() if info["block"])
METHODS = tuple(LAYOUT_INFO[LAYOUTS[0]]["default_granularity"])
#: ``group:N`` takes N from 32 to 4096.
GRANULARITIES = ("tensor", "row", "group:N")


def default_granularity(layout: str, method: str = "absmean") -> str:
    """The granularity ``method`` uses in ``layout`` unless asked otherwise: one scale per
    tensor (the quantizer BitNet models are trained with; block layouts store it in every
    block), except absmax in the GGUF block layouts, which is ggml's one scale per block."""
    return _ryzq.default_granularity(layout, method)


def bits_per_value(layout: str) -> float:
    """Packed bits per weight of ``layout`` (scales kept apart not counted; block scales are)."""
    return LAYOUT_INFO[_ryzq.canonical_name("layout", layout)]["bits_per_value"]


#: The dtypes ryzq reads and writes, by the name it reports them with.
DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def _dtype_name(dtype: Any) -> str:
    """The name (as in DTYPES) of a numpy dtype, or of any spelling ryzq takes (``bf16``,
    ``BF16``, ``bfloat16``: case-insensitive, as every name)."""
    if isinstance(dtype, str):
        try:
            return _ryzq.canonical_name("dtype", dtype)
        except RyzqError:
            pass  # a numpy name such as "<f4"
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise RyzqError(
            f"unsupported dtype {dtype!r}: ryzq reads and writes {', '.join(DTYPES)}"
        ) from None
    for name, known in DTYPES.items():
        if np_dtype.newbyteorder("=") == known:
            return name
    raise RyzqError(f"unsupported dtype {np_dtype}: ryzq reads and writes {', '.join(DTYPES)}")


def _raw_weights(w: Any, dtype: Any) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """The one place where input weights are checked and seen as raw little-endian bytes."""
    arr = np.asarray(w)
    if dtype is not None:
        name = _dtype_name(dtype)
        raw_bits = name in ("bfloat16", "float16") and arr.dtype == np.uint16
        if not raw_bits and arr.dtype != DTYPES[name]:
            raise RyzqError(
                f"dtype={name!r} does not match the array's dtype {arr.dtype}; raw 16-bit "
                f"patterns can be given as uint16 with dtype='bfloat16' or 'float16'"
            )
    elif arr.dtype == np.uint16:
        raise RyzqError(
            "a uint16 array needs dtype='bfloat16' or dtype='float16' to say what its bits are"
        )
    else:
        name = _dtype_name(arr.dtype)
    shape = arr.shape  # before ascontiguousarray, which turns 0-d into 1-d
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8), name, shape


@dataclass(frozen=True)
class TernaryTensor:
    """A quantized tensor: packed codes, one scale per group, and the error it introduced.

    The value of element ``i`` of group ``g`` is ``code[i] * scales[g]``.
    """

    #: the packed codes, uint8, in the layout's packed shape
    data: np.ndarray
    #: float32 dequantization scales: one (``tensor``), one per index of dim 0 (``row``) or one
    #: per group of N values of a row (``group:N``), as stored
    scales: np.ndarray
    #: shape of the original tensor
    shape: tuple[int, ...]
    #: dtype of the original tensor: "float32", "float16" or "bfloat16"
    dtype: str
    layout: str
    method: str
    granularity: str
    stats: QuantizationStats

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes plus scales."""
        return int(self.data.nbytes + self.scales.nbytes)

    def codes(self, *, simd: str | None = None, threads: int | None = None) -> np.ndarray:
        """The int8 codes (-1, 0, 1), in the original shape."""
        return unpack(self.data, self.shape, self.layout, simd=simd, threads=threads)

    def dequantize(
        self,
        dtype: Any = None,
        *,
        out: np.ndarray | None = None,
        simd: str | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """The dequantized tensor, by default in the original dtype; written into ``out`` (a
        C-contiguous array of the tensor's shape) when given."""
        if out is None:
            name = self.dtype if dtype is None else _dtype_name(dtype)
            out = np.empty(self.shape, DTYPES[name])
        else:
            name = _dtype_name(out.dtype if dtype is None else dtype)
            if out.dtype != DTYPES[name] or out.shape != self.shape:
                raise RyzqError(
                    f"out must be a {name} array of shape {self.shape}, "
                    f"got {out.dtype} of shape {out.shape}"
                )
            if not (out.flags.c_contiguous and out.flags.writeable):
                raise RyzqError("out must be a writeable, C-contiguous array")
        _ryzq.dequantize(
            np.ascontiguousarray(self.data).reshape(-1),
            np.ascontiguousarray(self.scales, dtype=np.float32).reshape(-1),
            list(self.shape),
            layout=self.layout,
            granularity=self.granularity,
            dtype=name,
            out=out.reshape(-1).view(np.uint8),
            simd=simd,
            threads=threads,
        )
        return out

    def __repr__(self) -> str:
        return (
            f"TernaryTensor(shape={self.shape}, dtype={self.dtype}, layout={self.layout}, "
            f"method={self.method}, granularity={self.granularity}, nbytes={self.nbytes}, "
            f"nmse={self.stats.nmse:.4g})"
        )


def quantize(
    w: Any,
    *,
    layout: str = "i2",
    method: str = "absmean",
    granularity: str | None = None,
    dtype: Any = None,
    simd: str | None = None,
    threads: int | None = None,
) -> TernaryTensor:
    """Quantize ``w`` to ternary codes, packed in ``layout``.

    ``w`` is a float32, float16 or bfloat16 (``ml_dtypes.bfloat16``) array of any shape the
    layout takes; raw bfloat16 bits can be given as uint16 with ``dtype="bfloat16"``.
    ``method="absmean"`` is BitNet b1.58's quantizer, ``"absmax"`` ggml's (scale = max |w|,
    ties away from zero), ``"optimal"`` the scale and threshold of least squared error.
    ``granularity`` is ``"tensor"`` (one scale), ``"row"`` (one scale per index of dim 0; a
    1-D tensor is one row) or ``"group:N"`` (one per N values of a row). By default it is
    ``"tensor"``, the quantizer BitNet models are trained with, in every layout (the GGUF
    layouts ``tq2_0``, ``tq1_0`` and ``q2_0`` store the tensor's scale in each block), except
    ``method="absmax"`` in the GGUF layouts: their block (``"group:256"``, ``"group:64"`` for
    ``q2_0``), ggml's own quantizer. bitnet.cpp's ``i2_s`` (x86 builds) and ``i2_s_arm`` (ARM
    builds) store one float32 scale after the codes, so they take ``"tensor"`` only: absmean
    from the master weights, or absmax from weights already ternary x scale, gives the bytes
    bitnet.cpp writes. ``simd``
    forces a kernel level (``"scalar"``, ``"avx2"``, ``"avx512"``) for this call; by default
    ``RYZQ_SIMD`` or the best the processor has. ``threads`` sets how many threads the kernels
    use (default: ``RYZQ_NUM_THREADS``, else every core); the result never depends on it.
    Raises :class:`RyzqError` on bad input, such as NaN or infinite weights.
    """
    data, name, shape = _raw_weights(w, dtype)
    packed, packed_shape, scales, stats, granularity = _ryzq.quantize(
        data,
        name,
        list(shape),
        layout=layout,
        method=method,
        granularity=granularity,
        simd=simd,
        threads=threads,
    )
    return TernaryTensor(
        data=packed.reshape(packed_shape),
        scales=scales,
        shape=tuple(shape),
        dtype=name,
        layout=_ryzq.canonical_name("layout", layout),
        method=_ryzq.canonical_name("method", method),
        granularity=granularity,
        stats=stats,
    )


def _as_codes(codes: Any) -> np.ndarray:
    arr = np.asarray(codes)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise RyzqError(f"codes must be integers -1, 0 or 1, got an array of {arr.dtype}")
    if arr.dtype != np.int8:
        bad = (arr < -1) | (arr > 1)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), arr.shape)
            raise RyzqError(
                f"invalid ternary code {arr[index]} at index {tuple(int(i) for i in index)}: "
                "codes must be -1, 0 or 1"
            )
        arr = arr.astype(np.int8)
    return np.ascontiguousarray(arr)


def pack(
    codes: Any,
    layout: str = "i2",
    *,
    scales: Any = None,
    simd: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Pack int8 ternary codes (-1, 0, 1) into ``layout``; returns uint8 in the packed shape.
    The GGUF block layouts store a scale in every block (of 256 values, 64 in ``q2_0``): give
    those ``scales``. ``i2_s`` and ``i2_s_arm`` store the tensor's one scale after the codes:
    give that one."""
    arr = _as_codes(codes)
    if scales is not None:
        scales = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)
    packed, packed_shape = _ryzq.pack(
        arr.reshape(-1), list(arr.shape), layout=layout, scales=scales, simd=simd, threads=threads
    )
    return packed.reshape(packed_shape)


def unpack(
    data: Any,
    shape: tuple[int, ...] | list[int],
    layout: str = "i2",
    *,
    simd: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Unpack ``layout`` bytes into int8 codes of ``shape``."""
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise RyzqError(f"packed data must be uint8, got {arr.dtype}")
    shape = tuple(int(d) for d in shape)
    codes = _ryzq.unpack(
        np.ascontiguousarray(arr).reshape(-1),
        list(shape),
        layout=layout,
        simd=simd,
        threads=threads,
    )
    return codes.reshape(shape)
