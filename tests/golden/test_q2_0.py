"""Golden vectors made by ggml itself: Q2_0's quantize_row_q2_0_ref and dequantize_row_q2_0."""

from pathlib import Path

import numpy as np
import pytest

import ryzq

DATA = Path(__file__).parents[1] / "data"
Q2_0_CASES = sorted(p.name for p in DATA.glob("q2_0_*.npz"))


def test_there_are_q2_0_golden_cases():
    assert len(Q2_0_CASES) >= 5


@pytest.mark.parametrize("name", Q2_0_CASES)
@pytest.mark.parametrize("simd", ryzq.simd_levels())
@pytest.mark.parametrize("granularity", ["group:64", None])
def test_q2_0_bytes_codes_and_dequantization_equal_ggml(name, simd, granularity):
    # ggml's quantize_row_q2_0_ref is absmax per block of 64, ties away from zero: ryzq's
    # absmax per group:64, its default for absmax in q2_0.
    z = np.load(DATA / name)
    w = z["input"]
    t = ryzq.quantize(w, layout="q2_0", method="absmax", granularity=granularity, simd=simd)
    assert t.granularity == "group:64"
    assert t.data.shape == (w.shape[0], w.shape[1] // 64 * 18)
    np.testing.assert_array_equal(t.data.reshape(-1), z["q2_0"])
    np.testing.assert_array_equal(t.codes(simd=simd), z["codes"])
    # Bit for bit, zeros' signs included (-0.0 in, +0.0 out).
    back = t.dequantize(np.float32, simd=simd)
    np.testing.assert_array_equal(back.view(np.uint32), z["dequant"].view(np.uint32))
    # ggml's bytes, as any reader has them, unpack and dequantize the same.
    packed = z["q2_0"].reshape(t.data.shape)
    np.testing.assert_array_equal(ryzq.unpack(packed, w.shape, "q2_0", simd=simd), z["codes"])
    d = packed.reshape(-1, 18)[:, :2].copy().view(np.float16).astype(np.float32)
    codes = z["codes"].reshape(-1, 64).astype(np.float32)
    np.testing.assert_array_equal((codes * d).reshape(w.shape), z["dequant"])
    np.testing.assert_array_equal(t.scales, d.reshape(-1))


def test_q2_0_ternary_input_gives_its_codes_and_one_scale_in_every_block():
    z = np.load(DATA / "q2_0_ternary_4x128.npz")
    d = z["q2_0"].reshape(-1, 18)[:, :2].copy().view(np.float16)
    assert (d == np.float16(0.0123)).all()
    # The tensor's absmax, stored in every block, gives ggml's bytes too here.
    t = ryzq.quantize(z["input"], layout="q2_0", method="absmax", granularity="tensor")
    np.testing.assert_array_equal(t.data.reshape(-1), z["q2_0"])


def test_q2_0_zero_blocks_are_a_zero_scale_and_0x55():
    z = np.load(DATA / "q2_0_zeros_3x128.npz")
    blocks = z["q2_0"].reshape(-1, 18)
    zero = (z["input"].reshape(-1, 64) == 0).all(axis=1)
    assert zero.sum() >= 3
    for block in blocks[zero]:
        assert block.tobytes() == b"\x00\x00" + b"\x55" * 16
