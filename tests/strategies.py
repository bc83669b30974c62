"""hypothesis strategies for weights, codes and shapes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ryzq
from ryzq.array import LAYOUT_INFO

DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


#: The GGUF block layouts and the values of each block: rows are whole blocks, and each
#: block stores its scale.
BLOCKS = {name: info["block"] for name, info in LAYOUT_INFO.items() if info["block"]}
BLOCK_LAYOUTS = tuple(BLOCKS)
#: bitnet.cpp's I2_S layouts and the values of each block: rows are whole blocks, and the
#: tensor's one float32 scale follows the codes (granularity tensor only).
I2_S = {"i2_s": 128, "i2_s_arm": 64}
#: The layouts whose rows are whole blocks, and their block.
ROW_BLOCKS = {**BLOCKS, **I2_S}


def block_scales(layout: str, size: int, scale: float = 1.0):
    """The scales ``pack`` takes for ``size`` values of ``layout``: one per block of the GGUF
    block layouts, the tensor's one for I2_S, None for the other layouts."""
    if layout in I2_S:
        return np.full(1, scale, np.float32)
    if layout not in BLOCKS:
        return None
    return np.full(size // BLOCKS[layout], scale, np.float32)


def finest_granularity(layout: str) -> str:
    """The granularity of the most scales ``layout`` stores for any shape it takes: its block
    in the GGUF blocks, the tensor in I2_S, a row elsewhere."""
    if layout in BLOCKS:
        return f"group:{BLOCKS[layout]}"
    return "tensor" if layout in I2_S else "row"


def shapes(layout: str, max_side: int = 70) -> st.SearchStrategy[tuple[int, ...]]:
    if layout in ROW_BLOCKS:
        block = ROW_BLOCKS[layout]
        row = st.integers(1, 768 // block).map(lambda k: block * k)
        return st.one_of(
            row.map(lambda r: (r,)),
            st.tuples(st.integers(1, 6), row),
            st.tuples(st.integers(1, 3), st.integers(1, 3), row),
        )
    if layout == "bitnet":
        rows = st.integers(1, 24).map(lambda r: 4 * r)
        return st.one_of(
            rows.map(lambda r: (r,)),
            st.tuples(rows, st.integers(1, max_side)),
        )
    return hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=max_side)


@st.composite
def weights(draw, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """Finite weights of many magnitudes: normal-looking values, exact ties, zeros, extremes."""
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-6, 1e-3, 0.02, 1.0, 300.0]))
    kind = draw(st.sampled_from(["normal", "ternary", "ties", "sparse", "hypothesis"]))
    if kind == "normal":
        w = rng.standard_normal(n) * scale
    elif kind == "ternary":
        w = rng.integers(-1, 2, n) * scale + rng.standard_normal(n) * scale * 0.01
    elif kind == "ties":
        w = rng.choice([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], n)
    elif kind == "sparse":
        w = rng.standard_normal(n) * (rng.random(n) < 0.1) * scale
    else:
        w = draw(
            hnp.arrays(
                np.float32,
                n,
                elements=st.floats(-1e4, 1e4, allow_nan=False, width=32),
            )
        )
    return np.asarray(w).astype(DTYPES[dtype]).reshape(shape)


@st.composite
def codes(draw, shape: tuple[int, ...]) -> np.ndarray:
    return draw(hnp.arrays(np.int8, shape, elements=st.integers(-1, 1)))


def granularities(layout: str, shape: tuple[int, ...]) -> st.SearchStrategy[str]:
    """The granularities `layout` takes for `shape`: GGUF blocks take groups of whole blocks,
    I2_S one scale per tensor."""
    if layout in I2_S:
        return st.just("tensor")
    sizes = tuple(BLOCKS[layout] * k for k in (1, 2, 4)) if layout in BLOCKS else (32, 64, 128, 256)
    groups = [f"group:{n}" for n in sizes if shape[-1] % n == 0]
    return st.sampled_from(["tensor", "row", *groups])


def default_granularity(layout: str, method: str = "absmean") -> str:
    """The documented defaults: per tensor, except absmax in the GGUF blocks (ggml's own, one
    scale per block)."""
    return f"group:{BLOCKS[layout]}" if layout in BLOCKS and method == "absmax" else "tensor"


def matrix_shape(layout: str, rows: int = 64) -> tuple[int, int]:
    """A 2-D shape every layout takes."""
    return (rows, 512)


def quantize_or_reject(w: np.ndarray, **options) -> ryzq.TernaryTensor:
    """``ryzq.quantize(w, **options)``, rejecting the example where the layout rightly refuses
    the weights: a scale the GGUF blocks' float16 cannot hold (drawn weights may be all tiny)."""
    try:
        return ryzq.quantize(w, **options)
    except ryzq.RyzqError as refused:
        if "float16 block scales" not in str(refused):
            raise
        reject()
