"""The ryzq command."""

import json
import math
import subprocess
import sys

import pytest
from safetensors import safe_open

import ryzq
from checkpoints import tiny_model, write


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ryzq", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_demo_quantizes_a_synthetic_model_in_every_layout():
    result = run("demo", "--layers", "2", "--hidden", "256", "--intermediate", "512")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "synthesized a BitNet-style checkpoint: 20 tensors" in out
    small = run("demo", "--layers", "1", "--hidden", "64", "--intermediate", "128")
    assert small.returncode == 0, small.stderr
    for layout in ("tq2_0", "tq1_0"):
        needs = f"{layout}: not this model's shapes; it needs rows (the last dimension) a multiple"
        assert needs in small.stdout
    # Rows of 64 and 128 fit q2_0's blocks of 64.
    small_verdict = small.stdout[small.stdout.index("verdict") :].splitlines()
    assert any(line.strip().startswith("q2_0 ") for line in small_verdict)
    assert not any(line.strip().startswith("tq2_0 ") for line in small_verdict)
    odd = run("demo", "--layers", "1", "--hidden", "96", "--intermediate", "160")
    assert odd.returncode == 0, odd.stderr
    assert (
        "q2_0: not this model's shapes; it needs rows (the last dimension) a multiple of 64"
        in odd.stdout
    )
    verdict = out[out.index("verdict") :].splitlines()
    for layout in ryzq.LAYOUTS:
        row = next(line for line in verdict if line.strip().startswith(layout + " "))
        assert row.rstrip().endswith("ok")
    assert "NMSE over quantized tensors" in out
    # Rows fit the GGUF blocks here, so the methods are compared in tq2_0, the default
    # (absmean per tensor) named as the one that reproduces the trained model.
    methods = out[out.index("methods (layout tq2_0)") :].splitlines()[1:5]
    nmse = {(line.split()[0], line.split()[2]): float(line.split()[3]) for line in methods}
    assert set(nmse) == {
        ("absmean", "tensor"),
        ("absmax", "group:256"),
        ("optimal", "tensor"),
        ("absmean", "group:256"),
    }
    default = next(line for line in methods if line.split()[:3] == ["absmean", "per", "tensor"])
    assert default.endswith("the default: reproduces the trained model")
    assert nmse["optimal", "tensor"] <= nmse["absmean", "tensor"]
    assert "a lower\n  weight error from another method or granularity is not a better model" in out


def test_quantize_inspect_dequantize(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    dst, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    result = run("quantize", src, dst, "--layout", "t1", "--report", report, "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "14 quantized" in result.stdout
    data = json.loads(report.read_text())
    assert data["summary"]["quantized_tensors"] == 14 and data["layout"] == "t1"

    shown = run("inspect", dst)
    assert shown.returncode == 0, shown.stderr
    assert "written by ryzq: 14 quantized tensors" in shown.stdout
    assert "t1 of bfloat16 [32, 32], absmean per tensor" in shown.stdout
    assert "scales of model.layers.0.mlp.up_proj.weight" in shown.stdout

    back = tmp_path / "back.safetensors"
    restored = run("dequantize", dst, back, "--dtype", "float32")
    assert restored.returncode == 0 and "14 tensors dequantized" in restored.stdout
    with safe_open(str(back), framework="numpy") as f:
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight").dtype == "float32"


def test_quantize_a_model_folder(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    write(src / "model.safetensors", tiny_model())
    (src / "config.json").write_text("{}")
    result = run("quantize", src, tmp_path / "out", "--quiet", "--linear-class", "autobitlinear")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["quantization_config"]["linear_class"] == "autobitlinear"


def test_synth_shape_and_count(tmp_path):
    dst = tmp_path / "s.safetensors"
    result = run(
        "synth",
        dst,
        "--layers",
        "2",
        "--hidden",
        "32",
        "--intermediate",
        "64",
        "--vocab",
        "100",
        "--dtype",
        "BF16",
    )
    assert result.returncode == 0, result.stderr
    with safe_open(str(dst), framework="numpy") as f:
        names = list(f.keys())
        assert len(names) == 2 * 9 + 2
        assert f.get_tensor("model.layers.1.mlp.down_proj.weight").shape == (32, 64)
        assert str(f.get_tensor("model.embed_tokens.weight").dtype) == "bfloat16"


def test_default_synth_is_the_seed_model_shape():
    from ryzq.synthetic import model_tensors

    tensors = model_tensors(layers=24, hidden=2048, intermediate=8640, vocab=32000)
    assert len(tensors) == 218
    assert sum(math.prod(shape) for _, shape in tensors) == 1_742_309_376


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("quantize", "{tmp}/missing.safetensors", "{tmp}/o.safetensors"), "missing.safetensors"),
        (("quantize", "{tmp}/bad.safetensors", "{tmp}/o.safetensors"), "bad.safetensors"),
        (("dequantize", "{tmp}/bad.safetensors", "{tmp}/o.safetensors"), "bad.safetensors"),
        (("inspect", "{tmp}/bad.safetensors"), "bad.safetensors"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path, args, message):
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ryzq: error:") and message in result.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_info_and_version():
    info = run("info")
    assert info.returncode == 0 and ryzq.simd_level() in info.stdout
    version = run("--version")
    assert version.returncode == 0 and ryzq.__version__ in version.stdout


def model_folder(root, shards=2):
    import json as _json

    root.mkdir()
    state = tiny_model("BF16")
    (root / "config.json").write_text(_json.dumps({"model_type": "llama"}))
    (root / "tokenizer.json").write_text("{}")
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        write(root / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": 1}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(_json.dumps(index))
    return state


def test_inspect_reads_a_model_folder_as_quantize_does(tmp_path):
    model_folder(tmp_path / "src")
    (tmp_path / "src" / "model-00002-of-00002.safetensors").unlink()
    shown = run("inspect", tmp_path / "src")
    quantized = run("quantize", tmp_path / "src", tmp_path / "q")
    assert shown.returncode == quantized.returncode == 2
    assert 'shard "model-00002-of-00002.safetensors"' in shown.stderr
    assert shown.stderr == quantized.stderr


def test_inspect_and_dequantize_a_model_folder(tmp_path):
    state = model_folder(tmp_path / "src")
    assert run("quantize", tmp_path / "src", tmp_path / "q", "--quiet").returncode == 0
    shown = run("inspect", tmp_path / "q")
    assert shown.returncode == 0, shown.stderr
    assert "a model folder, 2 safetensors files" in shown.stdout
    assert "index model.safetensors.index.json: 36 tensors" in shown.stdout
    assert '"quant_method": "bitnet"' in shown.stdout
    assert shown.stdout.count("written by ryzq") == 2
    back = run("dequantize", tmp_path / "q", tmp_path / "back", "--dtype", "float16")
    assert back.returncode == 0, back.stderr
    assert "14 tensors dequantized" in back.stdout
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert "quantization_config" not in config
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    total = 0
    for shard in set(index["weight_map"].values()):
        with safe_open(str(tmp_path / "back" / shard), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                t = f.get_tensor(name)
                total += t.nbytes
                # --dtype converts every float tensor, not only the quantized ones.
                expected = "int64" if name == "model.position_ids" else "float16"
                assert str(t.dtype) == expected, name
    assert index["metadata"]["total_size"] == total
    assert (tmp_path / "back" / "tokenizer.json").read_text() == "{}"


def test_negative_threads_exit_2_with_one_line(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    for args in (
        ("quantize", src, tmp_path / "o.safetensors", "--threads", "-1"),
        ("quantize", src, tmp_path / "o.safetensors", "--threads", "0"),
    ):
        result = run(*args)
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and "positive number of threads" in result.stderr
    ok = run("quantize", src, tmp_path / "o.safetensors", "--quiet")
    assert ok.returncode == 0
    assert (
        run(
            "dequantize", tmp_path / "o.safetensors", tmp_path / "b.safetensors", "--threads", "1"
        ).returncode
        == 0
    )


def test_inspect_aligns_wide_names(tmp_path):
    import numpy as np

    from ryzq.report import display_width

    state = {
        "模型.层.0.权重.weight": np.ones((8, 32), np.float32),
        "model.layers.0.mlp.up_proj.weight": np.ones((8, 32), np.float32),
    }
    src = write(tmp_path / "wide.safetensors", state)
    shown = run("inspect", src)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if " float32 " in line]
    assert len(rows) == 2
    # The dtype column starts at the same terminal column on every row.
    starts = {display_width(row[: row.index(" float32 ")]) for row in rows}
    assert len(starts) == 1


def test_upper_case_choices_are_accepted(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    result = run(
        "quantize", src, tmp_path / "o.safetensors", "--layout", "I2", "--method", "ABSMAX"
    )
    assert result.returncode == 0, result.stderr
    assert "layout i2, method absmax" in result.stdout


def test_help_says_what_the_options_do_and_their_defaults():
    result = run("quantize", "--help")
    text = " ".join(result.stdout.split())
    assert "BitNet b1.58's own quantizer" in text and "(default: absmean)" in text
    assert "(default: bitnet)" in text and "GGUF's TQ2_0" in text


def test_info_lists_layouts_with_bits_and_defaults():
    result = run("info")
    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()[3:]]
    lines = {row[0]: row[1:] for row in rows if row and row[0] in ryzq.LAYOUTS}
    assert set(lines) == set(ryzq.LAYOUTS)
    assert "GGUF's TQ2_0" in result.stdout and "dim 0 a multiple of 4" in result.stdout
    assert lines["tq2_0"] == ["2.062", "tensor", "/", "group:256", "/", "tensor"]
    assert lines["q2_0"] == ["2.25", "tensor", "/", "group:64", "/", "tensor"]
    assert lines["t1"][0] == "1.6"
    # 2 bits and, per tensor, a float32 scale and 28 zero bytes.
    for layout in ("i2_s", "i2_s_arm"):
        assert lines[layout] == ["2.002", "tensor", "/", "tensor", "/", "tensor"]
    assert "garbage to an ARM build of bitnet.cpp, which reads i2_s_arm" in result.stdout


def test_the_i2_s_layouts_are_choices_and_inspect_says_where_their_scale_is(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model("F32", hidden=64))
    dst = tmp_path / "o.safetensors"
    result = run("quantize", src, dst, "--layout", "I2_S_ARM", "--quiet")
    assert result.returncode == 0, result.stderr
    shown = run("inspect", dst)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "q_proj.weight" in line)
    assert "i2_s_arm of float32 [64, 64], absmean per tensor, its scale after the codes" in row
    # Rows of 64 are not whole x86 blocks: one error line naming the tensor and i2_s_arm.
    refused = run("quantize", src, tmp_path / "x.safetensors", "--layout", "i2_s")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "i2_s_arm takes them" in refused.stderr and 'tensor "model.layers.' in refused.stderr
    helped = " ".join(run("quantize", "--help").stdout.split())
    assert "{bitnet,i2,t1,tq2_0,tq1_0,q2_0,q8_0,i2_s,i2_s_arm}" in helped


def test_the_bitnet_granularity_warning_is_one_line_on_stderr(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    write(src / "model.safetensors", tiny_model("F32"))
    (src / "config.json").write_text('{"model_type": "bitnet"}')
    result = run("quantize", src, tmp_path / "q", "--layout", "i2", "--granularity", "row")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ryzq: warning: this is a BitNet model") == 1
    assert result.stderr.count("\n") == 1
    assert "warning: this is a BitNet model" in result.stdout  # the summary says it too
    quiet = run("quantize", src, tmp_path / "q2", "--layout", "i2")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr + quiet.stdout
