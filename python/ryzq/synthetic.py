"""Synthetic weights shaped like those of models trained the BitNet b1.58 way."""

from __future__ import annotations

import numpy as np


def bitnet_master_weights(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float = 0.02, noise: float = 0.05
) -> np.ndarray:
    """Float32 master weights of a BitNet-trained linear layer: ternary codes (about a third
    zeros) times a scale, plus small noise relative to that scale."""
    codes = rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=shape, p=[0.33, 0.34, 0.33])
    jitter = rng.standard_normal(shape).astype(np.float32) * np.float32(noise * scale)
    return codes * np.float32(scale) + jitter
