"""End to end: `ryzq quantize` on a checkpoint against `cat` and the plain numpy script, with
wall time and peak RSS of each (measured by /usr/bin/time). Warm page cache: every command
reads the file once before it is timed. The I/O floor, `cat` of the source then writing and
fsyncing a file of the output's size, runs in alternation with ryzq; the goal is ryzq at most
0.9x of it (its reading, computing and writing overlapped).

    python benches/bench_file.py [--src model.safetensors] [--dtype F32] [--json out.json]
                                 [--baseline OTHER/python] [--repeat 5]

Without --src, a checkpoint is made with `ryzq synth` (the default: 218 tensors,
1.742e9 parameters, 6.97 GB in float32) in --workdir. With --baseline (the `python/` folder of
another build of ryzq, such as an older commit built with `maturin develop --release` in its
own worktree), both run the same command in alternation and the medians are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from machine import describe

HERE = Path(__file__).parent


def timed(cmd: list[str], label: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Runs `cmd` under /usr/bin/time; returns wall seconds and peak RSS in MiB. Dirty pages
    of earlier runs are flushed first, so that no run pays for another's writeback."""
    os.sync()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(f"{label} failed:\n{result.stderr}")
    wall, rss_kib = result.stderr.strip().splitlines()[-1].split()
    return {"seconds": float(wall), "peak_rss_mib": int(rss_kib) / 1024}


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", help="checkpoint to quantize (default: make one)")
    parser.add_argument("--workdir", default="/tmp/ryzq-bench")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--skip-numpy", action="store_true", help="skip the numpy script")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--baseline", help="the python/ folder of another ryzq build to compare")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each ryzq command")
    args = parser.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ryzq_cmd = [sys.executable, "-m", "ryzq"]
    suffix = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[args.dtype]
    src = Path(args.src) if args.src else work / f"synth-{suffix}.safetensors"
    if not src.exists():
        subprocess.run([*ryzq_cmd, "synth", str(src), "--dtype", args.dtype, "--quiet"], check=True)
    size = src.stat().st_size
    timed(["cat", str(src)], "warm-up")

    rows = {"cat": timed(["sh", "-c", f"cat '{src}' > /dev/null"], "cat")}
    out = work / "out.safetensors"
    quantize = [*ryzq_cmd, "quantize", str(src), str(out), "--quiet"]
    runs: dict[str, list[dict[str, float]]] = {"ryzq quantize": []}
    if args.baseline:
        runs["baseline ryzq quantize"] = []
        baseline_env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
    # The I/O alone, one after the other: reading the source, then writing and syncing a file
    # of the output's size (ryzq syncs its output before renaming it into place). Measured in
    # alternation with ryzq, once the output's size is known.
    runs["floor: cat, then write and fsync"] = []
    floor_file = work / "floor.bin"
    for _ in range(args.repeat):
        runs["ryzq quantize"].append(timed(quantize, "ryzq"))
        if args.baseline:
            runs["baseline ryzq quantize"].append(timed(quantize, "baseline", baseline_env))
        floor = (
            f"cat '{src}' > /dev/null && head -c {out.stat().st_size} /dev/zero > "
            f"'{floor_file}' && sync '{floor_file}'"
        )
        runs["floor: cat, then write and fsync"].append(timed(["sh", "-c", floor], "floor"))
    floor_file.unlink(missing_ok=True)
    for name, results in runs.items():
        rows[name] = {
            "seconds": statistics.median(r["seconds"] for r in results),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "all_seconds": [r["seconds"] for r in results],
        }
    one = work / "out-1thread.safetensors"
    rows["ryzq quantize --threads 1"] = timed(
        [*ryzq_cmd, "quantize", str(src), str(one), "--quiet", "--threads", "1"], "ryzq"
    )
    identical = digest(out) == digest(one)
    if not args.skip_numpy:
        rows["numpy script"] = timed(
            [
                sys.executable,
                str(HERE / "numpy_baseline.py"),
                str(src),
                str(work / "out-numpy.safetensors"),
            ],
            "numpy script",
        )

    print(describe())
    print(f"{src}: {size / 1e9:.2f} GB, warm page cache")
    print(f"{'what':<28} {'seconds':>8} {'x cat':>7} {'peak RSS MiB':>13}")
    for name, r in rows.items():
        print(
            f"{name:<28} {r['seconds']:>8.2f} {r['seconds'] / rows['cat']['seconds']:>7.2f} "
            f"{r['peak_rss_mib']:>13,.0f}"
        )
    print(f"output {out.stat().st_size:,} bytes; identical to the 1-thread output: {identical}")
    over_floor = (
        rows["ryzq quantize"]["seconds"] / rows["floor: cat, then write and fsync"]["seconds"]
    )
    print(
        f"ryzq quantize / its I/O one after the other: {over_floor:.2f} "
        f"(the goal: at most 0.90, reading, computing and writing overlapped)"
    )
    if args.baseline:
        ratio = rows["ryzq quantize"]["seconds"] / rows["baseline ryzq quantize"]["seconds"]
        print(f"this build / baseline (median of {args.repeat}): {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "src": str(src),
                    "bytes": size,
                    "cpus": os.cpu_count(),
                    "rows": rows,
                    "output_bytes": out.stat().st_size,
                    "identical_to_one_thread": identical,
                    "over_io_floor": over_floor,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
