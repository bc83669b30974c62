"""Golden vectors made by bitnet.cpp itself: I2_S's quantize_i2_s, read back by its kernels, for
its x86 build (layout i2_s) and its ARM build (layout i2_s_arm)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import ryzq

DATA = Path(__file__).parents[1] / "data"
I2S_CASES = sorted(p.name for p in DATA.glob("i2s_*.npz"))
#: Each layout and the vector key of the build that reads it.
BUILDS = {"i2_s": "i2s_x86", "i2_s_arm": "i2s_arm"}
BLOCK = {"i2_s": 128, "i2_s_arm": 64}


def takes(layout: str, shape: tuple[int, ...]) -> bool:
    return shape[-1] % BLOCK[layout] == 0


def ternary_scale(w: np.ndarray) -> float | None:
    """The scale s where ``w`` is ternary x s with s >= 1e-6, else None: the input for which
    quantize_i2_s (sign, zero below 1e-6, scale max |w|) is absmax per tensor."""
    s = float(np.abs(w).max())
    return s if s >= 1e-6 and np.isin(np.abs(w), [0, s]).all() else None


VECTORS = {n: dict(np.load(DATA / n)) for n in I2S_CASES}
#: The cases each layout takes, and of those the ternary ones.
PACKED = [(n, lay) for n in I2S_CASES for lay in BUILDS if takes(lay, VECTORS[n]["input"].shape)]
TERNARY = [(n, lay) for n, lay in PACKED if ternary_scale(VECTORS[n]["input"]) is not None]
#: The cases both layouts take, with a nonzero code.
BOTH = [
    n for n in I2S_CASES if all((n, lay) in PACKED for lay in BUILDS) and VECTORS[n]["codes"].any()
]


def test_there_are_i2s_golden_cases():
    assert len(I2S_CASES) >= 7
    assert len(PACKED) == 2 * len(I2S_CASES) - 3  # rowlen_2x320 in i2_s_arm only
    assert len(TERNARY) >= 7 and len(BOTH) >= 4


def test_the_cases_ryzq_quantizes_to_bitnet_cpps_bytes_are_the_ternary_ones():
    ternary = {n for n in I2S_CASES if ternary_scale(VECTORS[n]["input"]) is not None}
    assert ternary == {
        "i2s_absmean_16x384.npz",
        "i2s_rowlen_2x320.npz",
        "i2s_rowlen_3x96.npz",
        "i2s_ternary_4x128.npz",
        "i2s_zeros_8x256.npz",
    }


@pytest.mark.parametrize(("name", "layout"), PACKED)
@pytest.mark.parametrize("simd", ryzq.simd_levels())
def test_pack_unpack_and_dequantize_equal_bitnet_cpp(name, layout, simd):
    z = VECTORS[name]
    w, expected = z["input"], z[BUILDS[layout]]
    assert expected.shape == (w.size // 4 + 32,)
    # The whole GGUF tensor data: codes, the float32 scale, 28 zero bytes.
    packed = ryzq.pack(z["codes"], layout, scales=z["scale"], simd=simd)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(ryzq.unpack(expected, w.shape, layout, simd=simd), z["codes"])
    # What bitnet.cpp's matmul computes for each weight, bit for bit, from its own bytes.
    t = ryzq.quantize(np.zeros(w.shape, np.float32), layout=layout)
    t = dataclasses.replace(t, data=expected, scales=z["scale"].reshape(1))
    back = t.dequantize(np.float32, simd=simd)
    np.testing.assert_array_equal(back.view(np.uint32), z["dequant"].view(np.uint32))


@pytest.mark.parametrize(("name", "layout"), TERNARY)
@pytest.mark.parametrize("simd", ryzq.simd_levels())
def test_ternary_input_quantizes_to_bitnet_cpps_bytes(name, layout, simd):
    # quantize_i2_s takes the sign of each weight (0 below 1e-6) and scale max |w|: for
    # ternary x s, what absmax per tensor gives, which is what bitnet.cpp's converter hands it.
    z = VECTORS[name]
    w = z["input"]
    t = ryzq.quantize(w, layout=layout, method="absmax", simd=simd)
    assert t.granularity == "tensor" and t.data.shape == (w.size // 4 + 32,)
    np.testing.assert_array_equal(t.data, z[BUILDS[layout]])
    np.testing.assert_array_equal(t.scales, z["scale"].reshape(1))
    np.testing.assert_array_equal(t.codes(simd=simd), z["codes"])
    back = t.dequantize(np.float32, simd=simd)
    np.testing.assert_array_equal(back.view(np.uint32), z["dequant"].view(np.uint32))


@pytest.mark.parametrize("layout", list(BUILDS))
@pytest.mark.parametrize("simd", ryzq.simd_levels())
def test_the_master_weights_quantize_to_bitnet_cpps_bytes_by_default(layout, simd):
    # bitnet.cpp's converter ternarizes with absmean per tensor (BitnetModel.weight_quant),
    # then quantize_i2_s stores max |W'| = 1/s: ryzq's default, from the master weights.
    z = VECTORS["i2s_absmean_16x384.npz"]
    t = ryzq.quantize(z["master"], layout=layout, simd=simd)
    assert (t.method, t.granularity) == ("absmean", "tensor")
    np.testing.assert_array_equal(t.data, z[BUILDS[layout]])
    np.testing.assert_array_equal(t.codes(simd=simd), z["codes"])


def test_below_bitnet_cpps_zero_threshold_ryzq_keeps_the_codes():
    # Ternary x 4e-7: quantize_i2_s's absolute 1e-6 threshold stores every code 0 with scale
    # 4e-7; absmax per tensor stores the codes, and the tensor dequantizes exactly.
    z = VECTORS["i2s_tiny_4x128.npz"]
    w = z["input"]
    assert not z["codes"].any() and z["scale"] == np.float32(4e-7)
    t = ryzq.quantize(w, layout="i2_s", method="absmax")
    np.testing.assert_array_equal(t.dequantize(np.float32), w)
    # The same bytes but for the codes.
    np.testing.assert_array_equal(t.data[-32:], z["i2s_x86"][-32:])


@pytest.mark.parametrize("name", BOTH)
def test_a_file_for_one_build_is_other_codes_to_the_other(name):
    z = VECTORS[name]
    w = z["input"]
    assert not np.array_equal(z["i2s_x86"], z["i2s_arm"])
    misread = ryzq.unpack(z["i2s_x86"], w.shape, "i2_s_arm")
    assert not np.array_equal(misread, z["codes"])


def test_rows_bitnet_cpp_cannot_read_are_refused():
    # K = 320: bitnet.cpp's x86 quantize_i2_s runs its 128-blocks across rows (the vector's
    # i2s_x86), which its kernels cannot read; its ARM build reads rows of 64-blocks.
    z = VECTORS["i2s_rowlen_2x320.npz"]
    with pytest.raises(
        ryzq.RyzqError,
        match=r"the i2_s layout packs rows in blocks of 128 values, but the rows of shape "
        r"\[2, 320\] hold 320: .*; i2_s_arm takes them \(for bitnet.cpp's ARM builds only\)",
    ):
        ryzq.quantize(z["input"], layout="i2_s", method="absmax")
    with pytest.raises(ryzq.RyzqError, match=r"blocks of 128 values.*\[2, 320\]"):
        ryzq.unpack(z["i2s_x86"], (2, 320), "i2_s")
    # K = 96, 3 rows: quantize_i2_s drops the last 32 values (n % 128, n % 64); ryzq refuses.
    z = VECTORS["i2s_rowlen_3x96.npz"]
    assert not z["i2s_x86"][-36:-32].any()  # the dropped tail: bytes 0, read as -1
    for layout in BUILDS:
        with pytest.raises(
            ryzq.RyzqError,
            match=rf"the {layout} layout packs rows in blocks of {BLOCK[layout]} values, but "
            r"the rows of shape \[3, 96\] hold 96: .*; i2 takes any shape",
        ):
            ryzq.quantize(z["input"], layout=layout, method="absmax")
        with pytest.raises(ryzq.RyzqError, match=r"\[3, 96\]"):
            ryzq.pack(z["codes"], layout, scales=z["scale"])


@pytest.mark.parametrize("layout", list(BUILDS))
def test_stale_bytes_after_the_scale_are_ignored_and_0b11_is_refused(layout):
    # llama-quantize leaves the 28 bytes after the scale unwritten; bitnet.cpp's kernels read
    # the field 0b11 as +2, which no ternary code packs to.
    z = VECTORS["i2s_zeros_8x256.npz"]
    w = z["input"]
    stale = z[BUILDS[layout]].copy()
    stale[-28:] = np.arange(28, dtype=np.uint8) * 9 + 1
    for level in ryzq.simd_levels():
        np.testing.assert_array_equal(ryzq.unpack(stale, w.shape, layout, simd=level), z["codes"])
    # ryzq writes zeros there, as bitnet.cpp's converters do.
    t = ryzq.quantize(w, layout=layout, method="absmax")
    assert not t.data[-28:].any()
    corrupt = stale.copy()
    corrupt[37] |= 0b1100_0000
    value = int(corrupt[37])
    for level in ryzq.simd_levels():
        with pytest.raises(
            ryzq.RyzqError, match=rf"corrupt packed {layout} data: byte 37 \(0x{value:02x}\) "
        ):
            ryzq.unpack(corrupt, w.shape, layout, simd=level)


def load(path):
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


@pytest.mark.parametrize("layout", list(BUILDS))
def test_a_safetensors_file_holds_bitnet_cpps_tensor_data(tmp_path, layout):
    # The packed tensor is the GGUF tensor data as it is; the file holds no scale tensor, and
    # dequantize_file reads the scale after the codes.
    ternary = {
        f"{n.removesuffix('.npz')}.weight": VECTORS[n] for n, lay in TERNARY if lay == layout
    }
    assert len(ternary) >= 3
    src = tmp_path / "in.safetensors"
    save_file({name: z["input"] for name, z in ternary.items()}, str(src))
    dst = tmp_path / "q.safetensors"
    report = ryzq.quantize_file(src, dst, layout=layout, method="absmax", include="*")
    assert len(report.quantized) == len(ternary)
    out, meta = load(dst)
    assert set(out) == set(ternary)
    described = json.loads(meta["ryzq"])["quantized"]
    for name, z in ternary.items():
        np.testing.assert_array_equal(out[name], z[BUILDS[layout]])
        assert described[name]["layout"] == layout and "scale" not in described[name]
        assert described[name]["granularity"] == "tensor"
    back = tmp_path / "back.safetensors"
    assert ryzq.dequantize_file(dst, back) == len(ternary)
    restored, _ = load(back)
    for name, z in ternary.items():
        np.testing.assert_array_equal(restored[name].view(np.uint32), z["dequant"].view(np.uint32))
