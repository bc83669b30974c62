"""Packed sources: `ryzq quantize` on a packed checkpoint against the master weights it came from.

The packed checkpoint is transformers' packed BitNet layout, as `ryzq quantize --layout bitnet
--linear-class autobitlinear` writes it. Both are converted into a TQ2_0 GGUF file and into a
`t1` folder, with wall time and peak RSS of each (/usr/bin/time), and `cat` of each input as
its floor. Warm page cache; the commands run in alternation, --repeat times, and their medians
are compared.

    python benches/bench_packed.py [--layers 24] [--repeat 3] [--layouts tq2_0,t1]
                                   [--workdir /tmp/ryzq-bench-packed] [--keep] [--json out.json]

The model is bench_gguf.py's: `ryzq synth`'s default (218 tensors, 1.742e9 parameters, 6.97 GB
in float32) in a folder with a Llama config.json; its down_proj rows of 8640 values fall back
to q2_0 in the GGUF file. The goal: the packed form, which holds a quarter or less of the
master weights' bytes, converts at least 2x faster. The outputs of both sources are then
compared tensor by tensor (the GGUF files through gguf-py's reader, the `t1` folders through
safetensors): carried codes and scales should give the same bytes as quantizing anew. The
work folder is removed at the end, the model too where this run made it, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

from bench_file import timed
from bench_gguf import model_folder
from machine import describe
from ryzq.array import LAYOUT_INFO

GOAL = 2.0
# Where the float16 scale of a block lies, in the GGUF types a linear weight is written in.
SCALE_AT = {"TQ2_0": 64, "TQ1_0": 52, "Q2_0": 0, "Q8_0": 0}
# GGML type: (name, values per block, bytes per block); gguf-py's, then ryzq's for the rest.
GGML_SIZES: dict[int, tuple[str, int, int]] = {
    **{
        int(info["gguf_type"]): (
            name.upper(),
            info["block"],
            round(info["block"] * info["bits_per_value"] / 8),
        )
        for name, info in LAYOUT_INFO.items()
        if info["gguf_type"] is not None and info["block"]
    },
    **{int(t): (t.name, *sizes) for t, sizes in gguf.GGML_QUANT_SIZES.items()},
}


# layout: (row label, in the summary, output, its options, letters of master and packed)
DESTS = {
    "tq2_0": ("tq2_0 GGUF", "a TQ2_0 GGUF file", "{}.gguf", ["--no-tokenizer"], "ab"),
    "t1": ("t1 folder", "a `t1` folder", "{}-t1", [], "cd"),
}


def label(layout: str, src: str) -> str:
    what, _, _, _, letters = DESTS[layout]
    return f"({letters[src == 'packed']}) {src} -> {what}"


def inputs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def nbytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in inputs(folder))


def fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    return path


class Tensors(gguf.GGUFReader):
    """gguf-py's reader, each tensor kept as its GGML type and bytes: gguf-py (0.19) does not
    know every GGML type ryzq writes (Q2_0, the fallback of rows that are not whole blocks of
    256), so the sizes of the types it lacks come from ryzq's layout registry."""

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        self.named: dict[str, tuple[str, int, np.ndarray]] = {}
        for field in fields:
            _, name, _, dims, raw_type, offset = field.parts
            kind, block, size = GGML_SIZES[int(raw_type[0])]
            start = start_offs + int(offset[0])
            length = int(np.prod(dims)) // block * size
            self.named[bytes(name).decode()] = (kind, size, self.data[start : start + length])


def compare_gguf(a: Path, b: Path) -> dict:
    """The tensors of GGUF file `b` against those of `a`: the linear weights (the packed
    types) and the others, identical or not, and for differing blocks whether only their
    scales differ; the metadata keys whose values differ."""
    ra, rb = Tensors(a), Tensors(b)
    out: dict = {"linear": {}, "other": {"tensors": 0, "identical": 0}, "differing": []}
    for name, (kind, size, data) in ra.named.items():
        other = rb.named.get(name)
        same = other is not None and other[0] == kind and np.array_equal(other[2], data)
        if kind in ("F32", "F16", "BF16"):
            out["other"]["tensors"] += 1
            out["other"]["identical"] += same
            if not same:
                out["differing"].append({"name": name, "type": kind})
            continue
        row = out["linear"].setdefault(kind, {"tensors": 0, "identical": 0})
        row["tensors"] += 1
        row["identical"] += same
        if same:
            continue
        entry: dict = {"name": name, "type": kind}
        if other is not None and other[0] == kind and other[2].size == data.size:
            x, y = data.reshape(-1, size), other[2].reshape(-1, size)
            diff = x != y
            blocks = diff.any(axis=1)
            at = SCALE_AT.get(kind)
            codes = diff.copy()
            if at is not None:
                codes[:, at : at + 2] = False
            entry |= {
                "blocks": int(x.shape[0]),
                "differing_blocks": int(blocks.sum()),
                "differing_code_blocks": int(codes.any(axis=1).sum()),
            }
        out["differing"].append(entry)
    out["missing"] = sorted(set(rb.named) ^ set(ra.named))
    keys = set(ra.fields) | set(rb.fields)
    out["metadata_differs"] = sorted(
        k
        for k in keys
        if not k.startswith("GGUF.")
        and (
            k not in ra.fields
            or k not in rb.fields
            or ra.fields[k].contents() != rb.fields[k].contents()
        )
    )
    return out


def compare_folders(a: Path, b: Path) -> dict:
    """Every tensor of safetensors folder `b` against the same-named one of `a`, by bytes."""

    def where(folder: Path) -> dict[str, Path]:
        names = {}
        for path in inputs(folder):
            with safe_open(path, "np") as f:
                names |= dict.fromkeys(f.keys(), path)
        return names

    in_a, in_b = where(a), where(b)
    identical = 0
    for name in in_a.keys() & in_b.keys():
        with safe_open(in_a[name], "np") as fa, safe_open(in_b[name], "np") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
        identical += x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    return {
        "tensors": len(in_a),
        "identical": identical,
        "missing": sorted(in_a.keys() ^ in_b.keys()),
    }


def gguf_line(c: dict) -> str:
    linear = sum(r["tensors"] for r in c["linear"].values())
    same = sum(r["identical"] for r in c["linear"].values())
    kinds = ", ".join(f"{r['tensors']} {k}" for k, r in c["linear"].items())
    line = (
        f"{same} of {linear} linear weights identical ({kinds}); {c['other']['identical']} of "
        f"{c['other']['tensors']} other tensors identical"
    )
    if c["missing"]:
        line += f"; in one file only: {', '.join(c['missing'])}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ryzq-bench-packed")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command")
    parser.add_argument(
        "--layouts", default="tq2_0,t1", help="the destinations, of tq2_0 (GGUF) and t1"
    )
    parser.add_argument("--keep", action="store_true", help="leave the work folder in place")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    layouts = [x for x in args.layouts.split(",") if x]
    if not layouts or set(layouts) - set(DESTS):
        parser.error("--layouts takes tq2_0, t1 or both")
    work = Path(args.workdir)
    made_model = not (work / "model" / "model.safetensors").exists()
    try:
        bench(args, layouts, work)
    finally:
        if not args.keep:
            clean(work, made_model)


def clean(work: Path, model: bool) -> None:
    """Removes what a run writes in `work`, the model where `model` (this run made it), and
    `work` where nothing else is left in it."""
    fresh(work / "packed")
    for src in ("master", "packed"):
        for layout, (_, _, pattern, _, _) in DESTS.items():
            fresh(work / pattern.format(src))
            fresh(work / f"report-{src}-{layout}.json")
    if model:
        fresh(work / "model")
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()


def bench(args: argparse.Namespace, layouts: list[str], work: Path) -> None:
    master = model_folder(work, args.layers)
    ryzq = [sys.executable, "-m", "ryzq", "quantize"]
    packed = fresh(work / "packed")
    made = timed(
        [*ryzq, str(master), str(packed), "--layout", "bitnet", "--linear-class",
         "autobitlinear", "--quiet"],
        "packing the master weights",
    )  # fmt: skip
    sizes = {"master": nbytes(master), "packed": nbytes(packed)}
    sources = {"master": master, "packed": packed}
    print(describe())
    print(
        f"master weights: {master} ({sizes['master'] / 1e9:.2f} GB); packed form: {packed} "
        f"({sizes['packed'] / 1e9:.3f} GB, {sizes['packed'] / sizes['master']:.3f} of the "
        f"master's bytes; goal: a quarter or less), made in {made['seconds']:.2f} s"
    )
    for folder in sources.values():
        subprocess.run(["cat", *map(str, inputs(folder))], stdout=subprocess.DEVNULL, check=True)

    # label: (command, source, output, report)
    runs: dict[str, tuple[list[str], str, Path | None, Path | None]] = {}
    for src in sources:
        files = " ".join(f"'{p}'" for p in inputs(sources[src]))
        runs[f"cat {src} (floor)"] = (["sh", "-c", f"cat {files} > /dev/null"], src, None, None)
    for layout in layouts:
        _, _, pattern, extra, _ = DESTS[layout]
        for src, folder in sources.items():
            out = work / pattern.format(src)
            report = work / f"report-{src}-{layout}.json"
            cmd = [*ryzq, str(folder), str(out), "--layout", layout, *extra, "--quiet",
                   "--report", str(report)]  # fmt: skip
            runs[label(layout, src)] = (cmd, src, out, report)
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, (cmd, _, out, report) in runs.items():
            if out is not None:
                fresh(out)
            r = timed(cmd, name)
            if report is not None:
                r["phases"] = json.loads(report.read_text())["summary"]["seconds"]
            samples[name].append(r)

    rows: dict[str, dict] = {}
    for name, results in samples.items():
        src = runs[name][1]
        seconds = statistics.median(r["seconds"] for r in results)
        floor = statistics.median(r["seconds"] for r in samples[f"cat {src} (floor)"])
        rows[name] = {
            "source": src,
            "seconds": seconds,
            "all_seconds": [r["seconds"] for r in results],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "gb_per_s": sizes[src] / seconds / 1e9 if seconds else float("inf"),
            "x_cat": seconds / floor if floor else float("inf"),
        }
        if "phases" in results[0]:
            rows[name]["phases"] = {
                k: statistics.median(r["phases"][k] for r in results) for k in results[0]["phases"]
            }
    ratios = {}
    for layout in layouts:
        m = rows[label(layout, "master")]["seconds"]
        p = rows[label(layout, "packed")]["seconds"]
        ratios[layout] = m / p if p else float("inf")
    checks: dict = {}
    if "tq2_0" in layouts:
        checks["tq2_0"] = compare_gguf(work / "master.gguf", work / "packed.gguf")
    if "t1" in layouts:
        checks["t1"] = compare_folders(work / "master-t1", work / "packed-t1")

    runs_of = f"medians of {args.repeat} runs" if args.repeat > 1 else "one run"
    print(f"{runs_of} of each, in alternation, warm page cache; x cat: of its input")
    print(f"{'what':<30} {'seconds':>8} {'GB/s':>7} {'x cat':>7} {'peak RSS MiB':>13}")
    for name, r in rows.items():
        print(
            f"{name:<30} {r['seconds']:>8.2f} {r['gb_per_s']:>7.2f} {r['x_cat']:>7.2f} "
            f"{r['peak_rss_mib']:>13,.0f}"
        )
    print("phases (ryzq's --report, medians, seconds): read / quantize / write / total")
    for name, r in rows.items():
        if "phases" in r:
            ph = r["phases"]
            print(
                f"  {name:<28} {ph['read']:.2f} / {ph['quantize']:.2f} / {ph['write']:.2f} / "
                f"{ph['total']:.2f}"
            )
    for layout in layouts:
        tag = "/".join(DESTS[layout][4])
        holds = "met" if ratios[layout] >= GOAL else "NOT met"
        print(
            f"{DESTS[layout][0]}: master / packed ({tag}) {ratios[layout]:.2f}x; "
            f"goal >= {GOAL:.0f}x: {holds}"
        )
    if "tq2_0" in checks:
        c = checks["tq2_0"]
        print(f"GGUF from packed vs from master: {gguf_line(c)}")
        for d in c["differing"]:
            if "blocks" in d:
                print(
                    f"  {d['name']} ({d['type']}): {d['differing_blocks']:,} of {d['blocks']:,} "
                    f"blocks differ, {d['differing_code_blocks']:,} of them in their codes "
                    "(the others in their float16 scale only)"
                )
            else:
                print(f"  {d['name']}: differs ({d['type']})")
        if c["metadata_differs"]:
            print(f"  metadata differs in: {', '.join(c['metadata_differs'])}")
    if "t1" in checks:
        c = checks["t1"]
        print(
            f"t1 folder from packed vs from master: {c['identical']} of {c['tensors']} tensors "
            f"identical" + (f"; in one only: {', '.join(c['missing'])}" if c["missing"] else "")
        )
    parts = []
    for layout in layouts:
        m, p = rows[label(layout, "master")], rows[label(layout, "packed")]
        holds = "met" if ratios[layout] >= GOAL else "not met"
        parts.append(
            f"to {DESTS[layout][1]} in {p['seconds']:.2f} s ({p['peak_rss_mib']:,.0f} MiB) against "
            f"{m['seconds']:.2f} s ({m['peak_rss_mib']:,.0f} MiB) from the master weights "
            f"({ratios[layout]:.1f}x; goal {GOAL:.0f}x: {holds})"
        )
    model = "seed-size" if args.layers == 24 else f"{args.layers}-layer"
    print(
        f"summary: (`python benches/bench_packed.py`, {runs_of} of each in alternation, "
        f"warm page cache) the {model} model's packed form ({sizes['packed'] / 1e9:.2f} GB, "
        f"{sizes['packed'] / sizes['master']:.2f} of its {sizes['master'] / 1e9:.2f} GB of "
        f"master weights) converts {'; and '.join(parts)}; `cat` of the inputs "
        f"{rows['cat master (floor)']['seconds']:.2f} s and "
        f"{rows['cat packed (floor)']['seconds']:.2f} s."
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": describe(),
                    "bytes": sizes,
                    "packing_seconds": made["seconds"],
                    "repeat": args.repeat,
                    "rows": rows,
                    "master_over_packed": ratios,
                    "goal": GOAL,
                    "goal_met": {k: v >= GOAL for k, v in ratios.items()},
                    "same_output": checks,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
