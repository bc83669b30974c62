"""The model card every model-folder output gets: parsed back by huggingface_hub's ModelCard."""

import json

import pytest
from huggingface_hub import ModelCard

import ryzq
from checkpoints import make_folder
from ryzq.cli import main
from ryzq.model_card import render_card, split_card

SOURCE_CARD = """---
license: apache-2.0
language:
- en
- fr
tags:
- original-tag
pipeline_tag: text-generation
---

# The source model

Trained on public data. Cite it as follows.
"""


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 2)
    config = json.loads((src / "config.json").read_text())
    config["_name_or_path"] = "some-org/BitNet-tiny"
    (src / "config.json").write_text(json.dumps(config))
    (src / "README.md").write_text(SOURCE_CARD)
    return src


def test_a_folder_output_gets_a_card_the_hub_reads(source, tmp_path):
    dst = tmp_path / "dst"
    report = ryzq.quantize_model(source, dst)
    card = ModelCard.load(dst / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "some-org/BitNet-tiny"
    assert data["base_model_relation"] == "quantized"
    assert data["library_name"] == "transformers"
    assert data["tags"] == ["bitnet", "ternary", "ryzq"]
    # What holds for the converted model too is carried; the source's own tags are not.
    assert data["license"] == "apache-2.0"
    assert data["language"] == ["en", "fr"]
    assert data["pipeline_tag"] == "text-generation"
    text = card.text
    summary = report.to_dict()["summary"]
    assert f"{summary['quantized_tensors']} of {summary['tensors']} tensors" in text
    assert f"NMSE pooled {summary['pooled_nmse']:.4f}" in text
    assert f"ryzq {ryzq.__version__}" in text
    assert "bitlinear (1/scale in weight_scale, which the layer divides by)" in text
    for layer in (g for g in report.layers if g.quantized):
        assert f"| {layer.block} | {layer.quantized}/{layer.tensors} |" in text
    assert 'from_pretrained("some-org/BitNet-tiny-bitnet")' in text
    # The source's card, whole, after the new one.
    assert text.rstrip().endswith(split_card(SOURCE_CARD)[1].strip())
    assert not list(dst.glob(".*tmp"))


def test_a_layout_transformers_cannot_load_says_how_to_read_it(source, tmp_path):
    dst = tmp_path / "dst"
    ryzq.quantize_model(source, dst, layout="t1")
    card = ModelCard.load(dst / "README.md")
    assert "library_name" not in card.data.to_dict()
    assert card.data.tags == ["bitnet", "ternary", "ryzq", "t1"]
    assert "ryzq dequantize some-org/BitNet-tiny-t1 float-weights/" in card.text


def test_no_model_card_copies_the_source_s_card(source, tmp_path):
    dst = tmp_path / "dst"
    ryzq.quantize_model(source, dst, model_card=False)
    assert (dst / "README.md").read_text() == SOURCE_CARD
    dst2 = tmp_path / "dst2"
    assert main(["quantize", str(source), str(dst2), "--no-model-card", "--quiet"]) == 0
    assert (dst2 / "README.md").read_text() == SOURCE_CARD


def test_a_source_without_card_or_repository(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_folder(src, 1)
    ryzq.quantize_model(src, dst)
    card = ModelCard.load(dst / "README.md")
    assert "base_model" not in card.data.to_dict()
    assert card.text.splitlines()[1] == "# src, ternary (bitnet)"
    assert "The source model's card" not in card.text


def test_no_model_card_is_for_model_folders(source, tmp_path, capsys):
    src = tmp_path / "m.safetensors"
    (source / "model-00001-of-00002.safetensors").rename(src)
    assert main(["quantize", str(src), str(tmp_path / "q.safetensors"), "--no-model-card"]) == 2
    assert "--no-model-card is for model folders" in capsys.readouterr().err


def test_the_evaluation_goes_into_the_card():
    report = {
        "src": "m",
        "layout": "tq2_0",
        "method": "absmean",
        "granularity": "tensor",
        "linear_class": None,
        "summary": {
            "tensors": 3,
            "quantized_tensors": 1,
            "parameters": 10,
            "quantized_parameters": 8,
            "bytes_in": 40,
            "bytes_out": 12,
            "compression_ratio": 3.3,
            "pooled_nmse": 0.1,
            "nmse": {"mean": 0.1, "max": 0.1},
        },
        "layers": [],
    }
    evaluation = {
        "reference": "master",
        "runners": {"reference": "transformers", "candidate": "llama.cpp"},
        "input": {"kind": "text", "source": "built-in sample", "seed": None},
        "tokens": 1024,
        "summary": {
            "kl_mean": 0.0123,
            "kl_max": 0.5,
            "top1_agreement": 0.934,
            "reference_perplexity": 12.5,
            "candidate_perplexity": 13.25,
        },
    }
    text = render_card(report, evaluation=evaluation)
    card = ModelCard(text)
    assert "on 1,024 tokens of the built-in sample" in card.text
    assert "| top-1 agreement | 93.4% |" in card.text
    assert "| perplexity, reference / this | 12.5 / 13.25 |" in card.text


def test_a_source_card_that_is_not_utf8_is_kept(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_folder(src, 1)
    (src / "README.md").write_bytes("---\nlicense: mit\n---\n# Modèle source\n".encode("latin-1"))
    ryzq.quantize_model(src, dst)
    card = ModelCard.load(dst / "README.md")
    assert card.data.license == "mit"
    assert card.text.rstrip().endswith("# Mod\ufffdle source")


@pytest.mark.parametrize(
    "source_card",
    ["\ufeff" + SOURCE_CARD, SOURCE_CARD.replace("\n", "\r\n")],
    ids=["byte-order mark", "CRLF"],
)
def test_a_source_card_as_editors_write_it_keeps_its_license(source_card):
    front, body = split_card(source_card)
    assert front.splitlines()[0] == "license: apache-2.0"
    assert body.strip().startswith("# The source model")


def test_empty_front_matter_is_front_matter():
    assert split_card("---\n---\n# Title\n") == ("", "# Title\n")
