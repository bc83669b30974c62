"""A real client: llama.cpp (through llama-cpp-python) runs the GGUF model files ryzq writes.

Tiny BitNet (transformers' BitNetForCausalLM, SiLU) and Llama models with random float32
master weights are saved by transformers, written as GGUF by ryzq, and run by llama.cpp on the
same token ids as transformers runs the same ternary weights. Two bounds, each with its reason:

- With the linear weights in float16 (``exclude``), llama.cpp and transformers compute the
  same graph in float16 and float32: measured 1.0e-3 relative L2 on the logits, asserted
  under 4e-3. A wrong tensor name, hyperparameter, q/k order or norm gives errors of order 1.
- With ternary blocks, llama.cpp quantizes the activations of every matmul to 8 bits (Q8_K
  per 256 values for TQ, Q8_0 per 32 for Q2_0 and Q8_0), which transformers does not. The
  effect of that rounding is measured in transformers itself, by rounding each linear
  layer's input the same way; llama.cpp's logits must stay within twice that distance (plus
  the float16 term above). Measured: 0.025 against a bound of 0.054 (bitnet, tq2_0).

The bitnet model packed by transformers' pack_weights is also a source: its codes carried into
TQ2_0 make the file ryzq writes from the master weights, and llama.cpp's logits stay within
the bound above of the master's ternary weights, and of transformers running the packed model.
"""

import json
import os
import warnings

import numpy as np
import pytest

# Eager mode for transformers' packed BitNet layers: the same arithmetic as compiled, without
# compiling kernels in the test run (read when torch first compiles, so before any import).
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

try:
    import gguf
    import llama_cpp
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear, pack_weights

    from transformers_packing import pack_weights_file, write_packed_config
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip(
        "needs llama-cpp-python, torch, transformers and gguf: pip install '.[test,llama]'",
        allow_module_level=True,
    )

from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

import ryzq

IDS = [5, 17, 99, 3, 250, 42, 7, 8, 120, 64]
#: llama.cpp's activation blocks per weight type.
ACTIVATION_BLOCK = {"tq2_0": 256, "tq1_0": 256, "q2_0": 32, "q8_0": 32}
FLOAT16_GRAPH = 4e-3


def make_model(
    root, kind, *, intermediate=512, hidden_act="silu", tied=None, seed=0, rope=None, folder=None
):
    """A tiny model saved by transformers: 2 blocks, hidden 256, 4 heads of 64, 2 KV heads;
    ``rope``: its RoPE parameters instead of plain RoPE with base 10000."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=320,
        hidden_size=256,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        hidden_act=hidden_act,
        rms_norm_eps=1e-5,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=1,
        eos_token_id=2,
    )
    if kind == "bitnet":
        config = transformers.BitNetConfig(tie_word_embeddings=True, **common)
        model = transformers.BitNetForCausalLM(config)
    else:
        config = transformers.LlamaConfig(
            tie_word_embeddings=False if tied is None else tied, **common
        )
        model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
    path = root / (folder or kind)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: make_model(root, kind) for kind in ("bitnet", "llama")}


def llama_cpp_logits(path) -> np.ndarray:
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2
    )
    llm.eval(IDS)
    logits = np.array(llm.scores[: len(IDS)], dtype=np.float64)
    llm.close()
    return logits


def transformers_logits(folder, *, ternary: bool, activation_block: int | None = None):
    """Logits of the folder's model, with its linear weights absmean-ternarized (one scale per
    tensor, as BitNet trains) and, with ``activation_block``, each linear layer's input
    rounded to 8 bits per block of that many values (llama.cpp's Q8 activations)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    def round_8bit(x):
        blocks = x.reshape(-1, activation_block)
        d = blocks.abs().amax(-1, keepdim=True) / 127
        safe = torch.where(d > 0, d, torch.ones_like(d))
        return (torch.round(blocks / safe) * d).reshape(x.shape)

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith("_proj"):
                if ternary:
                    w = module.weight
                    s = w.abs().mean().clamp(min=1e-5)
                    w.copy_((w / s).round().clamp(-1, 1) * s)
                if activation_block:
                    module.register_forward_pre_hook(lambda _, args: (round_8bit(args[0]),))
        return model(torch.tensor([IDS])).logits[0].double().numpy()


def relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def quantize(folder, dst, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        return ryzq.quantize_model(folder, dst, tokenizer=False, **options)


@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_float16_weights_run_the_same_graph(models, kind, tmp_path):
    dst = tmp_path / "f16.gguf"
    quantize(models[kind], dst, layout="tq2_0", exclude="*_proj.weight")
    reader = gguf.GGUFReader(dst)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16"
    error = relative(llama_cpp_logits(dst), transformers_logits(models[kind], ternary=False))
    assert error < FLOAT16_GRAPH


@pytest.mark.parametrize("layout", ["tq2_0", "tq1_0", "q2_0", "q8_0"])
@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_ternary_weights_match_transformers_within_activation_rounding(
    models, kind, layout, tmp_path
):
    dst = tmp_path / f"{layout}.gguf"
    report = quantize(models[kind], dst, layout=layout)
    assert len(report.quantized) == 14
    exact = transformers_logits(models[kind], ternary=True)
    rounded = transformers_logits(
        models[kind], ternary=True, activation_block=ACTIVATION_BLOCK[layout]
    )
    bound = 2 * relative(rounded, exact) + FLOAT16_GRAPH
    assert relative(llama_cpp_logits(dst), exact) < bound


def test_gguf_py_reads_keys_types_and_tq_bytes(models, tmp_path):
    folder = models["llama"]
    dst = tmp_path / "m.gguf"
    quantize(folder, dst, layout="tq2_0", method="absmax")
    reader = gguf.GGUFReader(dst)
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.freq_base"] == 10000.0
    assert fields["llama.vocab_size"] == 320
    assert reader.fields["llama.context_length"].types == [gguf.GGUFValueType.UINT32]
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 9 + 3  # token_embd, output_norm, output
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.1.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    from safetensors.numpy import load_file

    state = load_file(folder / "model.safetensors")
    for hf, name, heads in [
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 4),
        ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", 2),
        ("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight", None),
    ]:
        w = state[hf]
        if heads:  # llama.cpp's converter's own permutation
            w = w.reshape(heads, 2, w.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)
        t = tensors[name]
        assert list(t.shape) == [w.shape[1], w.shape[0]]
        expected = gguf.quants.quantize(w, gguf.GGMLQuantizationType.TQ2_0)
        np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), expected.reshape(-1))
        ours = ryzq.quantize(w, layout="tq2_0", method="absmax").dequantize()
        np.testing.assert_array_equal(gguf.quants.dequantize(t.data, t.tensor_type), ours)


def test_a_row_tq_cannot_take_falls_back_and_runs(tmp_path):
    # Rows of 320 values: no TQ block of 256 and no I2_S block of 128 fits; Q2_0's 64 does.
    folder = make_model(tmp_path, "llama", intermediate=320)
    dst = tmp_path / "m.gguf"
    with pytest.warns(ryzq.RyzqWarning, match="ffn_down|down_proj"):
        report = ryzq.quantize_model(folder, dst, layout="tq2_0", tokenizer=False)
    assert any("down_proj" in w and "q2_0" in w for w in report.warnings)
    assert "fell back" in report.summary()
    exact = transformers_logits(folder, ternary=True)
    rounded = transformers_logits(folder, ternary=True, activation_block=32)
    assert relative(llama_cpp_logits(dst), exact) < 2 * relative(rounded, exact) + FLOAT16_GRAPH

    dst8 = tmp_path / "m8.gguf"
    quantize(folder, dst8, layout="tq2_0", fallback="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst8).tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.ffn_up.weight"] == "TQ2_0"
    dst16 = tmp_path / "m16.gguf"
    quantize(folder, dst16, layout="tq2_0", fallback="f16")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst16).tensors}
    assert types["blk.1.ffn_down.weight"] == "F16"

    with pytest.raises(ryzq.RyzqError, match=r"down_proj.*q2_0, q8_0") as err:
        quantize(folder, tmp_path / "e.gguf", layout="tq2_0", fallback="error")
    assert err.value.tensor == "model.layers.0.mlp.down_proj.weight"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "m.gguf", "m16.gguf", "m8.gguf"]


def test_q8_0_blocks_dequantize_to_the_codes_times_the_float16_scale(models, tmp_path):
    dst = tmp_path / "m.gguf"
    quantize(models["bitnet"], dst, layout="q8_0")
    t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.0.ffn_up.weight")
    from safetensors.numpy import load_file

    w = load_file(models["bitnet"] / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    s = np.abs(w).mean(dtype=np.float32)
    codes = np.clip(np.round(w / s), -1, 1)
    expected = codes * np.float32(np.float16(s))
    np.testing.assert_array_equal(gguf.quants.dequantize(t.data, t.tensor_type), expected)


def test_a_relu2_bitnet_warns_that_llama_cpp_runs_silu(tmp_path):
    folder = make_model(tmp_path, "bitnet", hidden_act="relu2")
    dst = tmp_path / "m.gguf"
    with pytest.warns(ryzq.RyzqWarning, match="SiLU"):
        ryzq.quantize_model(folder, dst, layout="tq2_0", tokenizer=False)
    reader = gguf.GGUFReader(dst)
    assert reader.fields["bitnet.hidden_activation"].contents() == "relu2"


def test_models_a_gguf_graph_cannot_hold_are_refused(tmp_path, models):
    config = json.loads((models["llama"] / "config.json").read_text())

    def variant(name, **changes):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").symlink_to(models["llama"] / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return folder

    cases = [
        (
            variant("gpt2", architectures=["GPT2LMHeadModel"], model_type="gpt2"),
            "BitNetForCausalLM",
        ),
        (variant("noeps", rms_norm_eps=None), "rms_norm_eps"),
        (variant("scaled", rope_scaling={"rope_type": "yarn", "factor": 8.0}), "yarn"),
        (variant("layers", num_hidden_layers=1), "num_hidden_layers"),
    ]
    for folder, message in cases:
        with pytest.raises(ryzq.RyzqError, match=message):
            quantize(folder, tmp_path / "out.gguf", layout="tq2_0")
        assert not (tmp_path / "out.gguf").exists()
    untied = make_model(tmp_path / "untied", "llama", tied=False)
    config = json.loads((untied / "config.json").read_text())
    config.update(architectures=["BitNetForCausalLM"], model_type="bitnet")
    (untied / "config.json").write_text(json.dumps(config))
    with pytest.raises(ryzq.RyzqError, match="output head of its own"):
        quantize(untied, tmp_path / "out.gguf", layout="tq2_0")
    with pytest.raises(ryzq.RyzqError, match="options of GGUF outputs"):
        ryzq.quantize_model(models["llama"], tmp_path / "out", fallback="q8_0")
    with pytest.raises(ryzq.RyzqError, match="no GGML type"):
        quantize(models["llama"], tmp_path / "out.gguf", layout="t1")
    assert not list(tmp_path.glob("*.gguf")) and not (tmp_path / "out").exists()


def test_a_dry_run_plans_the_gguf_file(models, tmp_path):
    dst = tmp_path / "m.gguf"
    plan = ryzq.quantize_model(models["llama"], dst, layout="tq2_0", dry_run=True, tokenizer=False)
    assert not dst.exists()
    outputs = {o[0] for t in plan.tensors for o in t.outputs}
    assert "blk.0.attn_q.weight" in outputs and "output.weight" in outputs


TEXTS = [
    "The quick brown fox jumps over the lazy dog. It's 12:45, isn't it?",
    "Ternary weights: -1, 0 and +1; 1.58 bits each.\n\n  Indented\tline",
    "Grüße aus Köln, ça va? 東京 🚀 — ok 1234567",
]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def with_files(folder, dst, files):
    dst.mkdir()
    for p in folder.iterdir():
        (dst / p.name).symlink_to(p)
    for name, write in files.items():
        write(dst / name)
    return dst


def test_llama_cpp_tokenizes_as_the_byte_level_bpe_tokenizer_does(models, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    trainer = trainers.BpeTrainer(
        vocab_size=310,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[bos, eos],
    )
    tok.train_from_iterator(TEXTS * 50, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    config = {"bos_token": bos, "eos_token": eos, "chat_template": "{{ messages }}"}
    folder = with_files(
        models["llama"],
        tmp_path / "m",
        {
            "tokenizer.json": lambda p: p.write_text(tok.to_str()),
            "tokenizer_config.json": lambda p: p.write_text(json.dumps(config)),
        },
    )
    dst = tmp_path / "m.gguf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        ryzq.quantize_model(folder, dst, layout="tq2_0")
    fields = gguf.GGUFReader(dst).fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    assert fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    llm = llama_cpp.Llama(model_path=str(dst), n_ctx=64, verbose=False, vocab_only=True)
    assert llm.token_bos() == tok.token_to_id(bos)
    assert llm.token_eos() == tok.token_to_id(eos)
    for text in TEXTS:
        ids = tok.encode(text).ids
        assert ids[0] == tok.token_to_id(bos)
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids
        assert llm.detokenize(ids[1:]).decode() == text
    llm.close()


def test_llama_cpp_tokenizes_as_the_sentencepiece_model_does(models, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    # One line of ASCII: every character is a piece within the model's 320 rows (llama.cpp
    # aborts on a character a model without byte pieces cannot spell).
    texts = [TEXTS[0], "Ternary weights: -1, 0 and +1; 1.58 bits each."]
    corpus.write_text("\n".join(texts * 50))
    prefix = tmp_path / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=200,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        minloglevel=2,
    )
    model_file = tmp_path / "spm.model"
    folder = with_files(
        models["bitnet"],
        tmp_path / "m",
        {"tokenizer.model": lambda p: p.write_bytes(model_file.read_bytes())},
    )
    dst = tmp_path / "m.gguf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        ryzq.quantize_model(folder, dst, layout="tq1_0")
    assert gguf.GGUFReader(dst).fields["tokenizer.ggml.model"].contents() == "llama"
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    llm = llama_cpp.Llama(model_path=str(dst), n_ctx=64, verbose=False, vocab_only=True)
    for text in texts:
        ids = [sp.bos_id(), *sp.encode(text)]
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids
    llm.close()


def test_a_folder_without_a_tokenizer_is_an_error_unless_asked(models, tmp_path):
    with pytest.raises(ryzq.RyzqError, match=r"tokenizer") as err:
        ryzq.quantize_model(models["llama"], tmp_path / "m.gguf", layout="tq2_0")
    assert not (tmp_path / "m.gguf").exists()
    assert "tokenizer" in str(err.value)


def test_a_bpe_tokenizer_without_bos_and_eos_warns(models, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS * 20, trainer)
    folder = with_files(
        models["llama"], tmp_path / "m", {"tokenizer.json": lambda p: p.write_text(tok.to_str())}
    )
    config = json.loads((folder / "config.json").read_text())
    config.pop("bos_token_id"), config.pop("eos_token_id")
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(ryzq.RyzqWarning, match="no bos or eos token.*token 11"):
        ryzq.quantize_model(folder, tmp_path / "m.gguf", layout="tq2_0")
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "tokenizer.ggml.bos_token_id" not in fields


def packed_by_transformers(master, dst, linear_class):
    """The master model as transformers publishes a packed BitNet checkpoint: its weights
    packed by transformers' pack_weights, each weight_scale in the weights' dtype, and
    config.json with the offline bitnet quantization_config."""
    dst.mkdir()
    pack_weights_file(master, dst, linear_class)
    write_packed_config(master, dst, linear_class)
    return dst


def packed_logits(folder, linear_class):
    """Logits of transformers running the packed folder itself: its BitLinear or AutoBitLinear
    layers unpack the codes and quantize their input to 8 bits per token."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info
    layer = {"bitlinear": BitLinear, "autobitlinear": AutoBitLinear}[linear_class]
    assert isinstance(model.model.layers[0].mlp.down_proj, layer)
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].double().numpy()


@pytest.mark.parametrize(
    "granularity",
    [pytest.param(None, id="default"), "group:256"],
)
@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_a_transformers_packed_model_runs_in_llama_cpp(models, tmp_path, linear_class, granularity):
    """The bitnet model packed by transformers in either convention, carried into TQ2_0.

    Its codes are the absmean codes of the float32 master weights, so ryzq's GGUF of the
    master is the same file: every tensor is byte for byte the same and llama.cpp's logits
    are equal. Against transformers running the master's ternary weights, the bound of
    ``test_ternary_weights_match_transformers_within_activation_rounding``: measured 0.025
    against 0.053. Transformers running the packed folder rounds its activations to 8 bits
    per token (llama.cpp per 256 values: the same blocks for every layer but down_proj's 512
    inputs), itself 0.025 from the master's ternary weights (the transformers reference of the
    bound); the two 8-bit models are within the sum of both distances: measured 0.027 against
    0.078.
    """
    master = models["bitnet"]
    src = packed_by_transformers(master, tmp_path / "packed", linear_class)
    source = load_file(src / "model.safetensors")
    weights = load_file(master / "model.safetensors")
    for name, w in weights.items():
        if name.endswith("_proj.weight"):
            # The ternary weights transformers_logits computes from the master are these.
            s = w.abs().mean().clamp(min=1e-5)
            codes = (w / s).round().clamp(-1, 1)
            assert torch.equal(pack_weights(codes), source[name]), name

    dst = tmp_path / "packed.gguf"
    options = {} if granularity is None else {"granularity": granularity}
    report = quantize(src, dst, layout="tq2_0", **options)
    assert len(report.quantized) == 14
    for t in report.quantized:
        assert t.carried_over, t.name
        stored = source[t.name.removesuffix("weight") + "weight_scale"].item()
        scale = np.float32(1 / np.float32(stored) if linear_class == "bitlinear" else stored)
        # The error of TQ2_0's float16 block scale against the source's scale.
        rounding = abs(float(scale) - float(np.float32(np.float16(scale))))
        assert t.stats.max_abs_error == pytest.approx(rounding, rel=1e-6, abs=1e-12), t.name

    from_master = tmp_path / "master.gguf"
    quantize(master, from_master, layout="tq2_0")
    ours = {t.name: t for t in gguf.GGUFReader(dst).tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(from_master).tensors}
    assert ours.keys() == theirs.keys()
    for name, t in theirs.items():
        assert ours[name].tensor_type == t.tensor_type, name
        np.testing.assert_array_equal(np.asarray(ours[name].data), np.asarray(t.data), name)
    got = llama_cpp_logits(dst)
    np.testing.assert_array_equal(got, llama_cpp_logits(from_master))

    exact = transformers_logits(master, ternary=True)
    rounded = transformers_logits(master, ternary=True, activation_block=ACTIVATION_BLOCK["tq2_0"])
    bound = 2 * relative(rounded, exact) + FLOAT16_GRAPH
    assert relative(got, exact) < bound
    packed = packed_logits(src, linear_class)
    assert relative(got, packed) < bound + relative(packed, exact)


def transformers_packed_logits(folder) -> np.ndarray:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].double().numpy()


@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_a_gguf_file_becomes_a_transformers_checkpoint_again(models, kind, tmp_path):
    """GGUF -> model folder: Hugging Face names, llama's q/k rows in HF's order again, a
    config.json from the file's keys, the codes carried into transformers' packed layout.

    Exactness: that folder written as GGUF again is the same file, tensor for tensor (the
    float16 block scales become float32 weight_scale values and back unchanged). Function:
    transformers loads it and computes what it computes for the folder ryzq packs from the
    master weights directly once that folder's scales are the GGUF's (each absmean rounded
    to float16 and inverted in numpy here): the same logits, bit for bit. A wrong q/k order
    or name is of order 1. (Without rounding those scales the two differ by 0.019:
    transformers' 8-bit activations amplify the 2e-4 scale differences.)"""
    gguf_file = tmp_path / "m.gguf"
    quantize(models[kind], gguf_file, layout="tq2_0", embeddings="f32")
    back = tmp_path / "back"
    with pytest.warns(ryzq.RyzqWarning, match="tokenizer is not written back"):
        report = ryzq.quantize_file(gguf_file, back, layout="bitnet")
    assert sum(t.carried_over is not None for t in report.tensors) == 14
    config = json.loads((back / "config.json").read_text())
    original = json.loads((models[kind] / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        assert config[key] == original[key], key
    assert config["quantization_config"]["quant_method"] == "bitnet"

    again = tmp_path / "again.gguf"
    quantize(back, again, layout="tq2_0", embeddings="f32")
    a, b = gguf.GGUFReader(gguf_file), gguf.GGUFReader(again)
    da = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in a.tensors}
    db = {t.name: bytes(np.asarray(t.data).view(np.uint8).reshape(-1)) for t in b.tensors}
    assert da == db

    direct = tmp_path / "direct"
    ryzq.quantize_model(models[kind], direct, layout="bitnet")
    state = load_numpy(direct / "model.safetensors")
    one = np.float32(1)
    for name in [n for n in state if n.endswith("weight_scale")]:
        # bitlinear stores 1/absmean; GGUF's d is absmean in float16.
        state[name] = one / np.float16(one / state[name]).astype(np.float32)
    save_numpy(state, str(direct / "model.safetensors"), metadata={"format": "pt"})
    assert load_numpy(back / "model.safetensors").keys() == state.keys()
    got, expected = transformers_packed_logits(back), transformers_packed_logits(direct)
    np.testing.assert_array_equal(got, expected)


def test_llama3_rope_scaling_runs_as_transformers_runs_it(tmp_path):
    """llama3's RoPE scaling written as llama.cpp reads it, a rope_freqs.weight tensor of one
    factor per rotary frequency. Its original context of 64 positions puts the 32
    frequencies of a head of 64 in all three of its bands (unscaled, smoothed, scaled by 8),
    so that the first ten positions see it. With float16 weights, llama.cpp and transformers
    then compute the same graph: the bound of test_float16_weights_run_the_same_graph
    (measured 1.0e-3). The same weights with plain RoPE are 0.11 off (asserted above 10x the
    bound): the bound sees a missing or wrong scaling."""
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    folder = make_model(tmp_path, "llama", rope=rope, folder="scaled")
    dst = tmp_path / "scaled.gguf"
    report = quantize(folder, dst, layout="tq2_0", exclude="*_proj.weight")
    assert any(t.name == "rope_freqs.weight" for t in report.tensors)
    reader = gguf.GGUFReader(dst)
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    assert factors.shape == (32,) and factors[0] == 1.0 and factors[-1] == 8.0
    assert ((factors > 1) & (factors < 8)).any()
    expected = transformers_logits(folder, ternary=False)
    error = relative(llama_cpp_logits(dst), expected)
    assert error < FLOAT16_GRAPH
    plain = make_model(tmp_path, "llama", folder="plain")  # the same weights, unscaled RoPE
    quantize(plain, tmp_path / "plain.gguf", layout="tq2_0", exclude="*_proj.weight")
    assert relative(llama_cpp_logits(tmp_path / "plain.gguf"), expected) > 10 * FLOAT16_GRAPH
