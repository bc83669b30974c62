"""The ryzq command."""

import subprocess
import sys

import ryzq


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ryzq", *args], capture_output=True, text=True, check=False
    )


def test_demo_reports_every_layout_and_exact_round_trips():
    result = run("demo", "--rows", "64", "--cols", "96")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for layout in ryzq.LAYOUTS:
        rows = [line for line in lines if line.strip().startswith(layout + " ")]
        assert len(rows) == 2, result.stdout  # one per synthetic matrix
        assert all(row.rstrip().endswith("yes") for row in rows)
    assert ryzq.simd_level() in result.stdout


def test_bad_input_exits_2_with_one_clear_line():
    result = run("demo", "--rows", "6", "--cols", "8")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "multiple of 4" in result.stderr and result.stderr.startswith("ryzq: error:")


def test_info_and_version():
    info = run("info")
    assert info.returncode == 0 and ryzq.simd_level() in info.stdout
    version = run("--version")
    assert version.returncode == 0 and ryzq.__version__ in version.stdout
