"""Model folders converted by the workers of an executor: dask.distributed's LocalCluster of
processes (the reference engine) and a ProcessPoolExecutor. The output must be the bytes of a
one-process run and the report its figures, whatever the workers and the order they finish
in; a worker killed mid-run changes nothing; a part that fails leaves no output and is the
only one a rerun redoes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ryzq
from checkpoints import make_folder
from ryzq.distributed import RECORD_SUFFIX

SHARDS = 4
BROKEN = "model-00002-of-00004.safetensors"


@pytest.fixture(scope="module")
def distributed():
    try:
        import distributed
    except ImportError:
        if os.environ.get("RYZQ_REQUIRE_INTEROP"):
            raise
        pytest.skip("needs dask.distributed: pip install 'ryzq[dask]'")
    return distributed


def local_cluster(distributed):
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client(distributed):
    cluster, client = local_cluster(distributed)
    with cluster, client:
        yield client


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def figures(report) -> dict:
    """The report without what differs from run to run: times, rates, thread counts."""
    d = report.to_dict()
    d.pop("threads")
    d["summary"].pop("seconds")
    d["summary"].pop("parameters_per_second")
    d["summary"].pop("bytes_per_second")
    for t in d["tensors"]:
        t.pop("seconds")
    return d


def assert_same_as_one_process(
    src: Path, dst: Path, report, tmp_path: Path, *, reused: str | None = None, **options
) -> None:
    """`dst` and `report` are what a one-process run of `options` gives; the report of a run
    that reused parts says so (`reused`), in the one line that differs."""
    one = tmp_path / "one-process"
    shutil.rmtree(one, ignore_errors=True)
    expected = ryzq.quantize_model(src, one, **options)
    assert files_of(dst) == files_of(one)
    got, want = figures(report), figures(expected)
    if reused is not None:
        said = [w for w in got["warnings"] if w.startswith(reused)]
        assert len(said) == 1, got["warnings"]
        got["warnings"].remove(said[0])
    assert got.pop("dst") == str(dst)
    want.pop("dst")
    assert got == want
    assert not (dst.parent / f".{dst.name}.ryzq-parts").exists()


def break_shard(path: Path) -> None:
    """NaNs in the last tensor's data (a bfloat16 0xffff is a NaN): the header reads, the
    conversion of its weights fails."""
    data = bytearray(path.read_bytes())
    data[-200:-100] = b"\xff" * 100
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("layout", "shards"), [("t1", SHARDS), ("bitnet", SHARDS), ("i2", 1)])
def test_dask_gives_the_output_and_report_of_one_process(tmp_path, client, layout, shards):
    src = tmp_path / "src"
    make_folder(src, shards)
    dst = tmp_path / "out"
    report = ryzq.quantize_model(src, dst, layout=layout, executor=client.get_executor())
    assert_same_as_one_process(src, dst, report, tmp_path, layout=layout)


def test_a_process_pool_gives_the_output_and_report_of_one_process(tmp_path):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    dst = tmp_path / "out"
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        report = ryzq.quantize_model(src, dst, layout="i2", executor=pool)
    assert_same_as_one_process(src, dst, report, tmp_path, layout="i2")


def kill_once(distributed, marker: Path):
    """A worker plugin: the first task to start executing, on any worker, kills its worker
    process (SIGKILL, no cleanup), which Dask sees as a lost worker. Defined here, so that it
    travels to the workers by value."""

    class KillOnce(distributed.WorkerPlugin):
        name = "ryzq-test-kill-once"

        def transition(self, key, start, finish, **kwargs) -> None:
            if finish != "executing":
                return
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, distributed):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    dst = tmp_path / "out"
    marker = tmp_path / "killed"
    cluster, client = local_cluster(distributed)
    with cluster, client:
        client.register_plugin(kill_once(distributed, marker))
        report = ryzq.quantize_model(src, dst, layout="t1", executor=client.get_executor())
    killed = int(marker.read_text())
    assert killed > 0 and killed != os.getpid()
    assert_same_as_one_process(src, dst, report, tmp_path, layout="t1")


def test_a_failed_part_leaves_no_output_and_a_rerun_redoes_only_it(tmp_path, client):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    break_shard(src / BROKEN)
    dst = tmp_path / "out"
    parts = tmp_path / ".out.ryzq-parts"
    executor = client.get_executor()
    with pytest.raises(ryzq.RyzqError) as err:
        ryzq.quantize_model(src, dst, layout="t1", executor=executor)
    message = str(err.value)
    assert message.startswith(f"{BROKEN}: not converted")
    assert "non-finite" in message and str(src / BROKEN) in message
    assert err.value.kind == "non_finite"
    assert not dst.exists()
    kept = sorted(p.name for p in parts.iterdir())
    done = [f"model-0000{i}-of-00004.safetensors" for i in (1, 3, 4)]
    assert kept == sorted(done + [name + RECORD_SUFFIX for name in done])
    make_folder(tmp_path / "clean", SHARDS)
    shutil.copy(tmp_path / "clean" / BROKEN, src / BROKEN)
    with pytest.warns(ryzq.RyzqWarning, match="3 of 4 output files were made by an earlier run"):
        report = ryzq.quantize_model(src, dst, layout="t1", executor=executor)
    assert_same_as_one_process(
        src, dst, report, tmp_path, reused="3 of 4 output files", layout="t1"
    )


def test_a_changed_part_or_request_is_redone(tmp_path, client):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    break_shard(src / BROKEN)
    dst = tmp_path / "out"
    parts = tmp_path / ".out.ryzq-parts"
    executor = client.get_executor()
    with pytest.raises(ryzq.RyzqError):
        ryzq.quantize_model(src, dst, layout="t1", executor=executor)
    make_folder(tmp_path / "clean", SHARDS)
    shutil.copy(tmp_path / "clean" / BROKEN, src / BROKEN)
    # A kept part whose bytes changed is not reused.
    tampered = parts / "model-00003-of-00004.safetensors"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.warns(ryzq.RyzqWarning, match="2 of 4 output files"):
        ryzq.quantize_model(src, dst, layout="t1", executor=executor)
    # Another request reuses nothing, whatever is kept.
    shutil.rmtree(dst)
    break_shard(src / BROKEN)
    with pytest.raises(ryzq.RyzqError):
        ryzq.quantize_model(src, dst, layout="i2", executor=executor)
    shutil.copy(tmp_path / "clean" / BROKEN, src / BROKEN)
    report = ryzq.quantize_model(src, dst, layout="t1", executor=executor)
    assert not any("earlier run" in w for w in report.warnings)
    assert_same_as_one_process(src, dst, report, tmp_path, layout="t1")


def test_a_gguf_file_is_not_split_into_jobs(tmp_path):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        pytest.raises(ryzq.RyzqError, match="one output file, written by one process"),
    ):
        ryzq.quantize_model(src, tmp_path / "out.gguf", layout="tq2_0", executor=pool)
    assert not (tmp_path / "out.gguf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_destination_that_is_taken_is_refused_before_any_job(tmp_path):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "mine.txt").write_text("kept")
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        pytest.raises(ryzq.RyzqError, match="exists and is not an empty folder"),
    ):
        ryzq.quantize_model(src, dst, layout="t1", executor=pool)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert [p.name for p in dst.iterdir()] == ["mine.txt"]


def test_cli_workers_gives_the_files_of_one_process(tmp_path, distributed, capsys):
    from ryzq.cli import main

    src = tmp_path / "src"
    make_folder(src, SHARDS)
    assert main(["quantize", str(src), str(tmp_path / "one"), "--layout", "t1", "--quiet"]) == 0
    report = str(tmp_path / "many.json")
    args = ["quantize", str(src), str(tmp_path / "many"), "--layout", "t1", "--quiet"]
    assert main([*args, "--workers", "2", "--report", report]) == 0
    assert files_of(tmp_path / "many") == files_of(tmp_path / "one")
    assert (tmp_path / "many.json").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers must be a positive whole number"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ],
)
def test_cli_refuses_bad_worker_flags(tmp_path, capsys, flags, message):
    from ryzq.cli import main

    src = tmp_path / "src"
    make_folder(src, SHARDS)
    assert main(["quantize", str(src), str(tmp_path / "out"), *flags]) != 0
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cli_workers_are_for_model_folders(tmp_path, capsys):
    from ryzq.cli import main

    src = tmp_path / "src"
    make_folder(src, 1)
    args = ["quantize", str(src / "model.safetensors"), str(tmp_path / "out.safetensors")]
    assert main([*args, "--workers", "2"]) != 0
    assert "--workers and --scheduler are for model folders" in capsys.readouterr().err


def test_parts_out_of_order_or_missing_are_refused(tmp_path):
    from ryzq import _ryzq

    src = tmp_path / "src"
    make_folder(src, SHARDS)
    dst = tmp_path / "out"
    request = _ryzq.QuantizeRequest(layout="t1")
    parts, _, folder = _ryzq.plan_parts(str(src), str(dst), request=request)
    assert [p["name"] for p in parts] == [
        f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)
    ]
    done = [_ryzq.convert_part(str(src), str(dst), request=request, index=i) for i in range(4)]
    finish = dict(request=request, seconds=0.0, reused=0)
    with pytest.raises(ryzq.RyzqError, match="given where the plan has"):
        _ryzq.finish_parts(str(src), str(dst), parts=done[::-1], **finish)
    with pytest.raises(ryzq.RyzqError, match="3 parts given for a conversion of 4 output files"):
        _ryzq.finish_parts(str(src), str(dst), parts=done[:3], **finish)
    with pytest.raises(ryzq.RyzqError, match="part 0: not what a job returns"):
        _ryzq.finish_parts(str(src), str(dst), parts=["{}", *done[1:]], **finish)
    (folder / parts[2]["name"]).unlink()
    with pytest.raises(ryzq.RyzqError, match=parts[2]["name"]):
        _ryzq.finish_parts(str(src), str(dst), parts=done, **finish)
    assert not dst.exists()
    with pytest.raises(ryzq.RyzqError, match="part 4 of a conversion of 4 output files"):
        _ryzq.convert_part(str(src), str(dst), request=request, index=4)


FORKED_POOL = """
import concurrent.futures, multiprocessing, sys
import numpy as np
import ryzq

# The kernels' threads run in this process first, as they would in a notebook.
ryzq.quantize(np.ones((64, 64), dtype=np.float32), layout="t1")
context = multiprocessing.get_context("fork")
with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
    ryzq.quantize_model(sys.argv[1], sys.argv[2], layout="t1", executor=pool)
"""


def test_workers_forked_from_a_process_that_ran_the_kernels_do_not_hang(tmp_path):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    dst = tmp_path / "out"
    # In a process of its own, so that a hang is a timeout here rather than a stuck run.
    subprocess.run([sys.executable, "-c", FORKED_POOL, str(src), str(dst)], check=True, timeout=120)
    one = tmp_path / "one"
    ryzq.quantize_model(src, one, layout="t1")
    assert files_of(dst) == files_of(one)


def test_a_part_lists_the_files_its_plan_reads(tmp_path):
    """An autobitlinear bias is stored divided by its weight's scale: the part holding the
    bias reads the weight's file too, and waits for it, and a rerun checks it."""
    from ryzq import _ryzq

    src = tmp_path / "src"
    make_folder(src, SHARDS)
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    bias = "model.layers.0.mlp.down_proj.bias"
    weight_file, bias_file = index["model.layers.0.mlp.down_proj.weight"], index[bias]
    assert weight_file != bias_file
    request = _ryzq.QuantizeRequest(layout="bitnet", linear_class="autobitlinear")
    parts, _, _ = _ryzq.plan_parts(str(src), str(tmp_path / "out"), request=request)
    sources = {p["name"]: {Path(s).name for s in p["sources"]} for p in parts}
    assert sources[bias_file] == {bias_file, weight_file}
    plain = _ryzq.QuantizeRequest(layout="t1")
    parts, _, _ = _ryzq.plan_parts(str(src), str(tmp_path / "out2"), request=plain)
    assert all({Path(s).name for s in p["sources"]} == {p["name"]} for p in parts)


def test_a_changed_config_redoes_every_part(tmp_path):
    src = tmp_path / "src"
    make_folder(src, SHARDS)
    break_shard(src / BROKEN)
    dst = tmp_path / "out"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with pytest.raises(ryzq.RyzqError):
            ryzq.quantize_model(src, dst, layout="t1", executor=pool)
        make_folder(tmp_path / "clean", SHARDS)
        shutil.copy(tmp_path / "clean" / BROKEN, src / BROKEN)
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
        report = ryzq.quantize_model(src, dst, layout="t1", executor=pool)
    assert not any("earlier run" in w for w in report.warnings)
    assert_same_as_one_process(src, dst, report, tmp_path, layout="t1")
