"""A real client: transformers loads what quantize_model writes.

A tiny BitNet model with random bf16 master weights is saved with save_pretrained, quantized by
ryzq and loaded with AutoModelForCausalLM. Its logits must equal exactly those of the same
master weights packed by transformers' own WeightQuant math and pack_weights, and match the
master weights run with online quantization within bf16 rounding.

The other way round, a model transformers packed itself is ryzq's source: converted to the
other layer class, kept in its own (byte for byte), dequantized, and read from a file that has
no config.json to say its scale convention.
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
    from transformers.integrations.bitnet import (
        AutoBitLinear,
        BitLinear,
        unpack_weights,
    )

    from transformers_packing import pack_weights_file, write_packed_config
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
    pack_weights_file(master, reference, linear_class)
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


# Packed sources: a model transformers itself packed (``pack_weights_file``), read back
# by ryzq. Its codes are carried over as they are; only a scale changes where the target's
# convention stores the reciprocal.

OTHER_CLASS = {"bitlinear": "autobitlinear", "autobitlinear": "bitlinear"}


def packed_source(master, dst, linear_class):
    """The master model as transformers publishes a packed BitNet checkpoint: the master's
    files, its weights packed by ``pack_weights_file`` and its config.json with the
    offline bitnet quantization_config of ``linear_class``."""
    shutil.copytree(master, dst)
    pack_weights_file(master, dst, linear_class)
    write_packed_config(master, dst, linear_class)
    return dst


def scale_of(weight_scale, linear_class):
    """The float32 scale of the weights, w = code * scale, a stored weight_scale gives:
    BitLinear divides by it, AutoBitLinear multiplies."""
    s = weight_scale.float()
    return 1.0 / s if linear_class == "bitlinear" else s


def same_bytes(a, b):
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    )


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_a_transformers_packed_model_converts_to_the_other_linear_class(
    master, tokens, tmp_path, linear_class
):
    """Packed by transformers in one convention, converted by ryzq to the other: the same
    uint8 codes, and each weight_scale the reciprocal of the source's rounded once to bf16.

    The two layer classes do not compute bit for bit the same (BitLinear multiplies int8
    activations and divides by both scales, AutoBitLinear multiplies dequantized bf16
    activations and then the scale), so the logits cannot be equal to the source's. How far
    apart transformers' own two conventions are on the master weights (both packed by
    ``pack_weights_file``) is their bf16 arithmetic: measured 0.021 relative L2, for
    ryzq's conversion 0.020 (both ways); asserted under twice the former. The source's bytes
    merely read in the other convention (the scale not inverted) are 1.15 apart.
    """
    other = OTHER_CLASS[linear_class]
    src = packed_source(master, tmp_path / "source", linear_class)
    ours = tmp_path / "ryzq"
    report = ryzq.quantize_model(src, ours, layout="bitnet", linear_class=other)
    assert len(report.quantized) == 14
    assert all(t.carried_over for t in report.quantized), [t.name for t in report.quantized]

    source, converted = load_file(src / "model.safetensors"), load_file(ours / "model.safetensors")
    assert converted.keys() == source.keys()
    for name, tensor in source.items():
        if name.endswith("weight_scale"):
            # One rounding: the float32 reciprocal of the stored bf16 value, to bf16.
            expected = (1.0 / tensor.float()).to(torch.bfloat16)
            assert same_bytes(converted[name], expected), name
        else:  # the packed codes and every float tensor, untouched
            assert same_bytes(converted[name], tensor), name

    for t in report.quantized:
        codes = unpack_weights(source[t.name], dtype=torch.float32)
        assert t.stats.counts == {c: int((codes == c).sum()) for c in (-1, 0, 1)}, t.name
        scale_name = t.name.removesuffix("weight") + "weight_scale"
        was = scale_of(source[scale_name], linear_class)
        now = scale_of(converted[scale_name], other)
        # The report's error is that of the stored scale against the source's, float32 on
        # both sides.
        assert t.stats.max_abs_error == pytest.approx((was - now).abs().item(), rel=1e-6)
        assert t.stats.max_abs_error <= 2**-8 * was.item()  # a bf16 rounding, not more

    model, got = logits(ours, tokens)
    assert isinstance(model.model.layers[0].mlp.down_proj, LAYER_CLASS[other])
    _, expected = logits(src, tokens)
    direct = tmp_path / "direct"
    packed_source(master, direct, other)
    _, transformers_other = logits(direct, tokens)
    bound = 2 * relative_error(transformers_other, expected)
    assert relative_error(got, expected) < bound

    # The bound tells the conventions apart: the source's bytes read as the other class.
    unconverted = tmp_path / "unconverted"
    shutil.copytree(src, unconverted)
    config = json.loads((unconverted / "config.json").read_text())
    config["quantization_config"]["linear_class"] = other
    (unconverted / "config.json").write_text(json.dumps(config))
    _, wrong = logits(unconverted, tokens)
    assert relative_error(wrong, expected) > 10 * bound


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_a_transformers_packed_model_in_its_own_class_comes_back_byte_for_byte(
    master, tmp_path, linear_class
):
    src = packed_source(master, tmp_path / "source", linear_class)
    ours = tmp_path / "ryzq"
    report = ryzq.quantize_model(src, ours, layout="bitnet", linear_class=linear_class)
    assert len(report.quantized) == 14
    for t in report.quantized:
        assert t.carried_over, t.name
        # The same scale stored in the same type: no error at all.
        assert t.stats.sse == 0 and t.stats.max_abs_error == 0, t.name
    source, converted = load_file(src / "model.safetensors"), load_file(ours / "model.safetensors")
    assert converted.keys() == source.keys()
    for name, tensor in source.items():
        assert same_bytes(converted[name], tensor), name
    qc = json.loads((ours / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["linear_class"]) == ("bitnet", linear_class)


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_dequantizing_a_transformers_packed_model_gives_codes_times_scale(
    master, tmp_path, linear_class
):
    src = packed_source(master, tmp_path / "source", linear_class)
    dst = tmp_path / "float"
    assert ryzq.dequantize_model(src, dst) == 14
    source, weights = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    assert weights.keys() == {n for n in source if not n.endswith("weight_scale")}
    for name, tensor in weights.items():
        if source[name].dtype != torch.uint8:
            assert same_bytes(tensor, source[name]), name
            continue
        codes = unpack_weights(source[name], dtype=torch.float32)
        scale = scale_of(source[name.removesuffix("weight") + "weight_scale"], linear_class)
        # In the dtype the scale was stored in: the model's bf16.
        expected = (codes * scale).to(torch.bfloat16)
        assert same_bytes(tensor, expected), name
    config = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in config
    master_config = json.loads((master / "config.json").read_text())
    assert config == master_config


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_a_packed_file_without_config_needs_source_linear_class(master, tmp_path, linear_class):
    """One safetensors file holds no config.json: nothing says whether its weight_scale is
    divided by or multiplied with, and guessing wrong scales every weight by absmean^-2."""
    src = packed_source(master, tmp_path / "source", linear_class)
    packed = tmp_path / "packed.safetensors"
    shutil.copy(src / "model.safetensors", packed)
    dst = tmp_path / "out.safetensors"
    other = OTHER_CLASS[linear_class]
    with pytest.raises(ryzq.RyzqError, match="source_linear_class"):
        ryzq.quantize_file(packed, dst, linear_class=other)
    assert not dst.exists()
    with pytest.raises(ryzq.RyzqError, match="source_linear_class"):
        ryzq.dequantize_file(packed, tmp_path / "float.safetensors")
    assert not (tmp_path / "float.safetensors").exists()

    report = ryzq.quantize_file(packed, dst, linear_class=other, source_linear_class=linear_class)
    assert len(report.quantized) == 14 and all(t.carried_over for t in report.quantized)
    # The same as the folder whose config.json says the convention.
    folder = tmp_path / "folder"
    ryzq.quantize_model(src, folder, layout="bitnet", linear_class=other)
    expected, got = load_file(folder / "model.safetensors"), load_file(dst)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert same_bytes(got[name], tensor), name

    float_file = tmp_path / "float.safetensors"
    assert ryzq.dequantize_file(packed, float_file, source_linear_class=linear_class) == 14
    ryzq.dequantize_model(src, tmp_path / "float")
    expected, got = load_file(tmp_path / "float" / "model.safetensors"), load_file(float_file)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert same_bytes(got[name], tensor), name
