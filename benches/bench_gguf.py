"""GGUF model files: `ryzq quantize FOLDER out.gguf` against the same model written as a
safetensors folder, and against what llama.cpp's converter does (tensors read one at a time,
absmean fake-quantized in numpy, gguf-py's `quants.quantize`, F16 where a row is not a
multiple of 256, `GGUFWriter`), with wall time and peak RSS of each (/usr/bin/time), and
`cat` of the source as the floor. Warm page cache.

    python benches/bench_gguf.py [--layers 24] [--workdir /tmp/ryzq-bench-gguf] [--json out.json]

The model is `ryzq synth`'s default (218 tensors, 1.742e9 parameters, 6.97 GB in float32)
in a folder with a Llama config.json; its down_proj rows of 8640 values fall back to q2_0 in
the GGUF file (and to F16 in the converter's flow, as llama.cpp's converter does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from bench_file import timed
from machine import describe

PEER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import gguf
    from safetensors import safe_open

    src, dst = Path(sys.argv[1]), sys.argv[2]
    config = json.loads((src / "config.json").read_text())
    writer = gguf.GGUFWriter(dst, "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_embedding_length(config["hidden_size"])
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    with safe_open(src / "model.safetensors", "np") as f:
        for name in f.keys():
            w = f.get_tensor(name).astype(np.float32)
            if name == "model.embed_tokens.weight":
                writer.add_tensor("token_embd.weight", w.astype(np.float16))
                continue
            if name == "model.norm.weight":
                writer.add_tensor("output_norm.weight", w)
                continue
            block, rest = name.removeprefix("model.layers.").split(".", 1)
            key = rest.removesuffix(".weight")
            out = f"blk.{block}.{names[key]}.weight"
            if w.ndim == 1:
                writer.add_tensor(out, w)
                continue
            s = max(float(np.abs(w).mean()), 1e-5)
            w = np.clip(np.round(w / s), -1, 1) * s  # BitnetModel.weight_quant
            if w.shape[-1] % 256 == 0:
                q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.TQ2_0)
                writer.add_tensor(out, q, raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
            else:
                writer.add_tensor(out, w.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    """
)


def model_folder(work: Path, layers: int) -> Path:
    """The model as a Llama folder in `work`: `ryzq synth`'s checkpoint (made only where it is
    missing) and its config.json."""
    folder = work / "model"
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "ryzq", "synth", str(folder / "model.safetensors"),
             "--layers", str(layers), "--quiet"],
            check=True,
        )  # fmt: skip
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8640,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "vocab_size": 32000,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ryzq-bench-gguf")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--no-peer", action="store_true", help="skip the converter's flow")
    args = parser.parse_args()
    work = Path(args.workdir)
    folder = model_folder(work, args.layers)
    size = (folder / "model.safetensors").stat().st_size
    print(describe())
    print(f"model: {folder} ({size / 1e9:.2f} GB)")
    subprocess.run(["cat", str(folder / "model.safetensors")], stdout=subprocess.DEVNULL)

    def fresh(path: Path) -> Path:
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        return path

    ryzq = [sys.executable, "-m", "ryzq", "quantize", str(folder)]
    runs = {
        "cat (floor)": ["cat", str(folder / "model.safetensors")],
        "ryzq GGUF tq2_0 (q2_0 fallback)": [
            *ryzq, str(fresh(work / "tq2_0.gguf")), "--layout", "tq2_0", "--no-tokenizer",
            "--quiet",
        ],
        "ryzq GGUF q2_0": [
            *ryzq, str(fresh(work / "q2_0.gguf")), "--layout", "q2_0", "--no-tokenizer",
            "--quiet",
        ],
        "ryzq safetensors folder q2_0": [
            *ryzq, str(fresh(work / "q2_0-folder")), "--layout", "q2_0", "--quiet",
        ],
    }  # fmt: skip
    if not args.no_peer:
        script = work / "peer.py"
        script.write_text(PEER)
        runs["converter flow (numpy + gguf-py)"] = [
            sys.executable, str(script), str(folder), str(fresh(work / "peer.gguf")),
        ]  # fmt: skip
    results = {}
    for label, cmd in runs.items():
        if cmd[0] == "cat":
            r = timed(["sh", "-c", f"cat {cmd[1]} > /dev/null"], label)
        else:
            r = timed(cmd, label)
        results[label] = r
        print(f"{label:<36} {r['seconds']:>7.2f} s  {r['peak_rss_mib']:>8.0f} MiB peak RSS")
    gguf_s = results["ryzq GGUF q2_0"]["seconds"]
    st_s = results["ryzq safetensors folder q2_0"]["seconds"]
    print(f"GGUF / safetensors output (q2_0): {gguf_s / st_s:.2f}x the time")
    print(f"ryzq GGUF / cat: {gguf_s / results['cat (floor)']['seconds']:.2f}x")
    if not args.no_peer:
        peer = results["converter flow (numpy + gguf-py)"]["seconds"]
        tq = results["ryzq GGUF tq2_0 (q2_0 fallback)"]["seconds"]
        print(f"converter flow / ryzq GGUF tq2_0: {peer / tq:.1f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
