"""quantize_file / dequantize_file: outputs read back by the safetensors package itself."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import ryzq
from checkpoints import DTYPES, digest, tiny_model, write
from strategies import BLOCKS, I2_S, ROW_BLOCKS


def load(path):
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


LINEAR = "model.layers.1.self_attn.q_proj.weight"

#: The granularity each layout is quantized with here, given rather than left to the default:
#: one scale per tensor, except for GGUF's blocks, one scale per block (of 256 values, 64 in
#: q2_0). I2_S stores one per tensor only.
GRANULARITY = {
    "bitnet": "tensor",
    "i2": "tensor",
    "t1": "tensor",
    "tq2_0": "group:256",
    "tq1_0": "group:256",
    "q2_0": "group:64",
    "q8_0": "group:32",
    "i2_s": "tensor",
    "i2_s_arm": "tensor",
}


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize(
    ("layout", "linear_class"),
    [
        ("bitnet", "bitlinear"),
        ("bitnet", "autobitlinear"),
        ("i2", "bitlinear"),
        ("t1", "bitlinear"),
        ("tq2_0", "bitlinear"),
        ("tq1_0", "bitlinear"),
        ("q2_0", "bitlinear"),
        ("i2_s", "bitlinear"),
        ("i2_s_arm", "bitlinear"),
    ],
)
def test_quantize_file_writes_what_quantize_computes(tmp_path, dtype, layout, linear_class):
    # GGUF's blocks and I2_S take rows of whole blocks (256 values, 64 in q2_0 and i2_s_arm,
    # 128 in i2_s).
    state = tiny_model(dtype, hidden=ROW_BLOCKS.get(layout, 32))
    src = write(tmp_path / "in.safetensors", state)
    before = digest(src)
    dst = tmp_path / "out.safetensors"
    granularity = GRANULARITY[layout]
    report = ryzq.quantize_file(
        src, dst, layout=layout, granularity=granularity, linear_class=linear_class
    )
    assert digest(src) == before
    out, meta = load(dst)
    description = json.loads(meta["ryzq"])
    described = description["quantized"]
    assert meta["format"] == "pt"
    assert description.get("linear_class") == (linear_class if layout == "bitnet" else None)

    quantized = {t.name for t in report.tensors if t.quantized}
    assert quantized == {
        k for k in state if k.startswith("model.layers.") and k.endswith("proj.weight")
    }
    divided = {}
    for name, w in state.items():
        weight = name.removesuffix(".bias") + ".weight"
        if name.endswith(".bias") and weight in quantized and linear_class == "autobitlinear":
            divided[name] = weight
        if name not in quantized and name not in divided:
            assert out[name].dtype == w.dtype
            np.testing.assert_array_equal(out[name].view(np.uint8), w.view(np.uint8))
    if layout == "bitnet":
        # AutoBitLinear computes linear(x, codes, bias) * weight_scale: the bias is stored
        # divided by the stored weight_scale, in its own dtype.
        assert set(description.get("divided_biases", {})) == set(divided)
        for name, weight in divided.items():
            scale = out[weight + "_scale"].astype(np.float32)
            expected = (state[name].astype(np.float32) / scale).astype(state[name].dtype)
            assert out[name].dtype == state[name].dtype
            np.testing.assert_array_equal(out[name], expected)
    for name, w in state.items():
        if name not in quantized:
            continue
        t = ryzq.quantize(w, layout=layout, granularity=granularity)
        np.testing.assert_array_equal(out[name], t.data)
        d = described[name]
        assert d["shape"] == list(w.shape) and d["dtype"] == dtype and d["layout"] == layout
        if layout in BLOCKS:
            # GGUF blocks hold their float16 scales; no scale tensor is written.
            assert "scale" not in d and name + "_scale" not in out
            assert d["granularity"] == granularity
            continue
        if layout in I2_S:
            # The tensor's one float32 scale follows the codes, then 28 zero bytes, as in
            # bitnet.cpp's GGUF tensor data; no scale tensor is written.
            assert "scale" not in d and name + "_scale" not in out
            assert d["granularity"] == "tensor" and out[name].shape == (w.size // 4 + 32,)
            tail = out[name][w.size // 4 :]
            assert tail[:4].tobytes() == t.scales.astype("<f4").tobytes()
            assert not tail[4:].any()
            continue
        scale = out[name + "_scale"]
        if layout == "bitnet":
            # In the weight's dtype: 1/absmean (bitlinear) or absmean (autobitlinear).
            assert scale.dtype == w.dtype and scale.shape == (1,)
            inv = np.float32(1) / t.scales[0]
            if linear_class == "bitlinear":
                assert d["scale_convention"] == "divide"
                np.testing.assert_allclose(scale.astype(np.float32), inv, rtol=1e-2)
            else:
                assert d["scale_convention"] == "multiply"
                np.testing.assert_array_equal(scale, t.scales.astype(w.dtype))
        else:
            assert scale.dtype == np.float32 and d["scale_convention"] == "multiply"
            np.testing.assert_array_equal(scale, t.scales)


@pytest.mark.parametrize("layout", ryzq.LAYOUTS)
@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_report_is_the_error_of_the_file_as_written(tmp_path, layout, linear_class):
    state = tiny_model("BF16", hidden=ROW_BLOCKS.get(layout, 64))
    src = write(tmp_path / "in.safetensors", state)
    dst = tmp_path / "out.safetensors"
    granularity = GRANULARITY[layout]
    report = ryzq.quantize_file(
        src, dst, layout=layout, granularity=granularity, linear_class=linear_class
    )
    assert len(report.quantized) == 14
    restored = tmp_path / "restored.safetensors"
    assert ryzq.dequantize_file(dst, restored, dtype="float32") == len(report.quantized)
    back, meta = load(restored)
    assert "ryzq" not in meta
    assert set(back) == set(state)
    described = json.loads(load(dst)[1]["ryzq"])
    for t in report.tensors:
        w = state[t.name]
        assert back[t.name].shape == w.shape
        if t.name in described.get("divided_biases", {}):
            # Stored as bias / weight_scale in bf16, multiplied back: bf16 rounding apart.
            np.testing.assert_allclose(back[t.name], w.astype(np.float32), rtol=2**-7)
            continue
        if not t.quantized:
            # dtype= converts every float tensor, kept ones too; the rest is copied as it is.
            expected = w.astype(np.float32) if w.dtype.kind == "V" or w.dtype.kind == "f" else w
            assert back[t.name].dtype == expected.dtype
            np.testing.assert_array_equal(back[t.name], expected)
            continue
        # The report's numbers are those of the dequantized file, in float64.
        x = w.astype(np.float64)
        e = x - back[t.name].astype(np.float64)
        assert t.stats.sse == pytest.approx(float(np.sum(e * e)), rel=1e-5)
        assert t.stats.sum_sq == pytest.approx(float(np.sum(x * x)), rel=2**-20)
        assert t.stats.max_abs_error == pytest.approx(float(np.abs(e).max()), rel=1e-5)
        assert (t.scale is not None) == (granularity == "tensor")
        if t.scale is not None:  # one scale per tensor
            assert t.scale == pytest.approx(float(np.abs(back[t.name]).max()), rel=1e-6)
        assert t.bytes_in == w.nbytes


def test_dequantize_file_restores_original_dtypes(tmp_path):
    state = tiny_model("F16")
    src = write(tmp_path / "in.safetensors", state)
    ryzq.quantize_file(src, tmp_path / "q.safetensors", layout="t1", granularity="row")
    ryzq.dequantize_file(tmp_path / "q.safetensors", tmp_path / "r.safetensors")
    back, _ = load(tmp_path / "r.safetensors")
    for name, w in state.items():
        assert back[name].dtype == w.dtype, name


def test_row_granularity_in_files(tmp_path):
    state = tiny_model("F32")
    src = write(tmp_path / "in.safetensors", state)
    report = ryzq.quantize_file(src, tmp_path / "o.safetensors", layout="i2", granularity="row")
    out, _ = load(tmp_path / "o.safetensors")
    t = ryzq.quantize(state[LINEAR], layout="i2", granularity="row")
    np.testing.assert_array_equal(out[LINEAR + "_scale"], t.scales)
    np.testing.assert_array_equal(out[LINEAR], t.data)
    assert next(r for r in report.tensors if r.name == LINEAR).scale is None
    with pytest.raises(ryzq.RyzqError, match="one weight_scale per tensor"):
        ryzq.quantize_file(src, tmp_path / "b.safetensors", granularity="row")


def test_include_and_exclude_override_the_default(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    report = ryzq.quantize_file(
        src, tmp_path / "o.safetensors", include="lm_head.*", exclude=["*.layers.0.*"]
    )
    by_name = {t.name: t for t in report.tensors}
    assert by_name["lm_head.weight"].quantized
    assert not by_name["model.layers.0.mlp.up_proj.weight"].quantized
    assert "excluded by pattern" in by_name["model.layers.0.mlp.up_proj.weight"].kept_because
    assert by_name["model.layers.1.mlp.up_proj.weight"].quantized
    assert "embeddings" in by_name["model.embed_tokens.weight"].kept_because
    assert "int64" in by_name["model.position_ids"].kept_because


def test_all_zero_weight_gives_zero_codes_and_no_nan(tmp_path):
    state = tiny_model("F32")
    state[LINEAR] = np.zeros_like(state[LINEAR])
    src = write(tmp_path / "in.safetensors", state)
    report = ryzq.quantize_file(src, tmp_path / "o.safetensors", layout="i2")
    t = next(r for r in report.tensors if r.name == LINEAR)
    assert t.stats.nmse == 0 and t.stats.counts[0] == state[LINEAR].size
    out, _ = load(tmp_path / "o.safetensors")
    assert np.isfinite(out[LINEAR + "_scale"]).all()
    ryzq.dequantize_file(tmp_path / "o.safetensors", tmp_path / "r.safetensors")
    back, _ = load(tmp_path / "r.safetensors")
    assert (back[LINEAR] == 0).all()


def test_report_summary_json_and_layers(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model(layers=3))
    report = ryzq.quantize_file(src, tmp_path / "o.safetensors")
    assert [g.layer for g in report.layers] == [0, 1, 2, None]
    assert all(g.quantized == 7 for g in report.layers[:3])
    pooled = report.layers[1].stats
    mine = [t.stats for t in report.quantized if t.layer == 1]
    assert pooled.sse == pytest.approx(math.fsum(s.sse for s in mine))
    assert pooled.nmse == pytest.approx(pooled.sse / math.fsum(s.sum_sq for s in mine))
    text = report.summary()
    assert str(report) == text
    assert "21 quantized" in text and "x (quantized tensors alone" in text
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == data
    s = data["summary"]
    assert s["tensors"] == len(report.tensors) and s["quantized_tensors"] == 21
    assert s["bytes_out"] == (tmp_path / "o.safetensors").stat().st_size
    assert s["compression_ratio"] == pytest.approx(s["bytes_in"] / s["bytes_out"])
    assert set(s["nmse"]) == {"mean", "min", "max", "std"}
    assert set(s["seconds"]) == {"read", "quantize", "write", "total"}
    assert len(data["layers"]) == 4 and len(data["tensors"]) == len(report.tensors)


def test_threads_give_identical_output(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model(hidden=256))
    one = ryzq.quantize_file(src, tmp_path / "a.safetensors", threads=1)
    two = ryzq.quantize_file(src, tmp_path / "b.safetensors", threads=2)
    assert one.threads == 1 and two.threads == 2
    assert digest(tmp_path / "a.safetensors") == digest(tmp_path / "b.safetensors")
    assert [t.stats for t in one.tensors] == [t.stats for t in two.tensors]


def test_an_interrupt_leaves_nothing(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    dst = tmp_path / "out.safetensors"

    def interrupt(done, total, nbytes):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ryzq._ryzq.quantize_checkpoint(
            str(src),
            str(dst),
            folder=False,
            request=ryzq._ryzq.QuantizeRequest(layout="bitnet"),
            progress=interrupt,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    # 48 tensors of 4 MiB: 192 MiB in. Resident memory may hold a few tensors, not the file.
    rng = np.random.default_rng(0)
    state = {
        f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((1024, 1024), np.float32)
        for i in range(48)
    }
    src = write(tmp_path / "big.safetensors", state)
    del state
    code = f"""
import ryzq

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) // 1024

before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
ryzq.quantize_file({str(src)!r}, {str(tmp_path / "o.safetensors")!r})
print(status("VmHWM") - before)
"""
    grew_mib = int(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert grew_mib < 64, f"peak RSS grew by {grew_mib} MiB quantizing a 192 MiB file"


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dst_may_be_a_relative_name_and_replaces_an_existing_file(tmp_path, dtype, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(Path("in.safetensors"), tiny_model(dtype))
    Path("out.safetensors").write_bytes(b"old")
    ryzq.quantize_file("in.safetensors", "out.safetensors")
    out, _ = load("out.safetensors")
    assert LINEAR in out
    assert not list(tmp_path.glob(".*ryzq-partial"))
