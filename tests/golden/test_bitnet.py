"""Golden vectors made by transformers itself: WeightQuant math and pack_weights."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ryzq

DATA = Path(__file__).parents[1] / "data"
CASES = sorted(p.name for p in DATA.glob("bitnet_*.npz"))


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
