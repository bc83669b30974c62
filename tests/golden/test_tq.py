"""GGUF TQ2_0 / TQ1_0: byte for byte what ggml and gguf-py make, on golden vectors and on
generated arrays."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ryzq

try:
    from gguf import GGMLQuantizationType, quants
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs gguf-py", allow_module_level=True)

DATA = Path(__file__).parents[1] / "data"
CASES = sorted(p.name for p in DATA.glob("tq_*.npz"))
TYPES = {"tq2_0": GGMLQuantizationType.TQ2_0, "tq1_0": GGMLQuantizationType.TQ1_0}


def test_there_are_golden_cases():
    assert len(CASES) >= 4


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("layout", list(TYPES))
@pytest.mark.parametrize("simd", ryzq.simd_levels())
def test_golden_bytes_and_dequantization(name, layout, simd):
    z = np.load(DATA / name)
    t = ryzq.quantize(z["input"], layout=layout, method="absmax", simd=simd)
    np.testing.assert_array_equal(t.data, z[layout])
    np.testing.assert_array_equal(t.dequantize(simd=simd), z[f"{layout}_dequant"])


@st.composite
def gguf_weights(draw):
    rows = draw(st.integers(1, 6))
    blocks = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ternary", "ties", "zero_blocks"]))
    shape = (rows, 256 * blocks)
    if kind == "normal":
        w = rng.standard_normal(shape) * draw(st.sampled_from([1e-3, 0.02, 1.0, 50.0]))
    elif kind == "ternary":
        w = rng.integers(-1, 2, shape) * 0.03
    elif kind == "ties":
        w = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], shape)
    else:
        keep = (rng.random((rows, blocks, 1)) < 0.5).repeat(256, axis=2).reshape(shape)
        w = rng.standard_normal(shape) * keep
    return np.asarray(w, dtype=np.float32)


@given(w=gguf_weights(), layout=st.sampled_from(list(TYPES)))
def test_equal_to_gguf_py(w, layout):
    expected = quants.quantize(w, TYPES[layout])
    for level in ryzq.simd_levels():
        t = ryzq.quantize(w, layout=layout, method="absmax", simd=level)
        np.testing.assert_array_equal(t.data, expected)
        np.testing.assert_array_equal(
            t.dequantize(simd=level), quants.dequantize(expected, TYPES[layout])
        )
