"""dry_run / --dry-run: the plan says what the conversion will do, and writes nothing."""

import json
import subprocess
import sys

import ryzq
from checkpoints import make_folder, tiny_model, write


def test_the_plan_of_a_file_is_what_quantizing_does(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model("BF16", hidden=256))
    plan = ryzq.quantize_file(src, layout="tq2_0", dry_run=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
    report = ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="tq2_0")
    assert [t.name for t in plan.tensors] == [t.name for t in report.tensors]
    for planned, done in zip(plan.tensors, report.tensors, strict=True):
        assert (planned.action == "quantize") == done.quantized
        assert planned.bytes_out == done.bytes_out
        if planned.action == "keep":
            assert planned.why == done.kept_because
    header = ryzq.read_header(tmp_path / "out.safetensors")
    assert plan.bytes_out == sum(t["end"] - t["start"] for t in header["tensors"])
    assert (plan.layout, plan.method, plan.granularity) == ("tq2_0", "absmean", "tensor")


def test_the_plan_of_a_folder_has_its_config_and_warnings(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 3)
    plan = ryzq.quantize_model(src, linear_class="autobitlinear", dry_run=True)
    assert not (tmp_path / "dst").exists()
    assert {t.shard for t in plan.tensors} == {
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    }
    assert "divide" in {t.action for t in plan.tensors}
    ryzq.quantize_model(src, tmp_path / "dst", linear_class="autobitlinear")
    written = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert plan.config == written
    summary = plan.summary()
    assert "nothing written" in summary and "21 tensors quantized" in summary


def test_the_cli_prints_the_plan_and_writes_nothing(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    result = subprocess.run(
        [sys.executable, "-m", "ryzq", "quantize", str(src), "--dry-run", "--layout", "t1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "plan: layout t1" in result.stdout and "14 tensors quantized" in result.stdout
    assert "model.layers.0.self_attn.q_proj.weight" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
