"""Hostile sources that must be one RyzqError (naming the file and the tensor, nothing written)
or convert correctly: ryzq metadata that contradicts the file, scales that become 0 or inf in
the target, llama3 RoPE scaling that overflows rope_freqs, a GGUF file's RoPE scaling lost on
the way back to a model folder, and dry runs that pass what the conversion refuses."""

import json
import os
import warnings

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

try:
    import gguf
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs gguf-py", allow_module_level=True)

import ryzq
from checkpoints import write

W = "model.layers.0.mlp.up_proj.weight"
SCALE = "model.layers.0.mlp.up_proj.weight_scale"
OTHER = "model.layers.0.mlp.gate_proj.weight"


def ryzq_file(tmp_path, layout, edit_metadata=None, edit_tensors=None):
    """A file ryzq wrote in ``layout`` (two quantized weights and a norm), its ryzq metadata
    and tensors then edited as given."""
    rng = np.random.default_rng(0)
    state = {
        W: rng.normal(0, 0.02, (8, 256)).astype(np.float32),
        OTHER: rng.normal(0, 0.02, (8, 256)).astype(np.float32),
        "model.norm.weight": np.ones(256, np.float32),
    }
    plain = write(tmp_path / "plain.safetensors", state)
    packed = tmp_path / f"{layout}.safetensors"
    ryzq.quantize_file(plain, packed, layout=layout)
    tensors = load_file(packed)
    with safe_open(str(packed), "np") as f:
        metadata = f.metadata()
    description = json.loads(metadata["ryzq"])
    if edit_metadata:
        edit_metadata(description)
    if edit_tensors:
        edit_tensors(tensors)
    metadata["ryzq"] = json.dumps(description)
    return write(tmp_path / "edited.safetensors", tensors, metadata), state


def outputs(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))


# An infinite scale is refused into every layout: into bitlinear's reciprocal it would become
# a weight_scale of 0, which the layer divides by.
def test_an_infinite_scale_is_refused_into_the_bitnet_layout_too(tmp_path):
    src, _ = ryzq_file(
        tmp_path, "t1", edit_tensors=lambda t: t.__setitem__(SCALE, np.full(1, np.inf, np.float32))
    )
    with pytest.raises(ryzq.RyzqError, match="inf") as refused:
        ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="bitnet")
    assert "edited.safetensors" in str(refused.value) and W in str(refused.value)
    assert outputs(tmp_path) == []


@pytest.mark.parametrize("layout", ["t1", "bitnet"])
def test_metadata_naming_a_weight_as_its_own_scale_is_refused(tmp_path, layout):
    # A weight named as its own scale would be dropped as a scale, or its packed bytes copied
    # with nothing left to read them.
    src, _ = ryzq_file(tmp_path, layout, lambda d: d["quantized"][W].__setitem__("scale", W))
    with pytest.raises(ryzq.RyzqError) as refused:
        ryzq.dequantize_file(src, tmp_path / "out.safetensors")
    assert W in str(refused.value)
    with pytest.raises(ryzq.RyzqError) as refused:
        ryzq.quantize_file(src, tmp_path / "out.t1.safetensors", layout="t1")
    assert W in str(refused.value)
    assert outputs(tmp_path) == []


@pytest.mark.parametrize("missing", ["ghost entry", "weight removed"])
def test_metadata_naming_a_tensor_the_file_lacks_is_refused(tmp_path, missing):
    # A description of a tensor the file does not hold says the file is not what ryzq wrote;
    # ignoring it would also drop the weight's scale from the output.
    if missing == "ghost entry":
        src, _ = ryzq_file(
            tmp_path,
            "t1",
            lambda d: d["quantized"].__setitem__("ghost.weight", dict(d["quantized"][W])),
        )
        name = "ghost.weight"
    else:
        src, _ = ryzq_file(tmp_path, "t1", edit_tensors=lambda t: t.pop(W))
        name = W
    with pytest.raises(ryzq.RyzqError) as refused:
        ryzq.dequantize_file(src, tmp_path / "out.safetensors")
    assert name in str(refused.value) and "edited.safetensors" in str(refused.value)
    with pytest.raises(ryzq.RyzqError):
        ryzq.quantize_file(src, tmp_path / "out.t1.safetensors", layout="t1")
    assert outputs(tmp_path) == []


def test_a_bitnet_shape_that_contradicts_the_stored_packed_shape_is_refused(tmp_path):
    # A bitnet-layout weight is stored [out/4, in]: [2, 256] for [8, 256]. Metadata saying
    # [256, 8] (packed [64, 8], the same byte count) would read its rows reshuffled.
    src, _ = ryzq_file(
        tmp_path, "bitnet", lambda d: d["quantized"][W].__setitem__("shape", [256, 8])
    )
    with pytest.raises(ryzq.RyzqError, match=r"\[2, 256\]|\[64, 8\]") as refused:
        ryzq.dequantize_file(src, tmp_path / "out.safetensors")
    assert W in str(refused.value)
    assert outputs(tmp_path) == []


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def llama3_folder(tmp_path, rope_scaling):
    from test_gguf_model import llama_folder

    src, _ = llama_folder(tmp_path / "m", rope_scaling=rope_scaling, max_position_embeddings=131072)
    return src


def test_a_rope_factor_that_overflows_rope_freqs_is_refused(tmp_path):
    # A factor of 1e300 is a positive number, but float32 rope_freqs cannot hold it.
    src = llama3_folder(tmp_path, {**LLAMA3, "factor": 1e300})
    with pytest.raises(ryzq.RyzqError, match="factor"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        ryzq.quantize_model(src, tmp_path / "m.gguf", layout="tq2_0", tokenizer=False)
    assert not (tmp_path / "m.gguf").exists()


def test_a_gguf_file_whose_rope_scaling_config_json_cannot_keep_is_not_a_model_folder(tmp_path):
    # Folder (llama3 RoPE scaling) -> GGUF (rope_freqs.weight) -> folder: config.json would
    # have no rope_scaling, so transformers would run the model with unscaled RoPE. A
    # safetensors file keeps the tensor.
    src = llama3_folder(tmp_path, LLAMA3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        ryzq.quantize_model(src, tmp_path / "m.gguf", layout="tq2_0", tokenizer=False)
    for convert in (
        lambda dst: ryzq.quantize_file(tmp_path / "m.gguf", dst, layout="bitnet"),
        lambda dst: ryzq.dequantize_file(tmp_path / "m.gguf", dst),
    ):
        with pytest.raises(ryzq.RyzqError, match=r"rope_freqs\.weight") as refused:
            convert(tmp_path / "back")
        assert "m.gguf" in str(refused.value)
        assert not (tmp_path / "back").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ryzq.RyzqWarning)
        ryzq.quantize_file(tmp_path / "m.gguf", tmp_path / "back.safetensors", layout="bitnet")
    assert "rope_freqs.weight" in load_file(tmp_path / "back.safetensors")


def test_a_dry_run_of_a_gguf_file_refuses_what_the_conversion_refuses(tmp_path):
    # head_count 3 does not split attn_q's rows for llama's permutation: the plan refuses
    # it, so a dry run says so too.
    from test_gguf_model import llama_folder, to_gguf

    src, _ = llama_folder(tmp_path / "m")
    to_gguf(src, tmp_path / "m.gguf", layout="tq2_0")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    writer = gguf.GGUFWriter(tmp_path / "bad.gguf", "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = 3 if name == "llama.attention.head_count" else field.contents()
        writer.add_key_value(name, value, field.types[0])
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, data)
        else:
            raw = data.view(np.uint8)
            writer.add_tensor(t.name, raw, raw_shape=raw.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ryzq.RyzqError, match="heads"):
        ryzq.quantize_file(tmp_path / "bad.gguf", tmp_path / "out", layout="t1")
    with pytest.raises(ryzq.RyzqError, match="heads"):
        ryzq.quantize_file(tmp_path / "bad.gguf", tmp_path / "out", layout="t1", dry_run=True)
    assert not (tmp_path / "out").exists()
