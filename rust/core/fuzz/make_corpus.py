"""Writes the seed corpus of the fuzz targets into corpus/<target>/: small safetensors files
written by ryzq and by the `safetensors` package, ryzq metadata strings, packed bytes of every
layout, model folders' config and index files. Run with the project's Python, where ryzq and
safetensors are installed:

    python rust/core/fuzz/make_corpus.py

Every file is made from fixed numbers, so the seeds are the same at every run.
"""

import hashlib
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save, save_file

import ryzq

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
LAYOUTS = ["bitnet", "i2", "t1", "tq2_0", "tq1_0", "q2_0"]
BLOCK = {"tq2_0": 256, "tq1_0": 256, "q2_0": 64}


def put(target: str, data: bytes, name: str | None = None) -> None:
    """Adds a seed, named by its content unless a name is given."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    (folder / name).write_bytes(data)


def weights(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.02, size=shape).astype(np.float32)


def raw_safetensors(tensors: dict[str, tuple[str, list[int], bytes]], metadata=None) -> bytes:
    """A safetensors file written by hand, for dtypes numpy lacks (bfloat16)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        end = offset + len(data)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(d for _, _, d in tensors.values())


def safetensors_seeds(work: Path) -> list[bytes]:
    """Files of the `safetensors` package and of ryzq; returns ryzq's metadata strings."""
    put("safetensors_header", save({"w": weights((4, 8), 1)}, metadata={"format": "pt"}))
    put(
        "safetensors_header",
        save(
            {
                "model.layers.0.mlp.up_proj.weight": weights((8, 64), 2).astype(np.float16),
                "model.norm.weight": np.ones(64, np.float32),
                "ids": np.arange(6, dtype=np.int64),
                "mask": np.array([1, 0, 1], np.uint8),
                "empty": np.zeros((0, 4), np.float32),
                "scalar": np.array(3.5, np.float32),
            }
        ),
    )
    bf16 = (weights((4, 16), 3).view(np.uint32) >> 16).astype("<u2").tobytes()
    put(
        "safetensors_header",
        raw_safetensors({"model.layers.0.self_attn.q_proj.weight": ("BF16", [4, 16], bf16)}),
    )

    src = work / "in.safetensors"
    save_file(
        {
            "model.layers.0.mlp.up_proj.weight": weights((8, 256), 4),
            "model.layers.0.mlp.up_proj.bias": weights((8,), 5),
            "model.layers.0.self_attn.o_proj.weight": weights((4, 256), 6).astype(np.float16),
            "model.norm.weight": np.ones(256, np.float32),
        },
        str(src),
        metadata={"format": "pt"},
    )
    texts = []
    runs = [
        ("bitnet", {}),
        ("bitnet", {"linear_class": "autobitlinear"}),
        ("i2", {"granularity": "row"}),
        ("t1", {"granularity": "group:32", "method": "optimal"}),
        ("tq2_0", {}),
        ("tq1_0", {"method": "absmax"}),
        ("q2_0", {"method": "absmax"}),
    ]
    for i, (layout, options) in enumerate(runs):
        dst = work / f"out{i}.safetensors"
        ryzq.quantize_file(src, dst, layout=layout, **options)
        data = dst.read_bytes()
        assert len(data) < 20_000, (layout, len(data))
        put("safetensors_header", data)
        with safe_open(str(dst), "np") as f:
            texts.append(f.metadata()["ryzq"].encode())
        back = work / f"back{i}.safetensors"
        ryzq.dequantize_file(dst, back, dtype="bfloat16")
    return texts


def metadata_seeds(texts: list[bytes]) -> None:
    for text in texts:
        put("ryzq_metadata", text)
    by_hand = {
        "version": 1,
        "linear_class": "autobitlinear",
        "quantized": {
            "a.weight": {
                "layout": "bitnet",
                "method": "absmean",
                "granularity": "tensor",
                "dtype": "BF16",
                "shape": [8, 16],
                "scale": "a.weight_scale",
                "scale_convention": "divide",
            },
            "b.weight": {
                "layout": "TQ1_0",
                "method": "absmax",
                "granularity": "group:256",
                "dtype": "F16",
                "shape": [2, 512],
                "scale_convention": "multiply",
            },
            "c": {
                "layout": "t1",
                "method": "optimal",
                "granularity": "row",
                "dtype": "float32",
                "shape": [3, 5, 7],
                "scale": "c_scale",
                "scale_convention": "multiply",
            },
        },
        "divided_biases": {"a.bias": {"weight": "a.weight", "divisor": 0.25}},
    }
    put("ryzq_metadata", json.dumps(by_hand).encode())
    put("ryzq_metadata", b'{"version":1,"quantized":{}}')


class Seed:
    """Bytes read in the order the unpack target reads them (see fuzz_targets/unpack.rs)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def u8(self, v: int) -> "Seed":
        self.data += struct.pack("<B", v)
        return self

    def u16(self, v: int) -> "Seed":
        self.data += struct.pack("<H", v)
        return self

    def u32(self, v: int) -> "Seed":
        self.data += struct.pack("<I", v)
        return self

    def f32(self, v: float) -> "Seed":
        self.data += struct.pack("<f", v)
        return self

    def u64(self, v: int) -> "Seed":
        self.data += struct.pack("<Q", v)
        return self

    def small(self, value: int) -> "Seed":
        """What `small` reads to give `value` (below 2^17 and the most it allows)."""
        return self.u8(17).u32(value)


def unpack_seeds() -> None:
    rng = np.random.default_rng(7)
    granularities = [("tensor", 0, None), ("row", 1, None), ("group", 2, 1)]  # GROUP_SIZES[1] = 64
    for li, layout in enumerate(LAYOUTS):
        block = BLOCK.get(layout, 1)
        for gname, gkind, gindex in granularities:
            rows, cols = 4, 2 * max(block, 64)
            shape = [rows, cols]
            numel = rows * cols
            codes = rng.integers(-1, 2, size=numel).astype(np.int8)
            for dtype_index, source in ((0, 0), (1, 1), (2, 2)):
                s = Seed().u32(li).u8(1).u8(gkind)
                if gindex is not None:
                    s.u32(gindex)
                s.u32(dtype_index).u8(source)
                if source == 2:
                    s.u32(0).u32(5).u8(0xFF)  # one edit: byte 5 set to 0xff
                # The shape: ndim 2 (below(2 or 3) gives 1), budget 4096, then the dims from
                # the last: unit * (1 + k).
                s.u32(1).u8(1)
                unit = block if gname != "group" else max(block, 64)
                s.small(cols // unit - 1)
                s.small(rows // (4 if layout == "bitnet" else 1) - 1)
                for _ in range(numel // block if layout in BLOCK else 0):
                    s.u16(0x3C00)  # float16 1.0
                groups = {"tensor": 1, "row": rows, "group": numel // unit}[gname]
                for g in range(groups):
                    s.f32(0.5 + g / 8)
                if source == 0:
                    scales = None
                    if layout in BLOCK:
                        scales = np.full(numel // block, 1.0, np.float32)
                    packed = ryzq.pack(codes.reshape(shape), layout, scales=scales)
                    s.data += packed.tobytes()
                else:
                    s.data += (codes + 1).astype(np.uint8).tobytes()
                put("unpack", bytes(s.data))
    # Any shape: [7, 2^40] (ndim 2, one dim a u16, one a u64), one scale, a few bytes.
    s = Seed().u32(1).u8(0).u8(0).u32(0).u8(0).u32(2).u8(2).u16(7).u8(0).u64(1 << 40)
    put("unpack", bytes(s.u32(1).f32(1.0).data) + b"\x55" * 8)


def folder_seeds() -> None:
    config = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "torch_dtype": "bfloat16",
    }
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    quantized = dict(
        config,
        quantization_config={
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "offline",
            "modules_to_not_convert": ["lm_head"],
        },
    )
    index = {
        "metadata": {"total_size": 4096},
        "weight_map": {
            "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
        },
    }
    bad_index = {"weight_map": {"a.weight": "../outside.safetensors"}}
    for flags, cfg, idx in [
        (2, config, None),
        (2 | 16, llama, None),
        (1 | 4, config, index),
        (1 | 4 | 16, quantized, index),
        (1, config, bad_index),
        (8, config, None),
    ]:
        c = json.dumps(cfg).encode()
        i = json.dumps(idx).encode() if idx is not None else b""
        put("model_folder", struct.pack("<BH", flags, len(c)) + c + i)


def protobuf_field(field: int, wire: int, payload: bytes) -> bytes:
    """A protobuf field: its key, then for length-delimited fields the length."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        return bytes(out + bytes([v]))

    key = varint(field << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def sentencepiece_model(pieces: list[tuple[str, float, int]], model_type: int = 2) -> bytes:
    """A SentencePiece ModelProto: pieces (piece, score, type), a trainer spec, a normalizer."""
    out = b""
    for text, score, kind in pieces:
        piece = protobuf_field(1, 2, text.encode())
        piece += protobuf_field(2, 5, struct.pack("<f", score))
        piece += protobuf_field(3, 0, bytes([kind]))
        out += protobuf_field(1, 2, piece)
    out += protobuf_field(2, 2, protobuf_field(3, 0, bytes([model_type])))
    out += protobuf_field(3, 2, protobuf_field(3, 0, b"\x01"))
    return out


def tokenizer_seeds() -> None:
    """Folders as fuzz_targets/tokenizer.rs reads them: flags, rows, then each file."""

    def seed(rows: int, files: list[bytes | None]) -> bytes:
        flags = sum(1 << i for i, f in enumerate(files) if f is not None)
        present = [f for f in files if f is not None]
        out = struct.pack("<BH", flags, rows - 1)
        for f in present[:-1]:
            out += struct.pack("<H", len(f)) + f
        return out + (present[-1] if present else b"")

    regex = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
        r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    bpe = {
        "added_tokens": [
            {"id": 6, "content": "<|bos|>", "special": True, "normalized": False},
            {"id": 7, "content": "\u010a", "special": False, "normalized": False},
        ],
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|bos|>"}}, {"Sequence": {"id": "A"}}],
            "pair": [
                {"SpecialToken": {"id": "<|bos|>"}},
                {"Sequence": {"id": "A"}},
                {"SpecialToken": {"id": "<|bos|>"}},
                {"Sequence": {"id": "B"}},
            ],
        },
        "decoder": {"type": "ByteLevel"},
        "model": {
            "type": "BPE",
            "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3, "\u0120ab": 4, "c": 5},
            "merges": [["a", "b"], "\u0120 ab"],
        },
    }
    config = {
        "bos_token": "<|bos|>",
        "eos_token": {"content": "<|bos|>"},
        "add_bos_token": True,
        "chat_template": [
            {"name": "default", "template": "{{ m }}"},
            {"name": "x", "template": ""},
        ],
        "added_tokens_decoder": {"1": {"content": "<s>", "special": True}},
    }
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<0x0A>", 0.0, 6)]
    spm = sentencepiece_model([*pieces, ("\u2581a", -1.0, 1)])
    jsons = [json.dumps(bpe).encode(), json.dumps(config).encode()]
    put("tokenizer", seed(12, [None, jsons[0], jsons[1], None, None, None]))
    put("tokenizer", seed(8, [None, jsons[0], None, None, b"{{ x }}", b'{"eos_token_id": 6}']))
    put("tokenizer", seed(9, [spm, None, jsons[1], b'{"<x>": 6}', None, None]))
    put("tokenizer", seed(5, [spm, jsons[0], None, None, None, b'{"vocab_size": 5}']))


def main() -> None:
    # The reproducers of bugs the fuzzers found (regress-*) stay; the seeds are made anew.
    for f in CORPUS.rglob("*"):
        if f.is_file() and not f.name.startswith("regress-"):
            f.unlink()
    with tempfile.TemporaryDirectory() as work:
        texts = safetensors_seeds(Path(work))
    metadata_seeds(texts)
    unpack_seeds()
    folder_seeds()
    tokenizer_seeds()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"{count} seeds, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
