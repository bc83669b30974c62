"""The defaults on files and model folders give the model's own quantized weights back, in the
GGUF blocks too; absmean per group on a BitNet model warns, and nothing else does."""

import json
import warnings

import numpy as np
import pytest
from safetensors import safe_open

import ryzq
from checkpoints import tiny_model, write
from strategies import BLOCKS


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
