"""A real client: transformers loads what quantize_model writes.

A tiny BitNet model with random bf16 master weights is saved with save_pretrained, quantized by
ryzq and loaded with AutoModelForCausalLM. Its logits must equal exactly those of the same
master weights packed by transformers' own WeightQuant math and pack_weights, and match the
master weights run with online quantization within bf16 rounding.
"""

import json
import os
import shutil

import pytest

# Eager mode: the same arithmetic as compiled, without compiling kernels in the test run.
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

try:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear, pack_weights
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs torch, transformers and accelerate", allow_module_level=True)

import ryzq

LAYER_CLASS = {"bitlinear": BitLinear, "autobitlinear": AutoBitLinear}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    root = tmp_path_factory.mktemp("master")
    config = transformers.BitNetConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.BitNetForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))


def logits(path, tokens):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, output_loading_info=True
    )
    assert not any(info.values()), info
    with torch.no_grad():
        return model, model(tokens).logits


def packed_by_transformers(master, dst, linear_class):
    """The master weights quantized with transformers' WeightQuant math and pack_weights."""
    state = {}
    for name, w in load_file(master / "model.safetensors").items():
        if not name.endswith("_proj.weight"):
            state[name] = w
            continue
        scale = 1.0 / w.float().abs().mean().clamp_(min=1e-5)
        codes = (w.float() * scale).round().clamp(-1, 1)
        state[name] = pack_weights(codes)
        weight_scale = scale if linear_class == "bitlinear" else 1.0 / scale
        state[name.removesuffix("weight") + "weight_scale"] = weight_scale.reshape(1).to(
            torch.bfloat16
        )
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_transformers_loads_ryzq_output(master, tokens, tmp_path, linear_class):
    ours = tmp_path / "ryzq"
    report = ryzq.quantize_model(master, ours, linear_class=linear_class)
    assert len(report.quantized) == 14  # 7 projections in each of 2 layers

    model, got = logits(ours, tokens)
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, LAYER_CLASS[linear_class])
    if linear_class == "autobitlinear":
        assert not layer.online_quant

    reference = tmp_path / "transformers"
    shutil.copytree(ours, reference)
    packed_by_transformers(master, reference, linear_class)
    _, expected = logits(reference, tokens)
    assert torch.equal(got, expected)

    online = tmp_path / "online"
    shutil.copytree(master, online)
    config = json.loads((online / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
    }
    (online / "config.json").write_text(json.dumps(config))
    online_model, online_logits = logits(online, tokens)
    assert online_model.model.layers[0].self_attn.q_proj.online_quant
    scale = online_logits.float().abs().max().item()
    difference = (got.float() - online_logits.float()).abs().max().item()
    # bf16 has 8 significant bits: a few roundings of activations and scales apart.
    assert difference <= 0.05 * scale, (difference, scale)


def online_config(folder):
    """Turn a master-weight folder into one transformers quantizes itself (online), the
    reference for the model's own output."""
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
    }
    (folder / "config.json").write_text(json.dumps(config))


def relative_error(got, expected):
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
@pytest.mark.parametrize("tied", [True, False])
def test_tied_and_untied_heads_load(tmp_path, tokens, linear_class, tied):
    config = transformers.BitNetConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(2)
    model = transformers.BitNetForCausalLM(config).to(torch.bfloat16)
    master = tmp_path / "master"
    model.save_pretrained(master)
    assert ("lm_head.weight" in load_file(master / "model.safetensors")) == (not tied)
    ours = tmp_path / "ryzq"
    ryzq.quantize_model(master, ours, linear_class=linear_class)
    qc = json.loads((ours / "config.json").read_text())["quantization_config"]
    assert "lm_head" in qc["modules_to_not_convert"]
    loaded, got = logits(ours, tokens)
    assert isinstance(loaded.lm_head, torch.nn.Linear)
    assert not isinstance(loaded.lm_head, (BitLinear, AutoBitLinear))
    if tied:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    online = tmp_path / "online"
    shutil.copytree(master, online)
    online_config(online)
    _, expected = logits(online, tokens)
    # The same ternary weights, in bf16: a few roundings apart (see the test above).
    assert relative_error(got, expected) < 0.02


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_biases_give_the_master_models_output(tmp_path, tokens, linear_class):
    """A Llama with biases in attention and MLP: AutoBitLinear multiplies its output, bias
    included, by weight_scale, so ryzq stores bias / weight_scale; BitLinear adds the bias
    after its scaling. Both must compute what the master weights quantized online compute."""
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
    )
    torch.manual_seed(3)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_proj.bias"):
                # Biases as large as the layer's output, so that a wrong one shows.
                p.normal_(0.0, 0.5)
    master = tmp_path / "master"
    model.save_pretrained(master)
    state = load_file(master / "model.safetensors")
    assert sum(n.endswith("_proj.bias") for n in state) == 14
    ours = tmp_path / "ryzq"
    report = ryzq.quantize_model(master, ours, linear_class=linear_class)
    assert len(report.quantized) == 14
    _, got = logits_f32(ours, tokens)
    online = tmp_path / "online"
    shutil.copytree(master, online)
    online_config(online)
    _, expected = logits_f32(online, tokens)
    # float32 throughout: the two differ only by the order of float32 operations.
    assert relative_error(got, expected) < 1e-4
    # And the bias matters here: without it the output is far off.
    unbiased = tmp_path / "unbiased"
    shutil.copytree(online, unbiased)
    state = {k: (torch.zeros_like(v) if k.endswith("_proj.bias") else v) for k, v in state.items()}
    save_file(state, str(unbiased / "model.safetensors"), metadata={"format": "pt"})
    _, without = logits_f32(unbiased, tokens)
    assert relative_error(without, expected) > 0.1


def logits_f32(path, tokens):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info
    with torch.no_grad():
        return model, model(tokens).logits
