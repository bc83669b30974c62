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
        "README.md",  # the model card ryzq writes
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
        # As from a terminal: a test run in the background inherits SIGINT ignored, and Python
        # then leaves it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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


TRUNCATE_MIDWAY = """
import os, sys
import ryzq
src, dst = sys.argv[1], sys.argv[2]
size = os.path.getsize(src)

def progress(done, total, nbytes):
    if done == 3:  # another program cuts the file while ryzq reads it
        os.truncate(src, size // 2)

try:
    ryzq._ryzq.quantize_checkpoint(
        src, dst, folder=False, request=ryzq._ryzq.QuantizeRequest(layout="i2"),
        progress=progress,
    )
except ryzq.RyzqError as err:
    print(err.kind, err.path, err, sep="\\n")
    sys.exit(3)
"""


def test_a_source_cut_while_it_is_read_is_an_error_not_a_crash(tmp_path):
    from ryzq.synthetic import synthesize_checkpoint

    src = tmp_path / "in.safetensors"
    synthesize_checkpoint(src, layers=4, hidden=256, intermediate=512, vocab=1000, dtype="F32")
    dst = tmp_path / "out.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", TRUNCATE_MIDWAY, str(src), str(dst)],
        capture_output=True,
        text=True,
    )
    # Without the check the mapped read past the new end kills the process with SIGBUS (-7).
    assert result.returncode == 3, (result.returncode, result.stderr)
    kind, path, message = result.stdout.splitlines()[:3]
    assert kind == "truncated" and path == str(src)
    assert "shrank" in message and "another program" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        src = write(tmp_path / "in.safetensors", tiny_model("F32", hidden=256))
        dst = disk / "out.safetensors"
        with pytest.raises(ryzq.RyzqError, match=r"out\.safetensors: No space left") as caught:
            ryzq.quantize_file(src, dst)
        assert caught.value.kind == "io" and caught.value.path == str(dst)
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_read_only_destination_names_its_folder_and_leaves_nothing(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        # root writes anywhere a mode forbids; a read-only mount stops it.
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)])
        if mounted.returncode != 0:
            pytest.skip("this machine cannot mount a read-only tmpfs")
    else:
        ro.chmod(0o555)
    try:
        with pytest.raises(ryzq.RyzqError, match=r"ro: .*(Read-only|Permission denied)") as caught:
            ryzq.quantize_file(src, ro / "out.safetensors")
        assert caught.value.kind == "io"
        assert list(ro.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            ro.chmod(0o755)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_sigkill_at_any_point_leaves_the_old_output_or_nothing_and_a_named_leftover(tmp_path, kind):
    import random
    import signal
    import time

    from ryzq.synthetic import synthesize_checkpoint

    if kind == "folder":
        src = tmp_path / "model"
        src.mkdir()
        synthesize_checkpoint(
            src / "model.safetensors", layers=8, hidden=512, intermediate=1536, vocab=4000
        )
        (src / "config.json").write_text("{}")
        dst = tmp_path / "out"
    else:
        src = tmp_path / "in.safetensors"
        synthesize_checkpoint(src, layers=8, hidden=512, intermediate=1536, vocab=4000)
        dst = tmp_path / "out.safetensors"
        dst.write_bytes(b"the old output")
    command = [sys.executable, "-m", "ryzq", "quantize", str(src), str(dst), "--quiet"]
    start = time.monotonic()
    subprocess.run(command, check=True)
    took = time.monotonic() - start
    if kind == "folder":
        import shutil

        shutil.rmtree(dst)
    else:
        dst.write_bytes(b"the old output")
    rng = random.Random(0)
    for _ in range(8):
        proc = subprocess.Popen(command)
        time.sleep(rng.uniform(0, took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if kind == "folder":
            # Absent, or complete (the kill came after the rename).
            assert not dst.exists() or (dst / "config.json").is_file()
            if dst.exists():
                shutil.rmtree(dst)
        else:
            assert dst.exists()
            data = dst.read_bytes()
            assert data == b"the old output" or ryzq.read_header(dst)["tensors"]
            dst.write_bytes(b"the old output")
        names = {p.name for p in tmp_path.iterdir()} - {src.name, dst.name}
        assert all(n.startswith(f".{dst.name}.") and n.endswith(".ryzq-partial") for n in names)
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".ryzq-partial")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if leftovers:
        assert "removed what an interrupted run of ryzq had left" in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".ryzq-partial")]


def test_two_runs_writing_one_output_at_once_leave_one_complete_output(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model("F32", hidden=256))
    dst = tmp_path / "out.safetensors"
    command = [sys.executable, "-m", "ryzq", "quantize", str(src), str(dst), "--quiet"]
    runs = [subprocess.Popen(command) for _ in range(3)]
    assert [p.wait() for p in runs] == [0, 0, 0]
    expected = tmp_path / "alone.safetensors"
    ryzq.quantize_file(src, expected)
    assert dst.read_bytes() == expected.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alone.safetensors",
        "in.safetensors",
        "out.safetensors",
    ]


def test_a_deeply_nested_config_is_refused_not_a_crash(tmp_path):
    src = model_folder(tmp_path / "m")
    (src / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ryzq.RyzqError, match="not valid JSON") as caught:
        ryzq.quantize_model(src, tmp_path / "q")
    assert caught.value.path == str(src / "config.json")


def test_a_fifo_or_device_as_the_source_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "in.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ryzq.RyzqError, match="not a regular file") as caught:
        ryzq.quantize_file(fifo, tmp_path / "out.safetensors")
    assert caught.value.kind == "unsafe_path"
    with pytest.raises(ryzq.RyzqError, match="not a regular file"):
        ryzq.read_header("/dev/zero")
