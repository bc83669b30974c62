"""Golden vectors made by the peers themselves: transformers (WeightQuant math and
pack_weights) and ggml (Q2_0's quantize_row_q2_0_ref and dequantize_row_q2_0)."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ryzq

DATA = Path(__file__).parents[1] / "data"
CASES = sorted(p.name for p in DATA.glob("bitnet_*.npz"))
Q2_0_CASES = sorted(p.name for p in DATA.glob("q2_0_*.npz"))


def load(name):
    z = np.load(DATA / name)
    w = z["input"]
    dtype = str(z["input_dtype"])
    if dtype == "bfloat16":
        w = w.view(ml_dtypes.bfloat16)
    return z, w


def test_there_are_golden_cases():
    assert len(CASES) >= 10


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("simd", ryzq.simd_levels())
def test_codes_scale_and_bitnet_bytes_equal_transformers(name, simd):
    z, w = load(name)
    packable = "bitnet_packed" in z.files
    t = ryzq.quantize(w, layout="bitnet" if packable else "i2", simd=simd)
    np.testing.assert_array_equal(t.codes(), z["codes"])
    # ryzq's mean is correctly rounded; torch's float32 reduction may round it the other way
    # (README, "The absmean scale"), so the scale may differ by one ulp, never more.
    np.testing.assert_array_max_ulp(t.scales, np.array([z["absmean"]], np.float32), maxulp=1)
    np.testing.assert_array_max_ulp(
        np.float32(1) / t.scales, np.array([z["inv_scale"]], np.float32), maxulp=2
    )
    if packable:
        np.testing.assert_array_equal(t.data, z["bitnet_packed"])
        np.testing.assert_array_equal(ryzq.pack(z["codes"], "bitnet"), z["bitnet_packed"])
        np.testing.assert_array_equal(
            ryzq.unpack(z["bitnet_packed"], z["codes"].shape, "bitnet"), z["codes"]
        )


def test_raw_bf16_bits_golden():
    z = np.load(DATA / "bitnet_normal_bf16_256x96.npz")
    t = ryzq.quantize(z["input"], layout="bitnet", dtype="bfloat16")
    np.testing.assert_array_equal(t.data, z["bitnet_packed"])


def test_odd_rows_are_refused_for_bitnet():
    _, w = load("bitnet_normal_f32_5x3_oddrows.npz")
    with pytest.raises(ryzq.RyzqError, match="multiple of 4"):
        ryzq.quantize(w, layout="bitnet")


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
