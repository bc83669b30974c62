"""Throughput of ryzq.quantize and dequantize beside plain numpy and memory floors, all on the
same arrays in the same process. Prints a table and, with --json, writes the figures.

    python benches/bench_quantize.py [--rows 4096 --cols 4096 --repeat 5 --json out.json]

Figures are Mparam/s (millions of weights per second), the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import ml_dtypes
import numpy as np

import ryzq


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up: page faults, thread pool start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_absmean_i2(w: np.ndarray) -> np.ndarray:
    """The plain numpy way: BitNet absmean, then 4 codes per byte."""
    inv = np.float32(1.0) / max(np.abs(w).mean(dtype=np.float32), np.float32(1e-5))
    q = np.clip(np.round(w * inv), -1, 1).astype(np.int8)
    c = (q + 1).astype(np.uint8).reshape(-1, 4)
    return c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float32)
    n = w.size
    scratch = np.empty_like(w)
    inputs = {
        "float32": w,
        "bfloat16": w.astype(ml_dtypes.bfloat16),
        "float16": w.astype(np.float16),
    }
    rows: list[tuple[str, float]] = []

    def measure(name: str, fn: Callable[[], object]) -> float:
        rate = n / median_seconds(fn, args.repeat) / 1e6
        rows.append((name, rate))
        return rate

    floor_read = measure("floor: W.sum() (one read)", lambda: w.sum())
    floor_copy = measure("floor: np.copyto (one read, one write)", lambda: np.copyto(scratch, w))
    numpy_rate = measure("numpy: absmean + 2-bit pack", lambda: numpy_absmean_i2(w))
    for level in ryzq.simd_levels():
        for layout in ryzq.LAYOUTS:
            measure(
                f"ryzq.quantize {layout}, float32, {level}",
                lambda layout=layout, level=level: ryzq.quantize(w, layout=layout, simd=level),
            )
    best = ryzq.simd_level()
    for dtype, arr in inputs.items():
        if dtype != "float32":
            measure(f"ryzq.quantize i2, {dtype}, {best}", lambda arr=arr: ryzq.quantize(arr))
    for layout in ryzq.LAYOUTS:
        t = ryzq.quantize(w, layout=layout)
        measure(f"ryzq dequantize {layout} -> float32, {best}", lambda t=t: t.dequantize())

    width = max(len(name) for name, _ in rows)
    print(
        f"{args.rows} x {args.cols} float32 = {n / 1e6:.1f} Mparam; median of {args.repeat}; "
        f"{os.cpu_count()} CPUs; RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '')}"
    )
    print(f"{'what':<{width}}  {'Mparam/s':>9}  {'x numpy':>7}  {'/ copyto':>8}")
    for name, rate in rows:
        print(
            f"{name:<{width}}  {rate:>9,.0f}  {rate / numpy_rate:>7.2f}  {rate / floor_copy:>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "shape": [args.rows, args.cols],
                    "repeat": args.repeat,
                    "cpu_count": os.cpu_count(),
                    "machine": platform.machine(),
                    "simd_level": best,
                    "mparam_per_s": dict(rows),
                    "floors": {"sum": floor_read, "copyto": floor_copy},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
