"""The report: per-layer grouping, and a summary that reads right in every case."""

import numpy as np
import pytest

import ryzq
from checkpoints import tiny_model, write
from ryzq.report import block_of, display_width


def test_towers_that_number_blocks_alike_stay_apart(tmp_path):
    rng = np.random.default_rng(0)
    names = [
        "vision_tower.encoder.layers.0.mlp.fc1.weight",
        "vision_tower.encoder.layers.1.mlp.fc1.weight",
        "language_model.model.layers.0.mlp.up_proj.weight",
        "language_model.model.layers.1.mlp.up_proj.weight",
    ]
    state = {
        n: (rng.standard_normal((8, 32)) * (i + 1)).astype(np.float32) for i, n in enumerate(names)
    }
    report = ryzq.quantize_file(
        write(tmp_path / "m.safetensors", state), tmp_path / "o.safetensors"
    )
    blocks = [g.block for g in report.layers]
    # Towers in the order the file holds them, each one's blocks by index.
    assert blocks in (
        [
            *(f"vision_tower.encoder.layers.{i}" for i in (0, 1)),
            *(f"language_model.model.layers.{i}" for i in (0, 1)),
        ],
        [
            *(f"language_model.model.layers.{i}" for i in (0, 1)),
            *(f"vision_tower.encoder.layers.{i}" for i in (0, 1)),
        ],
    )
    assert all(g.quantized == 1 for g in report.layers)
    summary = report.summary()
    for block in blocks:
        assert block in summary
    assert [g["block"] for g in report.to_dict()["layers"]] == blocks


def test_block_of_a_name():
    assert block_of("model.layers.12.mlp.up_proj.weight") == ("model.layers", 12)
    assert block_of("transformer.h.3.attn.c_attn.weight") == ("transformer.h", 3)
    assert block_of("layers.0.attention.wq.weight") == ("layers", 0)
    assert block_of("model.embed_tokens.weight") is None


def test_one_tensor_one_thread_and_nothing_quantized_read_right(tmp_path):
    src = write(tmp_path / "one.safetensors", {"model.norm.weight": np.ones(8, np.float32)})
    report = ryzq.quantize_file(src, tmp_path / "o.safetensors", threads=1)
    summary = report.summary()
    assert "1 thread\n" in summary and "1 threads" not in summary
    assert "1 tensor (0 quantized, 1 kept)" in summary and "1 tensors" not in summary
    assert "no tensor quantized" in summary and "nan" not in summary
    assert report.to_dict()["summary"]["quantized_compression_ratio"] is None


def test_sizes_are_in_the_units_of_the_rates(tmp_path):
    state = {"model.layers.0.mlp.up_proj.weight": np.ones((512, 512), np.float32)}
    report = ryzq.quantize_file(
        write(tmp_path / "m.safetensors", state), tmp_path / "o.safetensors"
    )
    summary = report.summary()
    assert "1.05 MB ->" in summary and "GB/s" in summary and "iB" not in summary


def test_display_width_counts_wide_characters_twice():
    assert display_width("layers") == 6
    assert display_width("层.权重") == 7


def test_the_outermost_numbered_block_is_the_layer():
    # T5 numbers its sub-layers inside each block: the block is the layer.
    assert block_of("encoder.block.3.layer.1.DenseReluDense.wi.weight") == ("encoder.block", 3)
    assert block_of("decoder.block.0.layer.2.DenseReluDense.wo.weight") == ("decoder.block", 0)


def test_a_report_is_read_only(tmp_path):
    src = write(tmp_path / "m.safetensors", tiny_model())
    report = ryzq.quantize_file(src, tmp_path / "o.safetensors")
    tensor = report.quantized[0]
    for obj, name in [
        (report, "tensors"),
        (report, "seconds"),
        (tensor, "name"),
        (tensor.stats, "sse"),
    ]:
        with pytest.raises(AttributeError):
            setattr(obj, name, getattr(obj, name))
    # Equal by value: each reading of `tensors` gives new objects.
    assert report.tensors == report.tensors


def test_stats_are_rebuilt_from_their_repr_and_count_every_code():
    stats = ryzq.quantize(np.linspace(-1, 1, 64, dtype=np.float32)).stats
    assert eval(repr(stats), {"QuantizationStats": ryzq.QuantizationStats}) == stats
    for counts in ({-1: 1, 0: 2}, {-1: 1, 0: 2, 1: 3, 2: 4}, {-1: 1, 0: 2, 2: 3}):
        with pytest.raises(ryzq.RyzqError, match="counts"):
            ryzq.QuantizationStats(6, 0.0, 1.0, 0.0, counts)
