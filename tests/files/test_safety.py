"""Nothing written where it was not asked for, nothing read that should not be: outputs that are
not files, reports over inputs, outputs inside their source, file modes, pickles, and what a
model folder's copy leaves out."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import ryzq
from checkpoints import digest, tiny_model, write


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "ryzq", *map(str, args)], capture_output=True, text=True
    )


def model_folder(root: Path) -> Path:
    root.mkdir()
    write(root / "model.safetensors", tiny_model())
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "tokenizer.json").write_text("{}")
    return root


def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ryzq.RyzqError, match="not a regular file") as caught:
        ryzq.quantize_file(src, fifo)
    assert caught.value.kind == "unsafe_path"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ryzq.RyzqError, match="not a regular file"):
        ryzq.quantize_file(src, tmp_path / "folder")
    assert (tmp_path / "folder").is_dir() and not any((tmp_path / "folder").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "in.safetensors"]


@pytest.mark.parametrize("which", ["src", "dst", "missing-dir"])
def test_a_report_path_is_checked_before_the_work(tmp_path, which):
    src = write(tmp_path / "in.safetensors", tiny_model())
    before = digest(src)
    dst = tmp_path / "out.safetensors"
    report = {"src": src, "dst": dst, "missing-dir": tmp_path / "nope" / "r.json"}[which]
    result = run("quantize", src, dst, "--report", report)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "report" in result.stderr
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def test_an_output_folder_inside_its_source_is_refused(tmp_path):
    src = model_folder(tmp_path / "m1")
    with pytest.raises(ryzq.RyzqError, match="inside the model folder") as caught:
        ryzq.quantize_model(src, src / "q")
    assert caught.value.kind == "unsafe_path"
    assert sorted(p.name for p in src.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_outputs_follow_the_umask(tmp_path):
    src = model_folder(tmp_path / "m")
    old = os.umask(0o027)
    try:
        ryzq.quantize_file(src / "model.safetensors", tmp_path / "q.safetensors")
        ryzq.quantize_model(src, tmp_path / "q")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "q.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o750
    for f in (tmp_path / "q").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f


def test_pickled_checkpoints_are_never_loaded(tmp_path):
    pickled = tmp_path / "pytorch_model.bin"
    pickled.write_bytes(b"\x80\x04\x95 not loaded")
    with pytest.raises(ryzq.RyzqError, match=r"pickled checkpoint.*never loads.*safetensors"):
        ryzq.quantize_file(pickled, tmp_path / "out.safetensors")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04\x95")
    with pytest.raises(ryzq.RyzqError, match=r"pytorch_model\.bin.*pickled checkpoint"):
        ryzq.quantize_model(folder, tmp_path / "q")
    package = Path(ryzq.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        assert "import pickle" not in text and "torch.load" not in text, source


def test_the_copy_leaves_out_version_control_and_other_weights(tmp_path):
    src = model_folder(tmp_path / "m")
    (src / ".git" / "lfs").mkdir(parents=True)
    (src / ".git" / "lfs" / "object").write_bytes(b"x" * 1000)
    (src / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (src / "original").mkdir()
    (src / "original" / "consolidated.00.pth").write_bytes(b"\x80\x04")
    (src / "original" / "params.json").write_text("{}")
    (src / "model.gguf").write_bytes(b"GGUF")
    (src / "old.safetensors").write_bytes(b"\x00" * 8)
    report = ryzq.quantize_model(src, tmp_path / "q")
    copied = sorted(str(p.relative_to(tmp_path / "q")) for p in (tmp_path / "q").rglob("*"))
    assert copied == [
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "original",
        "original/params.json",
        "tokenizer.json",
    ]
    skipped = dict(report.skipped_files)
    assert set(skipped) == {".git", "original/consolidated.00.pth", "model.gguf", "old.safetensors"}
    assert (
        "version-control" in skipped[".git"]
        and "pickled" in skipped["original/consolidated.00.pth"]
    )
    assert "left out" in report.summary()
    again = ryzq.quantize_model(src, tmp_path / "q2", copy_also=["original/*.pth"])
    assert (tmp_path / "q2" / "original" / "consolidated.00.pth").is_file()
    assert "original/consolidated.00.pth" not in dict(again.skipped_files)


def test_links_to_files_are_followed_and_broken_links_found_first(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    write(blobs / "abc", tiny_model())
    (blobs / "cfg").write_text(json.dumps({"model_type": "llama"}))
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model.safetensors").symlink_to(blobs / "abc")
    (snapshot / "config.json").symlink_to(blobs / "cfg")
    report = ryzq.quantize_model(snapshot, tmp_path / "q")
    assert len(report.quantized) == 14
    (snapshot / "tokenizer.json").symlink_to(blobs / "missing")
    with pytest.raises(ryzq.RyzqError, match=r"tokenizer\.json: cannot be read") as caught:
        ryzq.quantize_model(snapshot, tmp_path / "q2")
    assert caught.value.kind == "unsafe_path"
    assert not (tmp_path / "q2").exists()
    assert not list(tmp_path.glob(".q2*"))


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_terminated_run_leaves_nothing(tmp_path, signame):
    import signal
    import time

    from ryzq.synthetic import synthesize_checkpoint

    src = tmp_path / "big.safetensors"
    synthesize_checkpoint(src, layers=24, hidden=512, intermediate=1536, vocab=8000, dtype="F32")
    dst = tmp_path / "out.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ryzq", "quantize", str(src), str(dst), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.safetensors.*.ryzq-partial")):
        assert proc.poll() is None, "finished before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "ryzq: interrupted; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]
