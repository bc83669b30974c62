"""Bad checkpoints and destinations: a RyzqError naming the file (and tensor), nothing written."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import ryzq
from checkpoints import digest, raw_file, tiny_model, write

W = "model.layers.0.mlp.up_proj.weight"


def valid(tmp_path):
    return write(tmp_path / "in.safetensors", tiny_model("F32"))


def truncated(tmp_path):
    path = valid(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    return path, "the file is truncated"


def shorter_than_a_header(tmp_path):
    path = tmp_path / "in.safetensors"
    path.write_bytes(b"\x10\x00")
    return path, "truncated file: 2 bytes"


def header_past_end(tmp_path):
    header = {W: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    return raw_file(tmp_path / "in.safetensors", header, bytes(16), length=10**6), (
        "header length 1000000 runs past the end of the file"
    )


def header_not_json(tmp_path):
    return raw_file(tmp_path / "in.safetensors", b"{not json}      ", b""), "not valid JSON"


def header_too_large(tmp_path):
    return raw_file(tmp_path / "in.safetensors", b"{}", b"", length=200_000_000), (
        "over the format's limit"
    )


def offsets_out_of_bounds(tmp_path):
    header = {W: {"dtype": "F32", "shape": [16, 16], "data_offsets": [0, 1024]}}
    return raw_file(tmp_path / "in.safetensors", header, bytes(64)), (
        f'tensor "{W}": data_offsets [0, 1024] run past the end of the data (64 bytes)'
    )


def offsets_overlap(tmp_path):
    header = {
        "a.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b.weight": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    return raw_file(tmp_path / "in.safetensors", header, bytes(24)), (
        'tensor "b.weight": data_offsets [8, 24] overlap'
    )


def offsets_do_not_match_shape(tmp_path):
    header = {W: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}
    return raw_file(tmp_path / "in.safetensors", header, bytes(12)), (
        f'tensor "{W}": data_offsets [0, 12] hold 12 bytes, but F32 of shape [2, 2] needs 16'
    )


def unknown_dtype(tmp_path):
    header = {W: {"dtype": "F99", "shape": [2, 2], "data_offsets": [0, 16]}}
    return raw_file(tmp_path / "in.safetensors", header, bytes(16)), (
        f'tensor "{W}": unknown dtype "F99"'
    )


def zero_size_weight(tmp_path):
    state = tiny_model("F32")
    state[W] = np.zeros((0, 32), np.float32)
    return write(tmp_path / "in.safetensors", state), f'tensor "{W}": shape [0, 32] has no elements'


def nan_weight(tmp_path):
    state = tiny_model("F32")
    state[W][3, 7] = np.nan
    state[W][5, 1] = np.inf
    return write(tmp_path / "in.safetensors", state), (
        f'tensor "{W}": 2 non-finite values (NaN or infinity) in the weights; the first is NaN '
        "at index (3, 7)"
    )


CASES = [
    truncated,
    shorter_than_a_header,
    header_past_end,
    header_not_json,
    header_too_large,
    offsets_out_of_bounds,
    offsets_overlap,
    offsets_do_not_match_shape,
    unknown_dtype,
    zero_size_weight,
    nan_weight,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_checkpoint(tmp_path, case):
    src, message = case(tmp_path)
    before = digest(src)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ryzq.RyzqError) as err:
        ryzq.quantize_file(src, dst)
    text = str(err.value)
    assert text.startswith(str(src)), text
    assert message.lower() in text.lower(), text
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
    assert digest(src) == before


def test_an_existing_destination_is_untouched_on_error(tmp_path):
    src, _ = nan_weight(tmp_path)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"precious")
    with pytest.raises(ryzq.RyzqError):
        ryzq.quantize_file(src, dst)
    assert dst.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors", "out.safetensors"]


def test_missing_destination_folder(tmp_path):
    src = valid(tmp_path)
    dst = tmp_path / "no" / "such" / "out.safetensors"
    with pytest.raises(ryzq.RyzqError, match="does not exist"):
        ryzq.quantize_file(src, dst)
    assert not (tmp_path / "no").exists()


def test_unwritable_destination(tmp_path):
    src = valid(tmp_path)
    dst = tmp_path / "a_folder"
    dst.mkdir()
    with pytest.raises(ryzq.RyzqError, match=str(dst)):
        ryzq.quantize_file(src, dst)
    assert dst.is_dir() and not any(dst.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "in.safetensors"]


def test_destination_equal_to_source_is_refused(tmp_path):
    src = valid(tmp_path)
    before = digest(src)
    link = tmp_path / "link.safetensors"
    os.symlink(src, link)
    for dst in (src, link, Path(tmp_path / "." / "in.safetensors")):
        with pytest.raises(ryzq.RyzqError, match="would overwrite the input"):
            ryzq.quantize_file(src, dst)
        with pytest.raises(ryzq.RyzqError, match="would overwrite the input"):
            ryzq.dequantize_file(src, dst)
    assert digest(src) == before


def test_missing_source(tmp_path):
    with pytest.raises(ryzq.RyzqError, match="No such file"):
        ryzq.quantize_file(tmp_path / "nope.safetensors", tmp_path / "out.safetensors")


def test_dequantize_needs_ryzq_metadata(tmp_path):
    src = valid(tmp_path)
    with pytest.raises(ryzq.RyzqError, match="not written by ryzq"):
        ryzq.dequantize_file(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_bad_glob_pattern(tmp_path):
    with pytest.raises(ryzq.RyzqError, match="bad glob pattern"):
        ryzq.quantize_file(valid(tmp_path), tmp_path / "o.safetensors", include="[")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"include": 3}, "glob pattern must be a string.*got 3"),
        (
            {"exclude": ["*.bias", None]},
            "glob pattern must be a string.*got \\['\\*.bias', None\\]",
        ),
        ({"copy_also": "*.txt"}, "copy_also names files of a model folder"),
        ({"layout": "i3"}, "unknown layout"),
    ],
)
def test_bad_keywords_are_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(ryzq.RyzqError, match=message):
        ryzq.quantize_file(valid(tmp_path), tmp_path / "o.safetensors", **options)
    assert not (tmp_path / "o.safetensors").exists()


def test_an_unknown_keyword_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="lay_out"):
        ryzq.quantize_model(tmp_path, tmp_path / "out", lay_out="i2")


def test_a_scale_the_output_cannot_hold_names_the_tensor(tmp_path):
    state = tiny_model("F32", hidden=256)
    state["model.layers.1.mlp.up_proj.weight"] *= 1e8
    src = write(tmp_path / "in.safetensors", state)
    with pytest.raises(
        ryzq.RyzqError,
        match=r'in\.safetensors: tensor "model\.layers\.1\.mlp\.up_proj\.weight": .*float16',
    ):
        ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="tq2_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def test_a_weight_scale_that_overflows_float16_suggests_autobitlinear(tmp_path):
    state = tiny_model("F16")
    state["model.layers.0.self_attn.v_proj.weight"][:] = 0  # 1/absmean = 1e5 > 65504
    src = write(tmp_path / "in.safetensors", state)
    with pytest.raises(
        ryzq.RyzqError, match=r'v_proj\.weight".*float16 weight_scale.*autobitlinear'
    ):
        ryzq.quantize_file(src, tmp_path / "out.safetensors")
    report = ryzq.quantize_file(src, tmp_path / "out.safetensors", linear_class="autobitlinear")
    assert len(report.quantized) == 14


def test_unreadable_ryzq_metadata_is_a_ryzq_error(tmp_path):
    state = {"a.weight": np.zeros((8, 32), np.uint8)}
    bad = write(tmp_path / "bad.safetensors", state, metadata={"format": "pt", "ryzq": "{nope"})
    with pytest.raises(ryzq.RyzqError, match=r"bad\.safetensors: unreadable ryzq metadata"):
        ryzq.dequantize_file(bad, tmp_path / "out.safetensors")
    result = run_cli("inspect", bad)
    assert result.returncode == 2
    assert result.stderr.startswith("ryzq: error:") and "unreadable ryzq metadata" in result.stderr
    assert result.stderr.count("\n") == 1


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ryzq", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("case", "kind", "tensor"),
    [
        (truncated, "truncated", "model.norm.weight"),
        (header_past_end, "truncated", None),
        (offsets_overlap, "bad_format", "b.weight"),
        (nan_weight, "non_finite", W),
    ],
)
def test_errors_say_their_kind_file_and_tensor(tmp_path, case, kind, tensor):
    src, _ = case(tmp_path)
    with pytest.raises(ryzq.RyzqError) as caught:
        ryzq.quantize_file(src, tmp_path / "out.safetensors")
    assert caught.value.kind == kind
    assert caught.value.path == str(src)
    assert caught.value.tensor == tensor


def test_an_index_naming_a_file_outside_the_folder_is_unsafe(tmp_path):
    import json

    src = tmp_path / "src"
    src.mkdir()
    write(tmp_path / "outside.safetensors", tiny_model())
    (src / "config.json").write_text("{}")
    weight_map = {"model.embed_tokens.weight": "../outside.safetensors"}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ryzq.RyzqError, match="not a plain file name") as caught:
        ryzq.quantize_model(src, tmp_path / "dst")
    assert caught.value.kind == "unsafe_path"
    assert caught.value.path.endswith("model.safetensors.index.json")
    assert not (tmp_path / "dst").exists()


def test_ryzq_metadata_of_the_wrong_shape_is_one_error_line(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    out = tmp_path / "q.safetensors"
    ryzq.quantize_file(src, out, layout="t1")
    header = ryzq.read_header(out)
    described = json.loads(header["metadata"]["ryzq"])
    name = sorted(described["quantized"])[0]
    described["quantized"][name]["scale"] = [0]  # a list where a tensor name belongs
    from safetensors.numpy import load_file

    state = load_file(str(out))
    bad = write(tmp_path / "bad.safetensors", state, metadata={"ryzq": json.dumps(described)})
    result = run_cli("inspect", bad)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "unreadable ryzq metadata" in result.stderr
    with pytest.raises(ryzq.RyzqError, match="unreadable ryzq metadata"):
        ryzq.dequantize_file(bad, tmp_path / "d.safetensors")


def test_rows_i2_s_cannot_take_name_the_file_the_tensor_and_the_layout_that_takes_them(tmp_path):
    state = tiny_model("F32", hidden=64)  # rows of 64 (q, k, v, o, gate, up) and 128 (down)
    src = write(tmp_path / "in.safetensors", state)
    with pytest.raises(ryzq.RyzqError) as caught:
        ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="i2_s")
    assert caught.value.kind == "bad_shape" and caught.value.path == str(src)
    assert caught.value.tensor in {
        name for name, w in state.items() if name.endswith("proj.weight") and w.shape[1] == 64
    }
    assert str(caught.value).startswith(f'{src}: tensor "{caught.value.tensor}": the i2_s layout')
    assert "i2_s_arm takes them (for bitnet.cpp's ARM builds only)" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
    report = ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="i2_s_arm")
    assert len(report.quantized) == 14
