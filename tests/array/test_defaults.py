"""The defaults reproduce the model's own quantizer: absmean per tensor, in every layout."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

import reference as ref
import ryzq
from checkpoints import tiny_model, write
from strategies import BLOCKS, DTYPES, weights

#: Shapes every layout takes: rows a multiple of 4 (bitnet), rows of whole 256-blocks (GGUF;
#: q2_0's blocks are 64).
common_shapes = st.tuples(st.integers(1, 4).map(lambda r: 4 * r), st.sampled_from([256, 512]))


@given(data=st.data(), shape=common_shapes, dtype=st.sampled_from(list(DTYPES)))
def test_every_layout_has_the_codes_of_bitnet_and_the_tensors_absmean(data, shape, dtype):
    w = data.draw(weights(shape, dtype))
    codes, scales = ref.absmean_quantize(w, "tensor")
    bitnet = ryzq.quantize(w, layout="bitnet")
    np.testing.assert_array_equal(bitnet.codes(), codes)
    for layout in ryzq.LAYOUTS:
        t = ryzq.quantize(w, layout=layout)
        assert t.granularity == "tensor" and t.method == "absmean"
        np.testing.assert_array_equal(t.codes(), bitnet.codes())
        # The tensor's absmean as the layout stores it: float32, or float16 in GGUF blocks.
        stored = scales.astype(np.float16).astype(np.float32) if layout in BLOCKS else scales
        np.testing.assert_array_equal(t.scales, stored)


@pytest.mark.parametrize(
    ("layout", "method", "expected"),
    [
        ("tq2_0", "absmean", "tensor"),
        ("tq1_0", "optimal", "tensor"),
        ("tq2_0", "absmax", "group:256"),
        ("tq1_0", "absmax", "group:256"),
        ("q2_0", "absmax", "group:64"),
        ("q2_0", "absmean", "tensor"),
        ("q2_0", "optimal", "tensor"),
        ("i2", "absmax", "tensor"),
        ("bitnet", "absmean", "tensor"),
    ],
)
def test_default_granularity_follows_the_method(layout, method, expected):
    assert ryzq.default_granularity(layout, method) == expected
    w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    assert ryzq.quantize(w, layout=layout, method=method).granularity == expected


def test_block_layouts_store_a_tensor_or_row_scale_in_every_block():
    w = np.random.default_rng(1).standard_normal((3, 768)).astype(np.float32)
    for granularity, groups in (("tensor", 1), ("row", 3), ("group:512", None)):
        if groups is None:
            with pytest.raises(ryzq.RyzqError, match="whole blocks"):
                ryzq.quantize(w.reshape(3, 768), layout="tq2_0", granularity="group:384")
            continue
        t = ryzq.quantize(w, layout="tq2_0", granularity=granularity)
        assert t.scales.shape == (groups,)
        d = t.data.reshape(3, 3, 66)[:, :, 64:].copy().view(np.float16).astype(np.float32)
        np.testing.assert_array_equal(d.reshape(-1), np.repeat(t.scales, 9 // groups))
        np.testing.assert_array_equal(t.dequantize(np.float32), ref.dequantize(t.codes(), t.scales))


def test_q2_0_stores_a_tensor_row_or_group_scale_first_in_every_block():
    w = np.random.default_rng(1).standard_normal((3, 320)).astype(np.float32)
    for granularity, groups in (("tensor", 1), ("row", 3), ("group:320", 3), ("group:64", 15)):
        t = ryzq.quantize(w, layout="q2_0", granularity=granularity)
        assert t.scales.shape == (groups,)
        d = t.data.reshape(3, 5, 18)[:, :, :2].copy().view(np.float16).astype(np.float32)
        np.testing.assert_array_equal(d.reshape(-1), np.repeat(t.scales, 15 // groups))
        np.testing.assert_array_equal(t.dequantize(np.float32), ref.dequantize(t.codes(), t.scales))
    with pytest.raises(ryzq.RyzqError, match="whole blocks"):
        ryzq.quantize(w, layout="q2_0", granularity="group:32")


def fake_quant(w):
    """transformers' WeightQuant: the BitNet model's own weights, per tensor, in float32."""
    x = w.astype(np.float32)
    inv = np.float32(1) / max(np.float32(np.abs(x).mean()), np.float32(1e-5))
    return np.clip(np.round(x * inv), -1, 1) / inv, np.float32(1) / inv


def assert_fake_quant_within_float16(restored, w):
    expected, scale = fake_quant(w)
    # The codes are the model's; only the scale is rounded to float16 (relative error 2^-11).
    bound = float(scale) * 2.0**-11
    np.testing.assert_allclose(restored.astype(np.float32), expected, rtol=0, atol=bound)
    assert np.array_equal(np.sign(restored.astype(np.float32)), np.sign(expected))


@pytest.mark.parametrize("layout", ["tq2_0", "tq1_0", "q2_0"])
def test_a_file_in_gguf_blocks_dequantizes_to_the_models_weights(tmp_path, layout):
    # Rows of 64 fit q2_0's blocks, not TQ's.
    state = tiny_model("F32", hidden=BLOCKS[layout])
    src = write(tmp_path / "in.safetensors", state)
    report = ryzq.quantize_file(src, tmp_path / "q.safetensors", layout=layout)
    assert report.granularity == "tensor" and len(report.quantized) == 14
    ryzq.dequantize_file(tmp_path / "q.safetensors", tmp_path / "back.safetensors")
    with safe_open(str(tmp_path / "back.safetensors"), framework="numpy") as f:
        for t in report.quantized:
            assert_fake_quant_within_float16(f.get_tensor(t.name), state[t.name])


def test_a_model_folder_in_tq2_0_dequantizes_to_the_models_weights(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    state = tiny_model("F32", hidden=256)
    write(src / "model.safetensors", state)
    (src / "config.json").write_text(json.dumps({"model_type": "bitnet"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults never warn
        report = ryzq.quantize_model(src, tmp_path / "q", layout="tq2_0")
    assert report.warnings == []
    ryzq.dequantize_model(tmp_path / "q", tmp_path / "back")
    with safe_open(str(tmp_path / "back" / "model.safetensors"), framework="numpy") as f:
        for t in report.quantized:
            assert_fake_quant_within_float16(f.get_tensor(t.name), state[t.name])


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "bitnet"},
        {"model_type": "llama", "architectures": ["BitnetForCausalLM"]},
        {"model_type": "llama", "quantization_config": {"quant_method": "bitnet"}},
    ],
)
def test_absmean_per_group_on_a_bitnet_model_warns(tmp_path, config):
    src = tmp_path / "src"
    src.mkdir()
    write(src / "model.safetensors", tiny_model("F32", hidden=256))
    (src / "config.json").write_text(json.dumps(config))
    with pytest.warns(ryzq.RyzqWarning, match="one absmean scale per weight matrix"):
        report = ryzq.quantize_model(src, tmp_path / "q", layout="tq2_0", granularity="group:256")
    assert len(report.warnings) == 1 and "not make a better model" in report.warnings[0]
    assert report.to_dict()["warnings"] == report.warnings
    assert "warning: this is a BitNet model" in report.summary()


def test_no_warning_for_other_models_or_methods(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write(src / "model.safetensors", tiny_model("F32", hidden=256))
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ryzq.quantize_model(src, tmp_path / "a", layout="tq2_0", granularity="group:256")
        assert report.warnings == []
        (src / "config.json").write_text(json.dumps({"model_type": "bitnet"}))
        report = ryzq.quantize_model(src, tmp_path / "b", layout="tq2_0", method="absmax")
        assert report.warnings == []
