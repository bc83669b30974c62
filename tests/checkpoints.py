"""Small checkpoints for the file tests, written by the safetensors package itself."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}


def tiny_model(dtype: str = "BF16", layers: int = 2, hidden: int = 32, seed: int = 0):
    """A Llama-style state dict with linear weights, norms, an embedding and a head."""
    rng = np.random.default_rng(seed)
    dt = DTYPES[dtype]
    t = {"model.embed_tokens.weight": rng.standard_normal((64, hidden)) * 0.02}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rng.standard_normal(hidden) * 0.1
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{name}.weight"] = rng.standard_normal((hidden, hidden)) * 0.02
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((2 * hidden, hidden)) * 0.02
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((2 * hidden, hidden)) * 0.02
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, 2 * hidden)) * 0.02
        t[p + "mlp.down_proj.bias"] = rng.standard_normal(hidden) * 0.01
    t["model.norm.weight"] = np.ones(hidden)
    t["lm_head.weight"] = rng.standard_normal((64, hidden)) * 0.02
    state = {k: np.asarray(v).astype(dt) for k, v in t.items()}
    state["model.position_ids"] = np.arange(16, dtype=np.int64)
    return state


def write(path: Path, state: dict, metadata: dict | None = None) -> Path:
    save_file(state, str(path), metadata=metadata or {"format": "pt"})
    return path


def make_folder(root: Path, shards: int) -> dict:
    """A BitNet model folder: config, tokenizer, an extra file, and the weights of
    ``tiny_model("BF16", layers=3)`` in one file or ``shards`` shards with an index."""
    root.mkdir()
    state = tiny_model("BF16", layers=3)
    (root / "config.json").write_text(json.dumps({"model_type": "bitnet", "hidden_size": 32}))
    (root / "tokenizer.json").write_text('{"tokenizer": true}')
    (root / "extra").mkdir()
    (root / "extra" / "notes.txt").write_text("kept")
    if shards == 1:
        write(root / "model.safetensors", state)
        return state
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        write(root / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": 123}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return state


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def raw_file(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> Path:
    """A safetensors-like file from a header (JSON-encoded here unless bytes) and data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if length is None else length
    Path(path).write_bytes(struct.pack("<Q", n) + h + data)
    return path


def lay_out_hub_cache(cache: Path, repo: str, folder: Path, commit: str) -> Path:
    """``folder``'s files as huggingface_hub caches a repository at ``commit``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot
