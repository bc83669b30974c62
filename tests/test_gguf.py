"""write_gguf: TQ2_0 / TQ1_0 files gguf-py reads back. Q2_0, which gguf-py 0.19 cannot name, and
I2_S, which gguf-py's writer cannot size: a clear error (their bytes are held to ggml's and
bitnet.cpp's in golden/)."""

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


def test_write_gguf_writes_q2_0_where_gguf_py_names_it_else_says_why(tmp_path):
    w = (np.random.default_rng(4).standard_normal((8, 320)) * 0.02).astype(np.float32)
    t = ryzq.quantize(w, layout="q2_0", method="absmax")
    path = tmp_path / "model.gguf"
    if not hasattr(GGMLQuantizationType, "Q2_0"):
        # gguf-py 0.19, PyPI's newest: no type 42. Nothing is written, not even a partial file.
        with pytest.raises(
            ryzq.RyzqError,
            match=r"tensor 'w': layout q2_0 is GGML type Q2_0 \(42\), which this gguf-py "
            r"\(.*\) cannot name, so write_gguf cannot write it",
        ):
            ryzq.write_gguf(path, {"w": t, "norm": np.ones(320, np.float32)})
        assert not any(tmp_path.iterdir())
        return
    # llama.cpp's own gguf-py names it (42) and stores the raw blocks.
    assert GGMLQuantizationType.Q2_0 == 42
    ryzq.write_gguf(path, {"w": t})
    (q,) = GGUFReader(path).tensors
    assert q.tensor_type == GGMLQuantizationType.Q2_0
    np.testing.assert_array_equal(np.asarray(q.data).reshape(-1), t.data.reshape(-1))


@pytest.mark.parametrize("layout", ["i2_s", "i2_s_arm"])
def test_write_gguf_refuses_i2_s_before_writing_anything(tmp_path, layout):
    t = ryzq.quantize(np.ones((4, 256), np.float32), layout=layout)
    with pytest.raises(
        ryzq.RyzqError,
        match=rf"tensor 'w': layout {layout} is GGML type 36, whose data \(the codes, then one "
        r"scale\) gguf-py's writer cannot size, so write_gguf cannot write it; it writes tq2_0",
    ):
        ryzq.write_gguf(tmp_path / "x.gguf", {"norm": np.ones(256, np.float32), "w": t})
    assert not any(tmp_path.iterdir())
