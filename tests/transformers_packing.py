"""helpers: a master-weight model folder packed as transformers publishes packed BitNet
checkpoints, by transformers' own WeightQuant math and pack_weights. For the real-client tests
only: it imports torch and transformers, which they check for first."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers.integrations.bitnet import pack_weights


def pack_weights_file(master: Path, dst: Path, linear_class: str) -> None:
    """``dst/model.safetensors``: the master's tensors, its ``*_proj.weight`` ternarized per
    tensor (absmean, as transformers' WeightQuant) and packed by pack_weights, each beside a
    ``weight_scale`` in the weight's dtype: 1/absmean for BitLinear (which divides by it),
    absmean for AutoBitLinear (which multiplies)."""
    state = {}
    for name, w in load_file(master / "model.safetensors").items():
        if not name.endswith("_proj.weight"):
            state[name] = w
            continue
        inv = 1.0 / w.float().abs().mean().clamp(min=1e-5)
        state[name] = pack_weights((w.float() * inv).round().clamp(-1, 1))
        weight_scale = inv if linear_class == "bitlinear" else 1.0 / inv
        state[name.removesuffix("weight") + "weight_scale"] = weight_scale.reshape(1).to(w.dtype)
    dst.mkdir(exist_ok=True)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


def write_packed_config(master: Path, dst: Path, linear_class: str) -> None:
    """``dst/config.json``: the master's, with the offline bitnet quantization_config of
    ``linear_class``."""
    config = json.loads((master / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": linear_class,
        "quantization_mode": "offline",
    }
    (dst / "config.json").write_text(json.dumps(config))
