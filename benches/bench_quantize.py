"""Throughput of ryzq's kernels beside their peers and two memory floors, all on the same
arrays in the same process. Prints a table and, with --json, writes the figures.

    python benches/bench_quantize.py [--rows 4096 --cols 4096 --repeat 5 --json out.json]

Figures are Mparam/s (millions of weights per second), the median of --repeat runs. ryzq rows
run on ONE thread unless they say otherwise. Peers run when installed: transformers (torch),
and gguf-py (`pip install gguf`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np

import ryzq
from machine import describe


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up: page faults, thread pools, caches
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


def transformers_peer() -> Callable[[np.ndarray], object] | None:
    """transformers' WeightQuant math and pack_weights, in eager torch."""
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    try:
        import torch
        from transformers.integrations.bitnet import pack_weights
    except ImportError:
        return None

    def run(w: np.ndarray) -> object:
        t = torch.from_numpy(w)
        scale = 1.0 / t.abs().mean().clamp_(min=1e-5)
        return pack_weights((t * scale).round().clamp(-1, 1))

    return run


def gguf_peer(kind: str) -> Callable[[np.ndarray], object] | None:
    try:
        from gguf import GGMLQuantizationType, quants
    except ImportError:
        return None
    qtype = getattr(GGMLQuantizationType, kind)
    return lambda w: quants.quantize(w, qtype)


# The optimal quantizer's goals are rates on a machine whose `W.sum()` floor was this; elsewhere
# they scale with the floor.
OPTIMAL_GOALS_FLOOR = 6512
OPTIMAL_GOALS = {"tensor": 500, "row": 2000, "group:128": 1500}


def kernel_goals(
    rate: dict[str, float], best: str, thread_gain: float, floor_thread_gain: float
) -> list[dict]:
    """Each speed goal of the kernels as a ratio to this run's floors: absmean per tensor reads
    the weights twice (its scale, then its codes), so its floor is half the one-read rate; the
    others read them once."""
    one_read = rate["floor: W.sum() (one read)"]
    goals = []

    def goal(name: str, measured: float, target: float) -> None:
        goals.append(
            {"goal": name, "measured": measured, "target": target, "holds": measured >= target}
        )

    for dtype in ("float32", "bfloat16", "float16"):
        worst = min(
            rate[f"ryzq.quantize {layout}, {dtype}, {best}"]
            for layout in ("bitnet", "i2", "t1", "i2_s")
        )
        goal(
            f"absmean per tensor, {dtype}, slowest of bitnet/i2/t1/i2_s / (W.sum() / 2)",
            worst / (one_read / 2),
            0.85,
        )
    for granularity in ("row", "group:128"):
        measured = rate[f"ryzq.quantize i2 absmean, {granularity}, float32, {best}"]
        goal(f"absmean per {granularity} / W.sum()", measured / one_read, 0.75)
    for layout in ("tq2_0", "tq1_0"):
        absmax = rate[f"ryzq.quantize {layout} absmax (gguf-py's bytes), float32, {best}"]
        absmean = rate[f"ryzq.quantize {layout} absmean, group:256, float32, {best}"]
        goal(f"{layout} absmax in blocks / W.sum()", absmax / one_read, 0.75)
        goal(f"{layout} absmean in blocks / W.sum()", absmean / one_read, 0.75)
    for granularity, target in OPTIMAL_GOALS.items():
        measured = rate[f"ryzq.quantize i2 optimal, {granularity}, float32, {best}"]
        goal(
            f"optimal per {granularity}, Mparam/s over {target} x W.sum() / {OPTIMAL_GOALS_FLOOR}",
            measured / (target * one_read / OPTIMAL_GOALS_FLOOR),
            1.0,
        )
    if "avx2" in ryzq.simd_levels() and best == "avx512":
        worst = min(
            rate[f"ryzq.quantize {layout}, float32, avx2"]
            / rate[f"ryzq.quantize {layout}, float32, avx512"]
            for layout in ryzq.LAYOUTS
        )
        goal("avx2 / avx512, slowest layout (within 1.5x: at least 0.67)", worst, 1 / 1.5)
    goal("two threads' gain / the memory's own", thread_gain / floor_thread_gain, 0.9)
    return goals


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
    rows: list[tuple[str, float]] = []

    def measure(name: str, fn: Callable[[], object], count: int = n) -> float:
        rate = count / median_seconds(fn, args.repeat) / 1e6
        rows.append((name, rate))
        return rate

    measure("floor: W.sum() (one read)", lambda: w.sum())
    copyto = measure("floor: np.copyto (one read, one write)", lambda: np.copyto(scratch, w))
    numpy_rate = measure("numpy: absmean + 2-bit pack", lambda: numpy_absmean_i2(w))
    peer = transformers_peer()
    if peer:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        measure(
            f"transformers WeightQuant + pack_weights ({torch.get_num_threads()} threads)",
            lambda: peer(w),
        )
    gguf_rates = {}
    for kind in ("TQ2_0", "TQ1_0"):
        g = gguf_peer(kind)
        if g:
            gguf_rates[kind] = measure(f"gguf-py quants.quantize {kind}", lambda g=g: g(w))

    best = ryzq.simd_level()
    for level in ryzq.simd_levels():
        for layout in ryzq.LAYOUTS:
            measure(
                f"ryzq.quantize {layout}, float32, {level}",
                lambda layout=layout, level=level: ryzq.quantize(
                    w, layout=layout, simd=level, threads=1
                ),
            )
    for dtype, arr in (
        ("bfloat16", w.astype(ml_dtypes.bfloat16)),
        ("float16", w.astype(np.float16)),
    ):
        for layout in ryzq.LAYOUTS:
            measure(
                f"ryzq.quantize {layout}, {dtype}, {best}",
                lambda arr=arr, layout=layout: ryzq.quantize(arr, layout=layout, threads=1),
            )
    # ryzq against gguf-py on the same work: the same bytes from the same array. gguf-py has
    # no Q2_0: q2_0's absmax bytes are those of ggml's C quantizer, which has no Python peer.
    against_gguf = {}
    for layout in ("tq2_0", "tq1_0", "q2_0"):
        whose = "ggml's" if layout == "q2_0" else "gguf-py's"
        rate = measure(
            f"ryzq.quantize {layout} absmax ({whose} bytes), float32, {best}",
            lambda layout=layout: ryzq.quantize(w, layout=layout, method="absmax", threads=1),
        )
        if layout.upper() in gguf_rates:
            against_gguf[layout] = rate / gguf_rates[layout.upper()]
    for layout, granularity in (("i2", "row"), ("i2", "group:128"), ("tq2_0", "group:256")):
        measure(
            f"ryzq.quantize {layout} absmean, {granularity}, float32, {best}",
            lambda layout=layout, g=granularity: ryzq.quantize(
                w, layout=layout, granularity=g, threads=1
            ),
        )
    measure(
        f"ryzq.quantize tq1_0 absmean, group:256, float32, {best}",
        lambda: ryzq.quantize(w, layout="tq1_0", granularity="group:256", threads=1),
    )
    for granularity in ("tensor", "row", "group:128"):
        measure(
            f"ryzq.quantize i2 optimal, {granularity}, float32, {best}",
            lambda g=granularity: ryzq.quantize(w, method="optimal", granularity=g, threads=1),
        )
    for layout in ryzq.LAYOUTS:
        t = ryzq.quantize(w, layout=layout)
        measure(
            f"ryzq dequantize {layout} -> float32 into out=, {best}",
            lambda t=t: t.dequantize(out=scratch, threads=1),
        )
    t = ryzq.quantize(w, layout="i2")
    measure(f"ryzq dequantize i2 -> new float32 array, {best}", lambda: t.dequantize(threads=1))

    wide = (rng.standard_normal((4096, 16384)) * 0.02).astype(np.float32)
    threads = os.cpu_count() or 1
    single = measure(
        "ryzq.quantize i2, 4096 x 16384, 1 thread",
        lambda: ryzq.quantize(wide, threads=1),
        wide.size,
    )
    multi = measure(
        f"ryzq.quantize i2, 4096 x 16384, {threads} threads",
        lambda: ryzq.quantize(wide, threads=threads),
        wide.size,
    )
    # What the memory gives more threads: each thread sums its own part of the matrix.
    parts = np.array_split(wide.reshape(-1), threads)
    with ThreadPoolExecutor(threads) as pool:
        read_one = measure("floor: 4096 x 16384 .sum(), 1 thread", lambda: wide.sum(), wide.size)
        read_all = measure(
            f"floor: 4096 x 16384 .sum(), {threads} threads",
            lambda: list(pool.map(np.sum, parts)),
            wide.size,
        )

    width = max(len(name) for name, _ in rows)
    print(describe())
    print(f"{args.rows} x {args.cols} float32 = {n / 1e6:.1f} Mparam; median of {args.repeat}")
    print(f"{'what':<{width}}  {'Mparam/s':>9}  {'x numpy':>7}  {'/ copyto':>8}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>9,.0f}  {rate / numpy_rate:>7.2f}  {rate / copyto:>8.2f}")
    print(
        f"threads: ryzq {threads} threads / 1 thread = {multi / single:.2f}x; "
        f"the memory's own read floor: {read_all / read_one:.2f}x"
    )
    goals = kernel_goals(dict(rows), best, multi / single, read_all / read_one)
    print("goals (ratios to the floors of this run):")
    for goal in goals:
        mark = "holds" if goal["holds"] else "MISSED"
        print(f"  {goal['goal']}: {goal['measured']:.2f} (goal {goal['target']:.2f}) {mark}")
    if against_gguf:
        print(
            "absmax, ryzq / gguf-py (one thread each): "
            + ", ".join(f"{layout} {ratio:.1f}x" for layout, ratio in against_gguf.items())
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "shape": [args.rows, args.cols],
                    "repeat": args.repeat,
                    "cpu_count": os.cpu_count(),
                    "simd_level": best,
                    "mparam_per_s": dict(rows),
                    "thread_speedup": multi / single,
                    "absmax_over_gguf_py": against_gguf,
                    "read_floor_thread_speedup": read_all / read_one,
                    "goals": goals,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
