"""ryzq.evaluation: what ryzq.evaluate and ``ryzq eval`` refuse, before any model runs, and the
they compute from two models' logits (the runtimes themselves: tests/interop/test_evaluate.py).
"""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ryzq
from checkpoints import make_folder
from ryzq.cli import main
from ryzq.evaluation.metrics import Positions
from ryzq.synthetic import synthesize_checkpoint


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8}))
    return path


def test_the_built_in_text_ships_with_the_package():
    text = ryzq.evaluation.sample_text()
    assert 4_000 < len(text.encode()) < 20_000
    assert text.startswith("In Congress, July 4, 1776.")


def test_a_text_and_random_tokens_together_are_an_error(folder):
    with pytest.raises(ryzq.RyzqError, match="not both"):
        ryzq.evaluate(folder, folder, text="t.txt", tokens=10)


@pytest.mark.parametrize("option", ["tokens", "max_tokens", "context"])
def test_counts_must_be_positive(folder, option):
    with pytest.raises(ryzq.RyzqError, match=f"{option} must be a positive whole number"):
        ryzq.evaluate(folder, folder, **{"tokens": 5, option: 0})


def test_an_unreadable_text_is_an_error_naming_it(folder, tmp_path):
    with pytest.raises(ryzq.RyzqError, match=r"missing.txt: cannot read the text"):
        ryzq.evaluate(folder, folder, text=tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Grüße".encode("latin-1"))
    with pytest.raises(ryzq.RyzqError, match=r"latin1.txt: not UTF-8 text"):
        ryzq.evaluate(folder, folder, text=latin1)


def test_what_is_not_a_model_is_an_error_naming_it(folder, tmp_path, monkeypatch):
    with pytest.raises(ryzq.RyzqError, match=r"nowhere: no such file or folder"):
        ryzq.evaluate(tmp_path / "nowhere", folder, tokens=4)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ryzq.RyzqError, match=r"bare: a folder without config.json"):
        ryzq.evaluate(folder, bare, tokens=4)
    lone = tmp_path / "w.safetensors"
    lone.write_bytes(b"\0" * 16)
    with pytest.raises(ryzq.RyzqError, match=r"w.safetensors: .*not lone weight files"):
        ryzq.evaluate(folder, lone, tokens=4)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.raises(ryzq.RyzqError, match=r"config.json: not readable JSON"):
        ryzq.evaluate(folder, broken, tokens=4)
    (broken / "config.json").write_text('{"max_position_embeddings": "long"}')
    with pytest.raises(ryzq.RyzqError, match=r"config.json: not a model's config"):
        ryzq.evaluate(folder, broken, tokens=4)
    # Odd entries transformers judges (and refuses, if it must) once it loads the model.
    (broken / "config.json").write_text('{"text_config": null, "quantization_config": "x"}')
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ryzq.RyzqError, match=r"broken: .*pip install 'ryzq\[transformers\]'"):
        ryzq.evaluate(broken, broken, tokens=4)


def test_a_missing_runtime_says_what_to_install(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ryzq.RyzqError, match=r"model: .*pip install 'ryzq\[transformers\]'"):
        ryzq.evaluate(folder, folder, tokens=4)
    gguf = tmp_path / "m.gguf"
    ryzq.write_gguf(gguf, {"w": np.zeros((2, 32), np.float32)})
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ryzq.RyzqError, match=r"m.gguf: .*pip install 'ryzq\[llama\]'"):
        ryzq.evaluate(gguf, gguf, tokens=4)


def test_quantize_eval_of_a_lone_file_is_refused_before_any_work(tmp_path, capsys):
    src = tmp_path / "m.safetensors"
    synthesize_checkpoint(src, layers=1, hidden=64, intermediate=128, vocab=32)
    dst = tmp_path / "q.safetensors"
    assert main(["quantize", str(src), str(dst), "--eval"]) == 2
    assert "--eval runs the source and the output as models" in capsys.readouterr().err
    assert not dst.exists()
    assert main(["quantize", str(src), "--dry-run", "--eval"]) == 2
    assert "--dry-run does not write" in capsys.readouterr().err


def test_quantize_eval_of_a_text_without_a_tokenizer_is_refused_before_any_work(
    folder, tmp_path, capsys
):
    dst = tmp_path / "q"
    assert main(["quantize", str(folder), str(dst), "--eval"]) == 2
    assert "no tokenizer to read the evaluation's text with" in capsys.readouterr().err
    assert not dst.exists()


def test_ryzq_eval_errors_are_one_line(folder, tmp_path, capsys):
    assert main(["eval", str(folder), str(tmp_path / "nowhere"), "--tokens", "4"]) == 2
    assert (
        capsys.readouterr().err == f"ryzq: error: {tmp_path / 'nowhere'}: no such file or folder\n"
    )


logits = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 5), st.integers(2, 40)),
    elements=st.floats(-30, 30, width=32),
)


@settings(max_examples=200, deadline=None)
@given(logits, st.data())
def test_the_figures_follow_their_definitions(a, data):
    b = data.draw(hnp.arrays(np.float32, a.shape, elements=st.floats(-30, 30, width=32)))
    targets = np.array(
        data.draw(st.lists(st.integers(0, a.shape[1] - 1), min_size=len(a), max_size=len(a)))
    )
    got = Positions()
    got.add(a, b, targets, first=3)
    # log p from numpy's logaddexp, which never forms 1 - tiny as exp-then-normalize would.
    la = a.astype(np.float64) - np.logaddexp.reduce(a.astype(np.float64), axis=-1)[:, None]
    lb = b.astype(np.float64) - np.logaddexp.reduce(b.astype(np.float64), axis=-1)[:, None]
    kl = (np.exp(la) * (la - lb)).sum(-1)
    rows = np.arange(len(a))
    np.testing.assert_allclose(got.kl, np.maximum(kl, 0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.reference_nll, -la[rows, targets], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.candidate_nll, -lb[rows, targets], rtol=1e-9, atol=1e-12)
    assert got.top1_agree == list(a.argmax(-1) == b.argmax(-1))
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    assert got.logit_diff_max == list(diff.max(-1))
    assert got.index == list(range(3, 3 + len(a)))
    # The same distributions, shifted logits: no divergence at all.
    same = Positions()
    same.add(a, a, targets, first=0)
    assert same.kl == [0.0] * len(a)
    assert all(same.top1_agree)


def test_many_rows_are_taken_a_few_at_a_time_with_the_same_figures():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 200, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 200)
    whole, parts = Positions(), Positions()
    whole.add(a, b, targets, first=0)
    parts.add(a[:70], b[:70], targets[:70], first=0)
    parts.add(a[70:], b[70:], targets[70:], first=70)
    assert whole == parts
    assert whole.summary() == parts.summary()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "threads must be a positive whole number, not 0"),
        (["--threads", "-1"], "threads must be a positive whole number, not -1"),
        (["--seed", "-1"], "seed must be a whole number >= 0, not -1"),
    ],
)
def test_ryzq_eval_refuses_bad_threads_and_seeds_in_one_line(folder, capsys, argv, message):
    assert main(["eval", str(folder), str(folder), "--tokens", "4", *argv]) == 2
    assert capsys.readouterr().err == f"ryzq: error: {message}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-tokens", "0"], "--eval-tokens must be a positive whole number, not 0"),
        (["--eval-text", "missing.txt"], "missing.txt: cannot read the text"),
        (["--eval-text", "t.txt", "--eval-tokens", "5"], "not both"),
    ],
)
def test_quantize_eval_inputs_are_refused_before_any_work(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("text")
    src, dst = tmp_path / "src", tmp_path / "q"
    make_folder(src, 1)
    (src / "tokenizer.json").write_text("{}")
    assert main(["quantize", str(src), str(dst), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not dst.exists()


def test_eval_outputs_that_name_a_folder_are_refused_before_any_model_runs(
    folder, tmp_path, capsys
):
    taken = tmp_path / "taken"
    taken.mkdir()
    for option in ("--json", "--html"):
        assert main(["eval", str(folder), str(folder), "--tokens", "4", option, str(taken)]) == 2
        assert f"{taken}: exists and is not a regular file" in capsys.readouterr().err


def test_an_interrupted_evaluation_says_what_had_been_written(tmp_path, monkeypatch, capsys):
    src, dst, report = tmp_path / "src", tmp_path / "dst", tmp_path / "report.json"
    make_folder(src, 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ryzq.cli, "evaluate", interrupted)
    argv = ["quantize", str(src), str(dst), "--eval-tokens", "8", "--report", str(report)]
    assert main([*argv, "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err == f"ryzq: interrupted during the evaluation; {dst} and {report} had been written\n"
    assert (dst / "config.json").is_file() and "eval" not in json.loads(report.read_text())
