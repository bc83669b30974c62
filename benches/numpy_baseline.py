"""The plain way, for comparison: read each tensor with safetensors, BitNet absmean in numpy,
pack 4 codes per byte along dim 0 (transformers' layout), gather everything, save_file.

    python benches/numpy_baseline.py SRC DST
"""

import sys

import ml_dtypes  # noqa: F401  (lets safetensors read bfloat16 into numpy)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def absmean_pack(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = w.astype(np.float32)
    inv = np.float32(1.0) / max(np.abs(x).mean(dtype=np.float32), np.float32(1e-5))
    c = (np.clip(np.round(x * inv), -1, 1) + 1).astype(np.uint8)
    r = c.shape[0] // 4
    packed = c[:r] | (c[r : 2 * r] << 2) | (c[2 * r : 3 * r] << 4) | (c[3 * r :] << 6)
    return packed, np.array([inv], dtype=w.dtype)


def main(src: str, dst: str) -> None:
    out = {}
    with safe_open(src, framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            w = f.get_tensor(name)
            quantize = (
                w.ndim == 2
                and name.endswith(".weight")
                and "embed" not in name
                and "norm" not in name
                and "lm_head" not in name
                and w.shape[0] % 4 == 0
            )
            if quantize:
                out[name], out[name[: -len("weight")] + "weight_scale"] = absmean_pack(w)
            else:
                out[name] = w
    save_file(out, dst, metadata={"format": "pt"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
