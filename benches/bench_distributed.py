"""A sharded model across processes, and from a Hub: `ryzq quantize` in one process against
`--workers N` (a local Dask cluster of N processes), and `hf://` from a Hub server on 127.0.0.1
against the same files read locally.

    python benches/bench_distributed.py [--layers 24] [--shards 8] [--dtype bfloat16]
                                        [--workers 2] [--layout t1] [--repeat 3]
                                        [--workdir /tmp/ryzq-bench-distributed] [--keep]
                                        [--json out.json]

The model is `ryzq synth`'s (218 tensors, 1.742e9 parameters at 24 layers: 3.5 GB in bfloat16,
6.97 GB in float32) in a Llama folder of `--shards` shards with an index, written by this
script. Every command runs under /usr/bin/time from a warm page cache, in alternation,
`--repeat` times; medians are compared. `cat` of the shards is the read floor. The outputs of
every run are compared with the first one-process run, file by file. The Hub runs download
into a fresh cache each time (tests/hub_server.py serves the folder the way the Hub serves
downloads), so they measure download and conversion together. The work folder is removed at
the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench_file import timed
from machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hub_server import HubServer, Repository
from ryzq._ryzq import SafetensorsFileWriter
from ryzq.array import DTYPES, _dtype_name
from ryzq.synthetic import model_tensors, synthetic_tensor

REPO = "bench/sharded"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8640,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


# What `ryzq quantize hf://` downloads, downloaded alone by huggingface_hub.
DOWNLOAD = """
import sys
from ryzq.hub import fetch
fetch("hf://" + sys.argv[1])
"""
# What `--workers N` starts and stops besides the conversion.
CLUSTER = """
import sys
from ryzq.distributed import dask_executor
if __name__ == "__main__":
    with dask_executor(workers=int(sys.argv[1])):
        pass
"""


def sharded_model(folder: Path, layers: int, shards: int, dtype: str) -> int:
    """Writes the synthetic model as `shards` shards of whole layers, with an index and a
    config; returns its bytes."""
    folder.mkdir(parents=True)
    tensors = model_tensors(layers, CONFIG["hidden_size"], CONFIG["intermediate_size"], 32000)
    np_dtype = DTYPES[_dtype_name(dtype)]
    layer_of = [
        int(name.split(".")[2]) if name.startswith("model.layers.") else None for name, _ in tensors
    ]
    groups: list[list[int]] = [[] for _ in range(shards)]
    for i, layer in enumerate(layer_of):
        if layer is None:
            groups[0 if "embed" in tensors[i][0] else shards - 1].append(i)
        else:
            groups[min(layer * shards // layers, shards - 1)].append(i)
    rng = np.random.default_rng(0)
    weight_map = {}
    total = 0
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        writer = SafetensorsFileWriter(
            str(folder / name),
            [(tensors[i][0], dtype, list(tensors[i][1])) for i in group],
            {"format": "pt"},
        )
        for i in group:
            t, shape = tensors[i]
            w = synthetic_tensor(rng, t, shape)
            writer.write(t, np.ascontiguousarray(w.astype(np_dtype)).reshape(-1).view(np.uint8))
            weight_map[t] = name
        writer.finish()
        total += (folder / name).stat().st_size
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = dict(CONFIG, num_hidden_layers=layers, torch_dtype=dtype)
    (folder / "config.json").write_text(json.dumps(config))
    return total


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".safetensors", ".json"))
    return names == sorted(
        p.name for p in b.iterdir() if p.suffix in (".safetensors", ".json")
    ) and all(
        subprocess.run(["cmp", "-s", a / n, b / n], check=False).returncode == 0 for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ryzq-bench-distributed")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layout", default="t1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(args.workdir)
    model = work / "model"
    print(describe())
    if not model.exists():
        nbytes = sharded_model(model, args.layers, args.shards, args.dtype)
    else:
        nbytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    shard_paths = sorted(str(p) for p in model.glob("*.safetensors"))
    print(f"model: {model}, {args.shards} shards, {nbytes / 1e9:.2f} GB ({args.dtype})")
    ryzq = [sys.executable, "-m", "ryzq", "quantize"]
    opts = ["--layout", args.layout, "--quiet", "--no-model-card"]
    runs: dict[str, list[dict[str, float]]] = {}
    reference = work / "out-one"

    def fresh(path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)
        return path

    with HubServer({REPO: Repository(REPO, COMMIT, model)}) as hub:
        for r in range(args.repeat):
            subprocess.run(["cat", *shard_paths], stdout=subprocess.DEVNULL, check=True)
            runs.setdefault("cat (floor)", []).append(
                timed(["sh", "-c", 'cat "$@" > /dev/null', "cat", *shard_paths], "cat")
            )
            out = fresh(reference if r == 0 else work / "out")
            runs.setdefault("one process", []).append(
                timed([*ryzq, str(model), str(out), *opts], "one process")
            )
            if r > 0 and not same_files(out, reference):
                raise SystemExit("one-process runs differ")
            out = fresh(work / "out-workers")
            workers = f"--workers {args.workers}"
            runs.setdefault(workers, []).append(
                timed([*ryzq, str(model), str(out), *opts, "--workers", str(args.workers)], workers)
            )
            if not same_files(out, reference):
                raise SystemExit("--workers gave other bytes than one process")
            cache = Path(tempfile.mkdtemp(dir=work, prefix="hub-cache-"))
            env = dict(
                os.environ, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_XET="1"
            )
            out = fresh(work / "out-hub")
            runs.setdefault("hf:// from 127.0.0.1", []).append(
                timed([*ryzq, f"hf://{REPO}", str(out), *opts], "hub", env=env)
            )
            if not same_files(out, reference):
                raise SystemExit("the Hub path gave other bytes than the local folder")
            shutil.rmtree(cache)
            cache = Path(tempfile.mkdtemp(dir=work, prefix="hub-cache-"))
            env["HF_HUB_CACHE"] = str(cache)
            runs.setdefault("  of which the download", []).append(
                timed([sys.executable, "-c", DOWNLOAD, REPO], "download", env=env)
            )
            shutil.rmtree(cache)
            runs.setdefault(f"  a Dask cluster of {args.workers}, up and down", []).append(
                timed([sys.executable, "-c", CLUSTER, str(args.workers)], "cluster")
            )
    medians = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    peaks = {k: max(r["peak_rss_mib"] for r in v) for k, v in runs.items()}
    floor = medians["cat (floor)"]
    print(f"medians of {args.repeat} runs of each, in alternation, warm page cache")
    print(f"{'what':28} {'seconds':>8} {'GB/s':>7} {'x cat':>6} {'peak RSS MiB':>13}")
    for k, s in medians.items():
        print(f"{k:28} {s:8.2f} {nbytes / s / 1e9:7.2f} {s / floor:6.2f} {peaks[k]:13.0f}")
    one = medians["one process"]
    cluster = medians[f"  a Dask cluster of {args.workers}, up and down"]
    print(
        f"--workers {args.workers} / one process: {medians[workers] / one:.2f}x the time "
        f"({(medians[workers] - cluster) / one:.2f}x without the cluster's start and stop)"
    )
    print(f"hf:// / local folder: {medians['hf:// from 127.0.0.1'] / one:.2f}x the time")
    print("every output identical to the first one-process run")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": medians, "peaks": peaks}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
