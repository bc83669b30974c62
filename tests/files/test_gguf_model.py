"""GGUF model files: quantize_model into a .gguf file, read back by gguf-py and by ryzq
(inspect, dequantize), from one file or shards; bad GGUF files are one RyzqError."""

import json
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

try:
    import gguf
    from gguf import quants
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs gguf-py", allow_module_level=True)

from safetensors.numpy import load_file, save_file

import ryzq

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 500000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "vocab_size": 96,
}


def llama_state(seed=0, hidden=256, intermediate=512, vocab=96, layers=2):
    rng = np.random.default_rng(seed)
    kv = hidden // 2
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((hidden, hidden))
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((kv, hidden))
        t[p + "self_attn.v_proj.weight"] = rng.standard_normal((kv, hidden))
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((hidden, hidden))
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((intermediate, hidden))
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((intermediate, hidden))
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, intermediate))
    t["model.norm.weight"] = np.ones(hidden)
    return {k: (0.05 * v).astype(np.float32) for k, v in t.items()}


def llama_folder(root, shards=1, **config):
    root.mkdir()
    state = llama_state()
    (root / "config.json").write_text(json.dumps({**CONFIG, **config}))
    if shards == 1:
        save_file(state, str(root / "model.safetensors"))
        return root, state
    names = sorted(state)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[k::shards]}
        save_file(part, str(root / shard))
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root, state


def to_gguf(src, dst, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        return ryzq.quantize_model(src, dst, tokenizer=False, **options)


def test_the_file_from_shards_is_the_file_from_one(tmp_path):
    one, _ = llama_folder(tmp_path / "one")
    three, _ = llama_folder(tmp_path / "three", shards=3)
    to_gguf(one, tmp_path / "a.gguf", layout="tq1_0")
    report = to_gguf(three, tmp_path / "b.gguf", layout="tq1_0")
    a = (tmp_path / "a.gguf").read_bytes()
    b = (tmp_path / "b.gguf").read_bytes()
    # The same tensors and bytes; only general.name (the folder's name) and the order of
    # tensors (the shards' order) may differ.
    ra, rb = gguf.GGUFReader(tmp_path / "a.gguf"), gguf.GGUFReader(tmp_path / "b.gguf")
    da = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in ra.tensors}
    db = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in rb.tensors}
    assert da == db and len(da) == 2 * 9 + 2
    assert report.file_bytes_out == len(b) and abs(len(a) - len(b)) < 8


#: GGUF's tensor names and Hugging Face's, for the llama folder above.
HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    **{
        f"blk.{i}.{g}": f"model.layers.{i}.{h}"
        for i in range(2)
        for g, h in [
            ("attn_norm.weight", "input_layernorm.weight"),
            ("ffn_norm.weight", "post_attention_layernorm.weight"),
            ("attn_q.weight", "self_attn.q_proj.weight"),
            ("attn_k.weight", "self_attn.k_proj.weight"),
            ("attn_v.weight", "self_attn.v_proj.weight"),
            ("attn_output.weight", "self_attn.o_proj.weight"),
            ("ffn_gate.weight", "mlp.gate_proj.weight"),
            ("ffn_up.weight", "mlp.up_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight"),
        ]
    },
}


def hf_rows(name, w):
    """llama.cpp's converter permutes q and k rows (``LlamaModel.permute``:
    ``reshape(n, 2, D/2, in).swapaxes(1, 2)``); this is its inverse."""
    heads = {"attn_q": 4, "attn_k": 2}.get(name.split(".")[2] if name.startswith("blk") else "")
    if heads is None:
        return w
    return (
        w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


@pytest.mark.parametrize("layout", ["tq2_0", "tq1_0", "q8_0"])
def test_dequantize_restores_what_gguf_py_reads(tmp_path, layout):
    src, state = llama_folder(tmp_path / "m")
    dst = tmp_path / "m.gguf"
    to_gguf(src, dst, layout=layout, method="absmax", embeddings="bf16")
    back = tmp_path / "back.safetensors"
    n = ryzq.dequantize_file(dst, back)
    assert n == 14
    restored = load_file(back)
    reader = gguf.GGUFReader(dst)
    assert len(restored) == len(reader.tensors)
    # Hugging Face's names and row order again.
    assert sorted(restored) == sorted(HF_NAMES.values())
    for t in reader.tensors:
        expected = hf_rows(t.name, quants.dequantize(t.data, t.tensor_type))
        np.testing.assert_array_equal(restored[HF_NAMES[t.name]].astype(np.float32), expected)
    # What went in, ternarized: the same as quantizing the folder's weights directly.
    q = "model.layers.1.self_attn.q_proj.weight"
    direct = ryzq.quantize(state[q], layout=layout, method="absmax").dequantize()
    np.testing.assert_array_equal(restored[q], direct)
    assert reader.fields["llama.rope.freq_base"].contents() == 500000.0
    assert {t.name: t.tensor_type.name for t in reader.tensors}["token_embd.weight"] == "BF16"


@pytest.mark.parametrize("layout", ["tq2_0", "i2_s"])
def test_a_gguf_file_becomes_transformers_packed_layout_with_its_codes(tmp_path, layout):
    src, state = llama_folder(tmp_path / "m")
    dst = tmp_path / "m.gguf"
    to_gguf(src, dst, layout=layout)
    report = ryzq.quantize_file(dst, tmp_path / "hf.safetensors", layout="bitnet")
    out = load_file(tmp_path / "hf.safetensors")
    for name, w in state.items():
        if not name.endswith("_proj.weight"):
            continue
        t = next(t for t in report.tensors if t.name == name)
        assert t.carried_over is not None, name
        # The codes of the folder's weights, quantized directly, in HF's row order.
        expected = ryzq.quantize(w, layout="bitnet").codes()
        np.testing.assert_array_equal(ryzq.unpack(out[name], w.shape, "bitnet"), expected)
        assert name.removesuffix("weight") + "weight_scale" in out


def test_inspect_lists_keys_and_tensors(tmp_path):
    src, _ = llama_folder(tmp_path / "m")
    dst = tmp_path / "m.gguf"
    to_gguf(src, dst, layout="tq2_0")
    out = subprocess.run(
        [sys.executable, "-m", "ryzq", "inspect", str(dst)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "GGUF v3" in out and "20 tensors" in out
    assert "llama.attention.head_count_kv: 2" in out
    assert "blk.1.ffn_down.weight" in out and "TQ2_0" in out


def gguf_bytes(kvs=(), tensors=(), version=3):
    """A GGUF file: kvs of (key, u32 value), tensors of (name, shape, f32 data)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, value in kvs:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<II", 4, value)
    offset = 0
    for name, shape, data in tensors:
        out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", n) for n in reversed(shape))
        out += struct.pack("<IQ", 0, offset)
        offset += -(-len(data) // 32) * 32
    out += b"\0" * (-len(out) % 32)
    for _, _, data in tensors:
        out += data + b"\0" * (-len(data) % 32)
    return out


def test_a_hand_written_file_reads_as_gguf_py_reads_it(tmp_path):
    data = np.arange(12, dtype=np.float32)
    path = tmp_path / "x.gguf"
    path.write_bytes(gguf_bytes([("a.b", 7)], [("t", (3, 4), data.tobytes())]))
    reader = gguf.GGUFReader(path)
    assert reader.fields["a.b"].contents() == 7
    n = ryzq.dequantize_file(path, tmp_path / "x.safetensors")
    assert n == 0
    np.testing.assert_array_equal(load_file(tmp_path / "x.safetensors")["t"], data.reshape(3, 4))


@pytest.mark.parametrize(
    ("mutate", "kind", "message"),
    [
        (lambda b: b"GGUG" + b[4:], "bad_format", "not a GGUF file"),
        (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "bad_format", "version 2"),
        (lambda b: b[:16] + struct.pack("<Q", 2**40) + b[24:], "bad_format", "key-value count"),
        (lambda b: b[:8] + struct.pack("<Q", 2**40) + b[16:], "bad_format", "tensor count"),
        (lambda b: b[: len(b) - 40], "truncated", "ends at byte"),
    ],
)
def test_bad_gguf_files_are_one_error(tmp_path, mutate, kind, message):
    good = gguf_bytes([("a.b", 7)], [("t", (3, 4), np.zeros(12, np.float32).tobytes())])
    path = tmp_path / "x.gguf"
    path.write_bytes(mutate(good))
    with pytest.raises(ryzq.RyzqError, match=message) as err:
        ryzq.dequantize_file(path, tmp_path / "out.safetensors")
    assert err.value.kind == kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_every_prefix_of_a_gguf_file_is_an_error_not_a_crash(tmp_path):
    src, _ = llama_folder(tmp_path / "m", num_hidden_layers=2)
    dst = tmp_path / "m.gguf"
    to_gguf(src, dst, layout="tq2_0")
    whole = dst.read_bytes()
    path = tmp_path / "cut.gguf"
    for n in [*range(0, 1200, 7), len(whole) - 1]:
        path.write_bytes(whole[:n])
        with pytest.raises(ryzq.RyzqError) as err:
            ryzq.dequantize_file(path, tmp_path / "out.safetensors")
        assert err.value.kind in ("truncated", "bad_format"), (n, str(err.value))
        assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(("hidden_act", "arch"), [("relu2", "bitnet-b1.58"), ("silu", "bitnet")])
def test_i2_s_files_are_for_bitnet_cpp(tmp_path, hidden_act, arch):
    root = tmp_path / "m"
    root.mkdir()
    state = llama_state()
    for i in range(2):
        state[f"model.layers.{i}.self_attn.attn_sub_norm.weight"] = np.ones(256, np.float32)
        state[f"model.layers.{i}.mlp.ffn_sub_norm.weight"] = np.ones(512, np.float32)
    save_file(state, str(root / "model.safetensors"))
    config = {**CONFIG, "architectures": ["BitNetForCausalLM"], "model_type": "bitnet"}
    (root / "config.json").write_text(json.dumps({**config, "hidden_act": hidden_act}))
    dst = tmp_path / "m.gguf"
    to_gguf(root, dst, layout="i2_s")
    header = ryzq._ryzq.read_gguf_header(str(dst))
    kvs = {key: value for key, _, value in header["kvs"]}
    assert kvs["general.architecture"] == arch
    assert kvs[f"{arch}.hidden_activation"] == hidden_act
    assert kvs["general.file_type"] == 40
    types = {name: (ggml_type, nbytes) for name, ggml_type, _, nbytes in header["tensors"]}
    assert types["blk.0.ffn_down.weight"] == ("I2_S", 256 * 512 // 4 + 32)
    assert types["blk.1.ffn_sub_norm.weight"] == ("F32", 512 * 4)
    back = tmp_path / "back.safetensors"
    ryzq.dequantize_file(dst, back)
    restored = load_file(back)
    w = state["model.layers.1.mlp.down_proj.weight"]
    expected = ryzq.quantize(w, layout="i2_s").dequantize()
    np.testing.assert_array_equal(restored["model.layers.1.mlp.down_proj.weight"], expected)


def test_i2_s_rows_it_cannot_take_fall_back_to_q8_0_or_are_refused(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    state = llama_state(intermediate=320)  # down_proj rows of 320: not whole 128-blocks
    save_file(state, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({**CONFIG, "intermediate_size": 320}))
    dst = tmp_path / "m.gguf"
    report = to_gguf(root, dst, layout="i2_s")
    fell_back = [w for w in report.warnings if "fell back" in w]
    assert len(fell_back) == 1 and "q8_0" in fell_back[0] and "bytes where i2_s" in fell_back[0]
    # The two layers' down_proj alike: named together, the reason and the cost said once.
    assert fell_back[0].startswith(
        "2 weights fell back to another type (fallback q8_0): model.layers.0.mlp.down_proj.weight "
        "and model.layers.1.mlp.down_proj.weight: "
    )
    assert fell_back[0].count("bytes where i2_s") == 1 and fell_back[0].endswith(", each")
    types = {n: t for n, t, _, _ in ryzq._ryzq.read_gguf_header(str(dst))["tensors"]}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.ffn_up.weight"] == "I2_S"
    with pytest.raises(ryzq.RyzqError, match=r"128.*i2_s_arm") as err:
        to_gguf(root, tmp_path / "e.gguf", layout="i2_s", fallback="error")
    assert err.value.tensor == "model.layers.0.mlp.down_proj.weight"
    assert not (tmp_path / "e.gguf").exists()


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_every_granularity_the_blocks_carry(tmp_path, granularity):
    src, state = llama_folder(tmp_path / "m")
    dst = tmp_path / "m.gguf"
    to_gguf(src, dst, layout="tq2_0", method="absmax", granularity=granularity)
    t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.1.ffn_down.weight")
    w = state["model.layers.1.mlp.down_proj.weight"]
    expected = ryzq.quantize(w, layout="tq2_0", method="absmax", granularity=granularity)
    np.testing.assert_array_equal(quants.dequantize(t.data, t.tensor_type), expected.dequantize())


def test_a_tokenizer_that_does_not_parse_is_one_error_and_nothing_is_written(tmp_path):
    src, _ = llama_folder(tmp_path / "m")
    (src / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(ryzq.RyzqError, match=r"tokenizer\.json") as err:
        ryzq.quantize_model(src, tmp_path / "m.gguf", layout="tq2_0")
    assert err.value.path is not None and "tokenizer.json" in err.value.path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def bitnet_folder(root, **state_changes):
    root.mkdir()
    state = llama_state()
    for i in range(2):
        state[f"model.layers.{i}.self_attn.inner_attn_ln.weight"] = np.ones(256, np.float32)
        state[f"model.layers.{i}.mlp.ffn_layernorm.weight"] = np.ones(512, np.float32)
    state.update(state_changes)
    save_file(state, str(root / "model.safetensors"))
    config = {**CONFIG, "architectures": ["BitnetForCausalLM"], "tie_word_embeddings": False}
    (root / "config.json").write_text(json.dumps(config))
    return root, state


def test_a_bitnet_head_saved_apart_but_equal_to_the_embedding_is_left_out(tmp_path):
    # 1bitLLM's checkpoints: an lm_head of their own that repeats embed_tokens.
    embedding = llama_state()["model.embed_tokens.weight"]
    src, _ = bitnet_folder(tmp_path / "same", **{"lm_head.weight": embedding.copy()})
    to_gguf(src, tmp_path / "same.gguf", layout="tq2_0")
    names = [t.name for t in gguf.GGUFReader(tmp_path / "same.gguf").tensors]
    assert "output.weight" not in names and "blk.0.attn_sub_norm.weight" in names
    assert "blk.1.ffn_sub_norm.weight" in names
    other, _ = bitnet_folder(tmp_path / "other", **{"lm_head.weight": embedding * 2})
    with pytest.raises(ryzq.RyzqError, match="output head of its own") as err:
        to_gguf(other, tmp_path / "other.gguf", layout="tq2_0")
    assert err.value.tensor == "lm_head.weight"


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("model.layers.0.self_attn.q_proj.weight", (0, 256)),
        ("model.layers.0.self_attn.q_proj.weight", (264, 256)),
        ("model.layers.1.mlp.down_proj.weight", (256, 1024)),
        ("model.layers.0.input_layernorm.weight", (16, 16)),
    ],
)
def test_shapes_llama_cpp_would_refuse_are_refused_here(tmp_path, name, shape):
    root = tmp_path / "m"
    root.mkdir()
    state = {**llama_state(), name: np.zeros(shape, np.float32)}
    save_file(state, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(ryzq.RyzqError, match=r"config\.json's sizes give") as err:
        to_gguf(root, tmp_path / "m.gguf", layout="tq2_0")
    assert err.value.tensor == name and err.value.kind == "bad_shape"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_theta": 1e300}, "rope_theta"),
        ({"vocab_size": 100}, "vocab_size is 100"),
        ({"rope_scaling": {"factor": 4.0}}, "RoPE scaling"),
        ({"head_dim": 48}, "sizes give"),
    ],
)
def test_configs_that_would_run_wrong_are_refused(tmp_path, change, message):
    src, _ = llama_folder(tmp_path / "m", **change)
    with pytest.raises(ryzq.RyzqError, match=message):
        to_gguf(src, tmp_path / "m.gguf", layout="tq2_0")
    assert not (tmp_path / "m.gguf").exists()


def test_a_relu2_bitnet_for_bitnet_cpp_warns_of_its_new_fork(tmp_path):
    src, _ = bitnet_folder(tmp_path / "m", **{})
    config = json.loads((src / "config.json").read_text())
    config.update(hidden_act="relu2", tie_word_embeddings=True)
    (src / "config.json").write_text(json.dumps(config))
    with pytest.warns(ryzq.RyzqWarning, match="#588"):
        ryzq.quantize_model(src, tmp_path / "m.gguf", layout="i2_s", tokenizer=False)


def test_write_gguf_refuses_data_of_another_size_than_its_shape(tmp_path):
    with pytest.raises(ryzq.RyzqError, match="has 4 bytes, expected 400"):
        ryzq._ryzq.write_gguf_file(
            str(tmp_path / "x.gguf"), "llama", [("t", "float32", [100], np.zeros(4, np.uint8))]
        )
    assert not any(tmp_path.iterdir())


def test_a_shape_whose_size_overflows_is_refused(tmp_path):
    good = gguf_bytes([], [("t", (4,), np.zeros(4, np.float32).tobytes())])
    at = good.index(b"t") + 1 + 4  # after the name and n_dims: ne[0]
    path = tmp_path / "x.gguf"
    path.write_bytes(good[:at] + struct.pack("<Q", 2**62 + 1) + good[at + 8 :])
    with pytest.raises(ryzq.RyzqError, match="too large"):
        ryzq._ryzq.read_gguf_header(str(path))


def test_a_packed_folder_gives_the_gguf_file_of_its_master_weights(tmp_path):
    src, _ = llama_folder(tmp_path / "m")
    packed = tmp_path / "packed"
    ryzq.quantize_model(src, packed, layout="bitnet", linear_class="autobitlinear")
    to_gguf(src, tmp_path / "master.gguf", layout="tq2_0")
    report = to_gguf(packed, tmp_path / "packed.gguf", layout="tq2_0")
    assert sum(t.carried_over is not None for t in report.tensors) == 14
    # The same codes and the same float16 d (autobitlinear stores absmean itself, in float32).
    a, b = gguf.GGUFReader(tmp_path / "master.gguf"), gguf.GGUFReader(tmp_path / "packed.gguf")
    da = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in a.tensors}
    db = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in b.tensors}
    assert da == db


def test_packed_shapes_that_contradict_the_config_are_refused(tmp_path):
    src, _ = llama_folder(tmp_path / "m")
    packed = tmp_path / "packed"
    ryzq.quantize_model(src, packed, layout="bitnet")
    state = load_file(packed / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    state[name] = state[name][:64]  # 256 rows packed, where intermediate_size gives 512
    save_file(state, str(packed / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ryzq.RyzqError, match=r"shape \[256, 256\], but config.json") as refused:
        to_gguf(packed, tmp_path / "x.gguf", layout="tq2_0")
    assert name in str(refused.value)
    assert not (tmp_path / "x.gguf").exists()
