"""Mutated real files (flipped header bytes, edited JSON fields, truncations, edited ryzq
metadata) through quantize_file, dequantize_file, quantize_model and inspect: every outcome is a
valid output or one RyzqError, never another exception, a crash or a leftover file."""

import json
import struct
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

import ryzq
from checkpoints import tiny_model, write

ROOT_STATE = tiny_model("BF16", layers=1)


def make_files(tmp):
    plain = write(tmp / "plain.safetensors", ROOT_STATE)
    ryzq.quantize_file(plain, tmp / "packed.safetensors", layout="t1")
    return plain.read_bytes(), (tmp / "packed.safetensors").read_bytes()


def split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


@st.composite
def mutations(draw, data: bytes):
    kind = draw(st.sampled_from(["flip", "truncate", "field", "metadata", "extend"]))
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, min(len(out) - 1, 8 + 4096)))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return data + bytes(draw(st.integers(1, 64)))
    header, body = split(data)
    if kind == "metadata":
        meta = header.get("__metadata__", {})
        if "ryzq" in meta:
            described = json.loads(meta["ryzq"])
            name = draw(st.sampled_from(sorted(described["quantized"])))
            field = draw(st.sampled_from(["layout", "granularity", "dtype", "shape", "scale"]))
            value = draw(
                st.one_of(st.just("nope"), st.just([0]), st.just([1, 2, 3]), st.just(None))
            )
            described["quantized"][name][field] = value
            meta["ryzq"] = json.dumps(described)
        else:
            meta["ryzq"] = draw(st.sampled_from(["{", "[]", '{"version": 1}', "null"]))
        header["__metadata__"] = meta
        return join(header, body)
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    header[name][field] = draw(
        st.sampled_from(
            ["F64", "U8", "XX", [], [0], [2**62, 2**62], [-1, 4], [10**12, 10**12 + 4], "x"]
        )
    )
    return join(header, body)


def outcome(call):
    try:
        call()
    except ryzq.RyzqError:
        return "error"
    return "ok"


@settings(max_examples=40)
@given(data=st.data())
def test_mutated_files_give_an_output_or_a_ryzq_error(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("mut")
    plain, packed = make_files(tmp)
    which = data.draw(st.sampled_from(["plain", "packed"]))
    mutated = data.draw(mutations(plain if which == "plain" else packed))
    src = tmp / "m.safetensors"
    src.write_bytes(mutated)
    before = set(tmp.iterdir())
    outcome(lambda: ryzq.quantize_file(src, tmp / "q.safetensors"))
    outcome(lambda: ryzq.dequantize_file(src, tmp / "d.safetensors"))
    outcome(lambda: ryzq.read_header(src))
    folder = tmp / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(mutated)
    (folder / "config.json").write_text("{}")
    outcome(lambda: ryzq.quantize_model(folder, tmp / "qm"))
    made = {p.name for p in set(tmp.iterdir()) - before} - {"model"}
    assert not [n for n in made if n.endswith(".ryzq-partial")], made
    assert made <= {"q.safetensors", "d.safetensors", "qm"}
    for name in made & {"q.safetensors", "d.safetensors"}:
        ryzq.read_header(tmp / name)  # what was written is a valid file
    shown = subprocess.run(
        [sys.executable, "-m", "ryzq", "inspect", str(src)], capture_output=True, text=True
    )
    assert shown.returncode in (0, 2), shown.stderr
    if shown.returncode == 2:
        assert shown.stderr.startswith("ryzq: error:") and shown.stderr.count("\n") == 1


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    src = write(tmp_path / "in.safetensors", tiny_model())
    result = subprocess.run(
        f"{sys.executable} -m ryzq inspect {src} | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert result.stderr == "" and result.stdout.count("\n") == 1
