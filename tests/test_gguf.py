"""write_gguf: TQ2_0 / TQ1_0 files gguf-py reads back; Q2_0, Q8_0 and I2_S, which gguf-py 0.19
cannot name, read back by ryzq (their bytes are held to ggml's and bitnet.cpp's in golden/)."""

import os

import numpy as np
import pytest

import ryzq

try:
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader, quants
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs gguf-py", allow_module_level=True)

TYPES = {"tq2_0": GGMLQuantizationType.TQ2_0, "tq1_0": GGMLQuantizationType.TQ1_0}


@pytest.mark.parametrize("layout", list(TYPES))
@pytest.mark.parametrize("method", ryzq.METHODS)
def test_gguf_file_read_back_by_gguf_py(tmp_path, layout, method):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 512)) * 0.02).astype(np.float32)
    t = ryzq.quantize(w, layout=layout, method=method)
    norm = np.ones(512, np.float32)
    path = tmp_path / "model.gguf"
    ryzq.write_gguf(path, {"blk.0.ffn_up.weight": t, "blk.0.attn_norm.weight": norm})
    reader = GGUFReader(path)
    tensors = {r.name: r for r in reader.tensors}
    q = tensors["blk.0.ffn_up.weight"]
    assert q.tensor_type == TYPES[layout]
    np.testing.assert_array_equal(np.asarray(q.data).reshape(t.data.shape), t.data)
    back = quants.dequantize(np.asarray(q.data), q.tensor_type).reshape(w.shape)
    np.testing.assert_array_equal(back, t.dequantize(np.float32))
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.attn_norm.weight"].data), norm)
    assert not list(tmp_path.glob(".*ryzq-partial"))


def test_write_gguf_refuses_layouts_gguf_lacks(tmp_path):
    t = ryzq.quantize(np.ones((4, 256), np.float32), layout="i2")
    with pytest.raises(ryzq.RyzqError, match="layout i2 has no GGUF type"):
        ryzq.write_gguf(tmp_path / "x.gguf", {"w": t})
    assert not any(tmp_path.iterdir())
    assert gguf.GGMLQuantizationType.TQ2_0 == 35 and gguf.GGMLQuantizationType.TQ1_0 == 34


def read_back(path):
    """Every tensor of a GGUF file as ryzq's reader lists it, with its bytes."""
    header = ryzq._ryzq.read_gguf_header(str(path))
    data = path.read_bytes()
    out = {}
    end = len(data)
    for name, ggml_type, shape, nbytes in reversed(header["tensors"]):
        # Tensors lie back to back, each padded to 32 bytes; the last ends the file.
        start = end - (-(-nbytes // 32) * 32)
        out[name] = (ggml_type, shape, data[start : start + nbytes])
        end = start
    return out


@pytest.mark.parametrize("layout", ["q2_0", "q8_0", "i2_s", "i2_s_arm"])
def test_write_gguf_writes_the_layouts_gguf_py_cannot(tmp_path, layout):
    # gguf-py 0.19 names neither Q2_0 (42) nor I2_S (36); ryzq's own writer lays them out.
    w = (np.random.default_rng(4).standard_normal((8, 256)) * 0.02).astype(np.float32)
    t = ryzq.quantize(w, layout=layout)
    path = tmp_path / "model.gguf"
    ryzq.write_gguf(path, {"norm": np.ones(256, np.float32), "w": t})
    tensors = read_back(path)
    ggml_type, shape, data = tensors["w"]
    assert ggml_type == layout.upper().removesuffix("_ARM") and shape == [8, 256]
    assert data == t.data.tobytes()
    assert tensors["norm"] == ("F32", [256], np.ones(256, np.float32).tobytes())
    back = tmp_path / "back.safetensors"
    ryzq.dequantize_file(path, back)
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(back)["w"], t.dequantize(np.float32))


def test_write_gguf_refuses_both_i2_s_byte_orders_in_one_file(tmp_path):
    w = np.ones((4, 256), np.float32)
    x86, arm = ryzq.quantize(w, layout="i2_s"), ryzq.quantize(w, layout="i2_s_arm")
    with pytest.raises(ryzq.RyzqError, match="one way per build"):
        ryzq.write_gguf(tmp_path / "x.gguf", {"a": x86, "b": arm})
    assert not any(tmp_path.iterdir())
