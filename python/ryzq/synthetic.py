"""Synthetic weights shaped like those of models trained the BitNet b1.58 way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ryzq._ryzq import SafetensorsFileWriter
from ryzq.array import DTYPES, _dtype_name
from ryzq.progress import ProgressBar


def bitnet_master_weights(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float = 0.02, noise: float = 0.05
) -> np.ndarray:
    """Float32 master weights of a BitNet-trained linear layer: ternary codes (a third of them
    zeros) times a scale, plus small noise relative to that scale."""
    codes = rng.integers(-1, 2, size=shape, dtype=np.int8).astype(np.float32)
    jitter = rng.standard_normal(shape, dtype=np.float32)
    jitter *= np.float32(noise * scale)
    jitter += codes * np.float32(scale)
    return jitter


def synthetic_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values for the tensor ``name``: norms near 1, a Gaussian embedding, and linear
    weights that are ternary codes times a scale of their own plus small noise."""
    if name.endswith("norm.weight"):
        return 1.0 + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.05)
    if "embed" in name:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return bitnet_master_weights(rng, shape, scale=rng.uniform(0.01, 0.03))


def model_tensors(
    layers: int, hidden: int, intermediate: int, vocab: int
) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a Llama-style decoder as transformers names them."""
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (hidden, hidden)),
            (p + "self_attn.v_proj.weight", (hidden, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (intermediate, hidden)),
            (p + "mlp.up_proj.weight", (intermediate, hidden)),
            (p + "mlp.down_proj.weight", (hidden, intermediate)),
        ]
    tensors.append(("model.norm.weight", (hidden,)))
    return tensors


def synthesize_checkpoint(
    path,
    *,
    layers: int = 24,
    hidden: int = 2048,
    intermediate: int = 8640,
    vocab: int = 32000,
    dtype: str = "float32",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, int]:
    """Write a synthetic BitNet-style checkpoint to ``path``, one tensor at a time: linear
    weights are ternary codes times a per-tensor scale plus small noise, norms are near 1,
    the embedding is Gaussian. The defaults give the shape of a 1.7B-parameter model: 218
    tensors, 1,742,309,376 parameters. Returns the number of tensors, parameters and bytes."""
    np_dtype = DTYPES[_dtype_name(dtype)]
    tensors = model_tensors(layers, hidden, intermediate, vocab)
    writer = SafetensorsFileWriter(
        str(path), [(n, dtype, list(s)) for n, s in tensors], {"format": "pt"}
    )
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(s)) for _, s in tensors) * np_dtype.itemsize
    bar = ProgressBar(total, label="synth ") if progress else None
    try:
        for i, (name, shape) in enumerate(tensors):
            w = synthetic_tensor(rng, name, shape)
            data = np.ascontiguousarray(w.astype(np_dtype)).reshape(-1).view(np.uint8)
            writer.write(name, data)
            if bar:
                bar(i + 1, len(tensors), data.nbytes)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return {
        "tensors": len(tensors),
        "parameters": sum(int(np.prod(s)) for _, s in tensors),
        "bytes": Path(path).stat().st_size,
    }
