"""Every SIMD level this processor runs gives exactly the scalar reference's bytes and numbers."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ryzq
from strategies import (
    ROW_BLOCKS,
    block_scales,
    codes,
    finest_granularity,
    granularities,
    shapes,
    weights,
)

LEVELS = ryzq.simd_levels()
SIMD_LEVELS = [level for level in LEVELS if level != "scalar"]


def test_scalar_is_always_supported_and_current_level_is_listed():
    assert LEVELS[0] == "scalar"
    assert ryzq.simd_level() in LEVELS


def simd_levels() -> list[str]:
    """The levels to compare with scalar: every level above it. A test that could compare none
    would pass on nothing, so it says so and fails instead."""
    assert SIMD_LEVELS, (
        f"no SIMD level could be compared with the scalar reference: this processor runs only "
        f"{LEVELS}"
    )
    return SIMD_LEVELS


def assert_same_quantization(a: ryzq.TernaryTensor, b: ryzq.TernaryTensor) -> None:
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.scales, b.scales)
    assert a.stats == b.stats  # bit-identical sums: same lanes, same order


@given(
    data=st.data(),
    layout=st.sampled_from(ryzq.LAYOUTS),
    method=st.sampled_from(ryzq.METHODS),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
)
def test_quantize_and_dequantize_equal_scalar(data, layout, method, dtype):
    levels = simd_levels()
    shape = data.draw(shapes(layout, max_side=300 if layout in ("i2", "t1") else 70))
    granularity = data.draw(granularities(layout, shape))
    w = data.draw(weights(shape, dtype))
    options = {"layout": layout, "method": method, "granularity": granularity}
    try:
        expected = ryzq.quantize(w, **options, simd="scalar")
    except ryzq.RyzqError as refused:
        # A scale the GGUF blocks' float16 cannot hold (tiny weights): every level refuses it.
        assert "float16 block scales" in str(refused)
        for level in levels:
            with pytest.raises(ryzq.RyzqError, match=re.escape(str(refused))):
                ryzq.quantize(w, **options, simd=level)
        return
    for level in levels:
        got = ryzq.quantize(w, **options, simd=level)
        assert_same_quantization(got, expected)
        for out in ("float32", "float16", "bfloat16"):
            np.testing.assert_array_equal(
                got.dequantize(out, simd=level).view(np.uint8),
                expected.dequantize(out, simd="scalar").view(np.uint8),
            )


@given(data=st.data(), layout=st.sampled_from(ryzq.LAYOUTS))
def test_pack_and_unpack_equal_scalar(data, layout):
    levels = simd_levels()
    shape = data.draw(shapes(layout, max_side=400 if layout in ("i2", "t1") else 90))
    c = data.draw(codes(shape))
    scales = block_scales(layout, c.size, 0.25)
    packed = ryzq.pack(c, layout, scales=scales, simd="scalar")
    for level in levels:
        np.testing.assert_array_equal(ryzq.pack(c, layout, scales=scales, simd=level), packed)
        np.testing.assert_array_equal(ryzq.unpack(packed, shape, layout, simd=level), c)


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
def test_large_tensors_equal_scalar(layout):
    levels = simd_levels()
    rng = np.random.default_rng(11)
    cols = 5120 if layout in ROW_BLOCKS else 5003
    w = (rng.standard_normal((132, cols)) * 0.05).astype(np.float32)
    granularity = finest_granularity(layout)
    expected = ryzq.quantize(w, layout=layout, granularity=granularity, simd="scalar")
    for level in levels:
        assert_same_quantization(
            ryzq.quantize(w, layout=layout, granularity=granularity, simd=level), expected
        )


def test_unknown_or_unsupported_level_is_refused():
    with pytest.raises(ryzq.RyzqError, match="unknown SIMD level"):
        ryzq.quantize(np.ones(4, np.float32), simd="sse9")
    if "avx512" not in LEVELS:
        with pytest.raises(ryzq.RyzqError, match="not supported"):
            ryzq.quantize(np.ones(4, np.float32), simd="avx512")


def _level_in_subprocess(env_value: str) -> subprocess.CompletedProcess:
    code = (
        "import numpy, ryzq; ryzq.quantize(numpy.ones(8, numpy.float32)); print(ryzq.simd_level())"
    )
    env = {**os.environ, "RYZQ_SIMD": env_value}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("level", LEVELS)
def test_ryzq_simd_forces_a_level(level):
    result = _level_in_subprocess(level)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == level


def test_ryzq_simd_with_an_unknown_level_is_an_error():
    result = _level_in_subprocess("neon9")
    assert result.returncode != 0
    assert "RyzqError: RYZQ_SIMD: unknown SIMD level" in result.stderr
