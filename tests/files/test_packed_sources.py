"""Sources that are already ternary: ryzq's own files, transformers' packed BitNet layout (both
scale conventions, with and without config.json, sharded), GGUF files and float weights that are
exactly ternary times a scale. Their codes are carried into every layout as they are; the
report says so, with the error of the target's scales against the source's."""

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file

import ryzq
from checkpoints import write
from reference import pack_bitnet

LAYOUTS = list(ryzq.LAYOUTS)
#: Layouts that keep their scales in a tensor of their own, at any granularity.
APART = ("t1", "i2")
BF16 = np.dtype(ml_dtypes.bfloat16)
W = "model.layers.0.mlp.up_proj.weight"
SCALE = "model.layers.0.mlp.up_proj.weight_scale"


def granularity_in(layout: str, granularity: str) -> str:
    """The granularity a layout stores: its blocks' for the GGUF blocks, the tensor's for
    I2_S, else the one asked for (bitnet: the tensor's)."""
    if layout in ("tq2_0", "tq1_0"):
        return "group:256"
    if layout in ("q2_0",):
        return "group:64"
    if layout in ("q8_0",):
        return "group:32"
    if layout in ("i2_s", "i2_s_arm", "bitnet"):
        return "tensor"
    return granularity


def group_len(granularity: str, shape: tuple[int, ...]) -> int:
    if granularity == "tensor":
        return int(np.prod(shape))
    return shape[-1] if granularity == "row" else int(granularity.removeprefix("group:"))


def codes_of(path, name, shape, layout):
    return ryzq.unpack(load_file(path)[name], shape, layout)


def tensor(report, name):
    return next(t for t in report.tensors if t.name == name)


@given(
    source=st.sampled_from(LAYOUTS),
    target=st.sampled_from(LAYOUTS),
    granularity=st.sampled_from(["tensor", "row", "group:256"]),
    rows=st.integers(1, 4).map(lambda k: 4 * k),
    blocks=st.integers(1, 3),
    data=st.data(),
)
def test_codes_are_carried_between_every_pair_of_layouts(
    tmp_path_factory, source, target, granularity, rows, blocks, data
):
    tmp = tmp_path_factory.mktemp("pair")
    shape = (rows, 256 * blocks)
    scale = data.draw(st.floats(1e-3, 1.0))
    w = (
        np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(0, scale, shape)
    ).astype(np.float32)
    stored = granularity_in(source, granularity)
    src = write(tmp / "w.safetensors", {W: w})
    ryzq.quantize_file(src, tmp / "a.safetensors", layout=source, granularity=stored)
    expected = codes_of(tmp / "a.safetensors", W, shape, source)

    wanted = granularity_in(target, stored)
    options = {"layout": target, "granularity": wanted} if target in APART else {"layout": target}
    # Random weights give each source group its own scale: a target whose groups are longer
    # than the source's cannot hold them.
    coarser = group_len(wanted, shape) > group_len(stored, shape)
    try:
        report = ryzq.quantize_file(tmp / "a.safetensors", tmp / "b.safetensors", **options)
    except ryzq.RyzqError as refused:
        # Only a target that cannot hold the source's several scales may refuse, and it names
        # layouts that can.
        assert coarser, refused
        assert "several scales" in str(refused) and "t1" in str(refused)
        return
    t = tensor(report, W)
    assert t.carried_over is not None and t.quantized
    assert t.shape == shape
    np.testing.assert_array_equal(codes_of(tmp / "b.safetensors", W, shape, target), expected)
    counts = dict(zip(*np.unique(expected, return_counts=True), strict=True))
    assert t.stats.counts == {c: int(counts.get(c, 0)) for c in (-1, 0, 1)}

    # Back into the source's layout: the same codes, and the same bytes wherever the step
    # through the target held the scales exactly (error 0).
    again = ryzq.quantize_file(
        tmp / "b.safetensors", tmp / "c.safetensors", layout=source, granularity=stored
    )
    np.testing.assert_array_equal(codes_of(tmp / "c.safetensors", W, shape, source), expected)
    if t.stats.sse == 0 and tensor(again, W).stats.sse == 0:
        a, c = load_file(tmp / "a.safetensors"), load_file(tmp / "c.safetensors")
        assert a.keys() == c.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], c[name], err_msg=name)


def transformers_folder(root, linear_class, *, dtype=BF16, config=True, shards=1, seed=0):
    """A folder in transformers' packed BitNet layout, packed here as transformers'
    pack_weights does (tests/reference.py, checked against it by the golden vectors): per
    tensor absmean codes, weight_scale = 1/absmean (bitlinear) or absmean (autobitlinear)."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    state, codes, scales = {}, {}, {}
    for i in range(2):
        for proj, shape in (("self_attn.q_proj", (64, 256)), ("mlp.down_proj", (64, 512))):
            name = f"model.layers.{i}.{proj}.weight"
            w = rng.normal(0, 0.02, shape).astype(np.float32)
            inv = np.float32(1) / np.float32(max(np.abs(w).mean(dtype=np.float64), 1e-5))
            c = np.clip(np.round(w * inv), -1, 1).astype(np.int8)
            stored = inv if linear_class == "bitlinear" else np.float32(1) / inv
            state[name] = pack_bitnet(c)
            state[name.removesuffix("weight") + "weight_scale"] = np.array([stored]).astype(dtype)
            codes[name] = c
            scales[name] = np.array([stored]).astype(dtype).astype(np.float32)[0]
        state[f"model.layers.{i}.input_layernorm.weight"] = np.ones(256, dtype)
    state["model.embed_tokens.weight"] = rng.normal(0, 1, (16, 256)).astype(dtype)
    if config:
        quantization = {"quant_method": "bitnet", "quantization_mode": "offline"}
        if linear_class == "autobitlinear" or seed % 2:
            quantization["linear_class"] = linear_class
        cfg = {"model_type": "bitnet", "quantization_config": quantization}
        (root / "config.json").write_text(json.dumps(cfg))
    else:
        (root / "config.json").write_text("{}")
    names = sorted(state)
    if shards == 1:
        write(root / "model.safetensors", state)
    else:
        weight_map = {}
        # Every weight in the first shard, every scale in the last: a scale apart from its
        # weight, as an index may put it.
        parts = [[n for n in names if not n.endswith("_scale")], []]
        parts[-1] = [n for n in names if n.endswith("_scale")]
        for k, part in enumerate(parts):
            shard = f"model-{k + 1:05d}-of-00002.safetensors"
            write(root / shard, {n: state[n] for n in part})
            weight_map.update(dict.fromkeys(part, shard))
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return codes, scales


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("target", ["t1", "tq2_0", "i2_s", "bitnet"])
def test_transformers_packed_checkpoints_carry_their_codes(tmp_path, linear_class, shards, target):
    codes, scales = transformers_folder(tmp_path / "src", linear_class, shards=shards)
    report = ryzq.quantize_model(tmp_path / "src", tmp_path / "dst", layout=target)
    out = {}
    for f in (tmp_path / "dst").glob("*.safetensors"):
        out.update(load_file(f))
    for name, c in codes.items():
        t = tensor(report, name)
        assert t.carried_over == "from the source's bitnet codes, scale per tensor"
        np.testing.assert_array_equal(ryzq.unpack(out[name], c.shape, target), c)
        # The source's value of each weight: code / weight_scale (bitlinear) or code *
        # weight_scale; the target's scale is that, as it stores it.
        expected = 1 / scales[name] if linear_class == "bitlinear" else scales[name]
        if target == "tq2_0":
            # Every block's float16 d, the same scale.
            d = out[name].reshape(-1, 66)[:, 64:].copy().view(np.float16)
            assert (d == np.float16(expected)).all()
        else:
            assert t.scale == pytest.approx(expected, rel=1e-3)
        if target == "t1":
            # float32 holds the source's scale: no error.
            assert t.stats.sse == 0 and t.scale == np.float32(expected)
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["quantization_config"]["layout" if target != "bitnet" else "linear_class"]


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_transformers_packed_round_trips_byte_for_byte(tmp_path, linear_class):
    transformers_folder(tmp_path / "src", linear_class)
    ryzq.quantize_model(tmp_path / "src", tmp_path / "t1", layout="t1")
    ryzq.quantize_model(
        tmp_path / "t1", tmp_path / "back", layout="bitnet", linear_class=linear_class
    )
    a = load_file(tmp_path / "src" / "model.safetensors")
    b = load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_transformers_packed_checkpoints_dequantize(tmp_path, linear_class):
    codes, scales = transformers_folder(tmp_path / "src", linear_class)
    n = ryzq.dequantize_model(tmp_path / "src", tmp_path / "dst")
    assert n == len(codes)
    out = load_file(tmp_path / "dst" / "model.safetensors")
    for name, c in codes.items():
        scale = np.float32(1) / scales[name] if linear_class == "bitlinear" else scales[name]
        assert out[name].dtype == BF16
        np.testing.assert_array_equal(out[name], (c * scale).astype(BF16))
        assert name.removesuffix("weight") + "weight_scale" not in out
    assert "quantization_config" not in json.loads((tmp_path / "dst" / "config.json").read_text())


def test_a_packed_file_without_config_needs_its_convention(tmp_path):
    transformers_folder(tmp_path / "only", "autobitlinear", config=False)
    src = tmp_path / "only" / "model.safetensors"
    with pytest.raises(ryzq.RyzqError, match="source_linear_class") as refused:
        ryzq.quantize_file(src, tmp_path / "out.safetensors", layout="t1")
    assert "model.safetensors" in str(refused.value)
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(ryzq.RyzqError, match="source_linear_class"):
        ryzq.dequantize_file(src, tmp_path / "out.safetensors")
    report = ryzq.quantize_file(
        src, tmp_path / "out.safetensors", layout="t1", source_linear_class="autobitlinear"
    )
    assert all(t.carried_over for t in report.quantized)
    ryzq.dequantize_file(src, tmp_path / "float.safetensors", source_linear_class="bitlinear")


def test_a_convention_the_scales_contradict_warns_with_the_numbers(tmp_path):
    # absmean scales (about 0.016) read as bitlinear's 1/absmean give weights of about 60.
    transformers_folder(tmp_path / "only", "autobitlinear", config=False)
    src = tmp_path / "only" / "model.safetensors"
    with pytest.warns(ryzq.RyzqWarning, match=r"4 of 4 weight_scale values .* bitlinear"):
        ryzq.quantize_file(
            src, tmp_path / "out.safetensors", layout="t1", source_linear_class="bitlinear"
        )
    # The right convention says nothing.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ryzq.RyzqWarning)
        ryzq.quantize_file(
            src, tmp_path / "ok.safetensors", layout="t1", source_linear_class="autobitlinear"
        )


def test_the_cli_takes_the_source_convention(tmp_path):
    import subprocess
    import sys

    transformers_folder(tmp_path / "only", "bitlinear", config=False)
    src = tmp_path / "only" / "model.safetensors"
    cmd = [sys.executable, "-m", "ryzq", "quantize", str(src), str(tmp_path / "o.safetensors")]
    refused = subprocess.run([*cmd, "--layout", "t1"], capture_output=True, text=True)
    assert refused.returncode != 0 and "--source-linear-class" in refused.stderr
    done = subprocess.run(
        [*cmd, "--layout", "t1", "--source-linear-class", "bitlinear"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "carried over" in done.stdout


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({SCALE: np.ones(2, np.float32)}, r"weight_scale of shape \[2\]"),
        ({SCALE: np.ones(1, np.int32)}, "not a float"),
        ({SCALE: np.zeros(1, np.float32)}, "finite and not zero"),
        ({W: np.zeros((4, 4, 4), np.uint8)}, r"packed shape \[4, 4, 4\]"),
    ],
)
def test_bad_packed_tensors_are_errors_naming_them(tmp_path, edit, message):
    state = {W: np.zeros((8, 32), np.uint8), SCALE: np.ones(1, np.float32), **edit}
    src = write(tmp_path / "in.safetensors", state)
    with pytest.raises(ryzq.RyzqError, match=message) as refused:
        ryzq.quantize_file(
            src, tmp_path / "out.safetensors", layout="t1", source_linear_class="bitlinear"
        )
    assert "in.safetensors" in str(refused.value)
    assert W in str(refused.value) or SCALE in str(refused.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_uint8_weight_without_its_scale_in_a_packed_model_is_an_error(tmp_path):
    transformers_folder(tmp_path / "src", "bitlinear")
    state = load_file(tmp_path / "src" / "model.safetensors")
    del state["model.layers.1.mlp.down_proj.weight_scale"]
    write(tmp_path / "src" / "model.safetensors", state)
    with pytest.raises(ryzq.RyzqError, match="without its") as refused:
        ryzq.quantize_model(tmp_path / "src", tmp_path / "dst", layout="t1")
    assert "model.layers.1.mlp.down_proj.weight" in str(refused.value)
    assert not (tmp_path / "dst").exists()


def test_several_scales_into_one_per_tensor_name_the_layouts_that_hold_them(tmp_path):
    w = np.random.default_rng(0).normal(0, 0.02, (8, 256)).astype(np.float32)
    src = write(tmp_path / "w.safetensors", {W: w})
    ryzq.quantize_file(src, tmp_path / "rows.safetensors", layout="t1", granularity="row")
    for layout in ("bitnet", "i2_s"):
        with pytest.raises(ryzq.RyzqError, match="several scales") as refused:
            ryzq.quantize_file(
                tmp_path / "rows.safetensors", tmp_path / "x.safetensors", layout=layout
            )
        assert "i2, t1 with granularity row, or tq2_0, tq1_0, q2_0, q8_0 (a scale per block)" in (
            str(refused.value)
        )
        assert W in str(refused.value)
        assert not (tmp_path / "x.safetensors").exists()


def test_a_gguf_file_is_a_source_too(tmp_path):
    w = np.random.default_rng(0).normal(0, 0.02, (8, 512)).astype(np.float32)
    ryzq.write_gguf(tmp_path / "w.gguf", {"w": ryzq.quantize(w, layout="tq2_0")})
    report = ryzq.quantize_file(tmp_path / "w.gguf", tmp_path / "t1.safetensors", layout="t1")
    t = tensor(report, "w")
    assert t.carried_over == "from the source's tq2_0 codes, scale per group:256"
    assert t.stats.sse == 0
    expected = ryzq.quantize(w, layout="tq2_0").codes()
    np.testing.assert_array_equal(
        codes_of(tmp_path / "t1.safetensors", "w", w.shape, "t1"), expected
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
@pytest.mark.parametrize("granularity", ["tensor", "row", "group:64"])
def test_exactly_ternary_float_weights_are_carried_over(tmp_path, dtype, granularity):
    rng = np.random.default_rng(1)
    codes = rng.integers(-1, 2, (8, 128)).astype(np.int8)
    groups = {"tensor": 1, "row": 8, "group:64": 16}[granularity]
    scales = rng.uniform(0.01, 0.05, groups).astype(dtype).astype(np.float32)
    w = (codes.reshape(groups, -1) * scales[:, None]).reshape(codes.shape).astype(dtype)
    src = write(tmp_path / "w.safetensors", {W: w, "model.norm.weight": np.ones(128, dtype)})
    report = ryzq.quantize_file(
        src, tmp_path / "t1.safetensors", layout="t1", granularity=granularity
    )
    t = tensor(report, W)
    assert t.carried_over.startswith(f"exactly ternary in the source, one scale per {granularity}")
    assert t.stats.sse == 0 and t.stats.max_abs_error == 0
    np.testing.assert_array_equal(
        codes_of(tmp_path / "t1.safetensors", W, codes.shape, "t1"), codes
    )
    out = load_file(tmp_path / "t1.safetensors")
    np.testing.assert_array_equal(out[SCALE], scales)
    # Master weights are not: one value off the grid is enough.
    w2 = w.astype(np.float32)
    w2[0, 0] = 0.001 if codes[0, 0] == 0 else w2[0, 0] * 1.5
    write(tmp_path / "w2.safetensors", {W: w2.astype(dtype)})
    report = ryzq.quantize_file(
        tmp_path / "w2.safetensors",
        tmp_path / "m.safetensors",
        layout="t1",
        granularity=granularity,
    )
    assert tensor(report, W).carried_over is None


def test_the_report_says_what_was_carried_over(tmp_path):
    transformers_folder(tmp_path / "src", "autobitlinear")
    report = ryzq.quantize_model(tmp_path / "src", tmp_path / "dst", layout="tq2_0")
    summary = report.summary()
    assert "4 of them carried over" in summary
    assert "4 x from the source's bitnet codes, scale per tensor" in summary
    d = report.to_dict()
    assert d["summary"]["carried_over_tensors"] == 4
    entry = next(e for e in d["tensors"] if e["name"] == "model.layers.0.self_attn.q_proj.weight")
    assert entry["carried_over"] and entry["shape"] == [64, 256]


@given(
    linear_class=st.sampled_from(["bitlinear", "autobitlinear"]),
    dtype=st.sampled_from([np.float32, np.float16, BF16]),
    rows=st.integers(1, 4).map(lambda k: 4 * k),
    blocks=st.integers(1, 2),
    magnitude=st.floats(1e-3, 0.5),
    target=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_transformers_packed_files_carry_into_every_layout(
    tmp_path_factory, linear_class, dtype, rows, blocks, magnitude, target, seed
):
    tmp = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, (rows, 256 * blocks)).astype(np.int8)
    # The weights' magnitude, stored as each convention stores it.
    value = magnitude if linear_class == "autobitlinear" else 1 / magnitude
    stored = np.array([value]).astype(dtype)
    src = write(tmp / "in.safetensors", {W: pack_bitnet(codes), SCALE: stored})
    report = ryzq.quantize_file(
        src, tmp / "out.safetensors", layout=target, source_linear_class=linear_class
    )
    t = tensor(report, W)
    assert t.carried_over is not None
    np.testing.assert_array_equal(codes_of(tmp / "out.safetensors", W, codes.shape, target), codes)
    # The error is that of the target's scale against the source's, and nothing else.
    source_scale = (
        np.float32(stored[0]) if linear_class == "autobitlinear" else 1 / np.float32(stored[0])
    )
    back = ryzq.dequantize_file(tmp / "out.safetensors", tmp / "back.safetensors", dtype="float32")
    assert back == 1
    values = load_file(tmp / "back.safetensors")[W]
    np.testing.assert_array_equal(values == 0, codes == 0)
    target_scale = np.abs(values[codes != 0]).max(initial=0.0)
    if (codes != 0).any():
        assert np.all(np.abs(values[codes != 0]) == target_scale)
        expected_sse = (
            float(np.count_nonzero(codes)) * (float(source_scale) - float(target_scale)) ** 2
        )
        assert t.stats.sse == pytest.approx(expected_sse, rel=1e-6, abs=1e-30)


def test_exactly_ternary_weights_into_float16_block_scales_report_their_rounding(tmp_path):
    codes = np.random.default_rng(2).integers(-1, 2, (4, 256)).astype(np.int8)
    scale = np.float32(0.039943263)  # float16 holds 0.0399475 nearest
    src = write(tmp_path / "w.safetensors", {W: codes * scale})
    report = ryzq.quantize_file(src, tmp_path / "tq.safetensors", layout="tq2_0")
    t = tensor(report, W)
    assert t.carried_over is not None
    error = abs(float(np.float16(scale)) - float(scale))
    assert t.stats.max_abs_error == pytest.approx(error, rel=1e-6)
    assert t.stats.sse == pytest.approx(np.count_nonzero(codes) * error**2, rel=1e-6)


def test_a_dry_run_says_what_is_carried_over(tmp_path):
    transformers_folder(tmp_path / "src", "autobitlinear")
    plan = ryzq.quantize_model(tmp_path / "src", dry_run=True, layout="t1")
    summary = plan.summary()
    assert "4 tensors carried over" in summary
    assert "codes carried over from the source's bitnet codes, scale per tensor" in summary


def test_weights_exactly_ternary_per_row_say_so_at_a_coarser_granularity(tmp_path):
    # TriLM-style: a scale per block of rows (model-parallel shards), so one per row too.
    codes = np.random.default_rng(3).integers(-1, 2, (8, 128)).astype(np.int8)
    scales = np.repeat(np.array([0.02, 0.03], np.float32), 4)
    src = write(tmp_path / "w.safetensors", {W: codes * scales[:, None]})
    with pytest.warns(ryzq.RyzqWarning, match=r"1 weight is exactly ternary .*--granularity row"):
        report = ryzq.quantize_file(src, tmp_path / "t.safetensors", layout="t1")
    assert tensor(report, W).carried_over is None and tensor(report, W).stats.sse > 0
    report = ryzq.quantize_file(src, tmp_path / "r.safetensors", layout="t1", granularity="row")
    assert tensor(report, W).carried_over is not None and tensor(report, W).stats.sse == 0
