"""quantize_model: Hugging Face model folders, single-file and sharded."""

import json

import numpy as np
import pytest
from safetensors import safe_open

import ryzq
from checkpoints import make_folder


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_model_folder(tmp_path, shards, linear_class):
    src, dst = tmp_path / "src", tmp_path / "dst"
    state = make_folder(src, shards)
    report = ryzq.quantize_model(src, dst, linear_class=linear_class)
    config = json.loads((dst / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "bitnet" and qc["linear_class"] == linear_class
    assert qc["quantization_mode"] == "offline"
    assert qc["modules_to_not_convert"] == ["lm_head", "model.embed_tokens"]
    assert config["hidden_size"] == 32
    assert (dst / "tokenizer.json").read_text() == '{"tokenizer": true}'
    assert (dst / "extra" / "notes.txt").read_text() == "kept"
    assert len(report.tensors) == len(state) and len(report.quantized) == 21

    if shards == 1:
        files = ["model.safetensors"]
    else:
        index = json.loads((dst / "model.safetensors.index.json").read_text())
        files = sorted(set(index["weight_map"].values()))
        assert len(files) == shards
        sizes = 0
        seen = {}
        for f in files:
            with safe_open(str(dst / f), framework="numpy") as h:
                for k in h.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                    seen[k] = f
                    sizes += h.get_tensor(k).nbytes
        assert index["weight_map"] == seen
        assert index["metadata"]["total_size"] == sizes
    names = set()
    for f in files:
        with safe_open(str(dst / f), framework="numpy") as h:
            names |= set(h.keys())
    scales = {n for n in names if n.endswith("_scale")}
    assert len(scales) == 21 and names - scales == set(state)
    assert not list(tmp_path.glob(".*ryzq-partial"))


def test_missing_shard_is_named(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 2)
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        ryzq.RyzqError, match=r"shard .model-00002-of-00002.safetensors. .*does not"
    ):
        ryzq.quantize_model(src, tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_an_error_in_a_later_shard_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 2)
    (src / "model-00002-of-00002.safetensors").write_bytes(b"\x64" + bytes(7) + b"{}")
    with pytest.raises(ryzq.RyzqError, match=r"model-00002-of-00002\.safetensors"):
        ryzq.quantize_model(src, tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_destination_rules(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ryzq.RyzqError, match="not an empty folder"):
        ryzq.quantize_model(src, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    ryzq.quantize_model(src, tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    with pytest.raises(ryzq.RyzqError, match=r"no config\.json"):
        ryzq.quantize_model(tmp_path / "full", tmp_path / "other")


def load(path):
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_own_layouts_are_described_for_ryzq(tmp_path):
    src = tmp_path / "src"
    state = make_folder(src, 1)
    ryzq.quantize_model(src, tmp_path / "dst", layout="t1", granularity="row")
    qc = json.loads((tmp_path / "dst" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "ryzq" and qc["layout"] == "t1" and qc["granularity"] == "row"
    packed = tmp_path / "dst" / "model.safetensors"
    assert ryzq.dequantize_file(packed, tmp_path / "back.safetensors") == 21
    # ryzq reads the folder back: the original names, shapes and dtypes, and each quantized
    # weight as its codes times its row's scale, in the weight's dtype.
    out, back = load(packed), load(tmp_path / "back.safetensors")
    assert set(back) == set(state)
    quantized = {n for n in state if n + "_scale" in out}
    assert len(quantized) == 21
    for name, w in state.items():
        assert back[name].dtype == w.dtype and back[name].shape == w.shape, name
        if name not in quantized:
            np.testing.assert_array_equal(back[name].view(np.uint8), w.view(np.uint8))
            continue
        t = ryzq.quantize(w, layout="t1", granularity="row")
        np.testing.assert_array_equal(out[name], t.data)
        scale = out[name + "_scale"]
        np.testing.assert_array_equal(scale, t.scales)
        codes = ryzq.unpack(out[name], w.shape, "t1").astype(np.float32)
        expected = (codes * scale[:, None]).astype(w.dtype)
        np.testing.assert_array_equal(back[name].astype(np.float32), expected.astype(np.float32))


def test_biases_of_autobitlinear_weights_are_divided_whatever_the_patterns(tmp_path):
    src = tmp_path / "src"
    state = make_folder(src, 1)
    bias = "model.layers.0.mlp.down_proj.bias"
    assert bias in state
    with pytest.raises(ryzq.RyzqError, match=r"down_proj\.bias.*selected for quantization"):
        ryzq.quantize_model(src, tmp_path / "a", linear_class="autobitlinear", include="*.bias")
    report = ryzq.quantize_model(
        src, tmp_path / "b", linear_class="autobitlinear", exclude="*.bias"
    )
    t = next(t for t in report.tensors if t.name == bias)
    assert "divided by its weight's weight_scale" in t.kept_because


def test_no_destination_is_an_error_before_anything_is_read(tmp_path, monkeypatch):
    # Nothing listens there: a Hub source would fail on its first request, were one sent.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for src in (tmp_path / "absent", "hf://org/model"):
        with pytest.raises(ryzq.RyzqError, match=r"give a destination, or dry_run=True"):
            ryzq.quantize_model(src, None)
