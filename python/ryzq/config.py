"""A model folder's ``config.json``: whether it is a BitNet model, and the
``quantization_config`` ryzq writes into it."""

from __future__ import annotations

from typing import Any

#: The architectures (``config.json`` ``architectures``) of models trained the BitNet b1.58 way.
BITNET_ARCHITECTURES = ("BitNetForCausalLM", "BitnetForCausalLM")

#: The module transformers keeps unconverted by default, and must be told to keep whenever
#: ``modules_to_not_convert`` is given: with tied embeddings it has no weight of its own in the
#: checkpoint, and converting it breaks loading.
OUTPUT_HEAD = "lm_head"


class RyzqWarning(UserWarning):
    """A conversion that works but is likely not what the model needs."""


def is_bitnet(config: dict[str, Any]) -> bool:
    """Whether ``config`` describes a model trained the BitNet b1.58 way: ``model_type``
    bitnet, a bitnet ``quantization_config``, or a known BitNet architecture."""
    quantization = config.get("quantization_config")
    architectures = config.get("architectures") or []
    return (
        str(config.get("model_type", "")).lower() == "bitnet"
        or (isinstance(quantization, dict) and quantization.get("quant_method") == "bitnet")
        or any(a in BITNET_ARCHITECTURES for a in architectures if isinstance(a, str))
    )


def granularity_warning(config: dict[str, Any], method: str, granularity: str) -> str | None:
    """What to tell a user who quantizes a BitNet model with absmean at another granularity
    than the one it was trained with, if that is what they asked for."""
    if method != "absmean" or granularity == "tensor" or not is_bitnet(config):
        return None
    return (
        f"this is a BitNet model, which computes with one absmean scale per weight matrix; "
        f"absmean per {granularity} gives other codes than the model was trained with, and its "
        f"lower weight error does not make a better model (leave --granularity at its default, "
        f"tensor, to reproduce the trained model)"
    )


def quantization_config(
    kept_weights: list[str],
    quantized_weights: list[str],
    layout: str,
    method: str,
    granularity: str,
    linear_class: str,
) -> dict[str, Any]:
    """The ``quantization_config`` of the converted model. ``kept_weights`` and
    ``quantized_weights`` are the names of its 2-D ``*.weight`` tensors kept as they are and
    quantized."""
    keep = {name.removesuffix(".weight") for name in kept_weights}
    if not any(name.removesuffix(".weight") == OUTPUT_HEAD for name in quantized_weights):
        keep.add(OUTPUT_HEAD)
    if layout == "bitnet":
        return {
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": "offline",
            "modules_to_not_convert": sorted(keep),
        }
    # The other layouts (i2, t1 and GGUF's blocks in safetensors) are for ryzq, whose
    # dequantize_file reads each file's own metadata; transformers cannot load them.
    return {
        "quant_method": "ryzq",
        "layout": layout,
        "method": method,
        "granularity": granularity,
        "modules_to_not_convert": sorted(keep),
    }
