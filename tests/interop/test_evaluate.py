"""Model-level evaluation on real runtimes: transformers for folders, llama.cpp for GGUF files.

The model is a tiny BitNet (SiLU, so that llama.cpp's bitnet graph computes the same function)
whose master weights are ternary codes times 0.05 plus noise of 0.002, as weights trained the
BitNet way sit near their ternary values. Its ternary version then computes nearly what the
master computes, and a wrong scale convention stands out.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

try:
    import torch
    import transformers
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs torch and transformers: pip install '.[test]'", allow_module_level=True)

import ryzq
from ryzq.cli import main

VOCAB = 320
CONTEXT = 128


def make_model(path, *, vocab=VOCAB, seed=0):
    config = transformers.BitNetConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.BitNetForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1, generator=g)
            elif "embed" in name:
                p.normal_(0.0, 0.1, generator=g)
            else:
                codes = torch.randint(-1, 2, p.shape, generator=g).float()
                p.copy_(codes * 0.05 + torch.randn(p.shape, generator=g) * 0.002)
    model.save_pretrained(path)
    return path


def train_tokenizer(folder, text):
    """A byte-level BPE tokenizer of the model's vocabulary size that adds BOS, saved as
    transformers reads it."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<unk>", "<s>", "</s>"],
    )
    tok.train_from_iterator([text], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    (folder / "tokenizer.json").write_text(tok.to_str())
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("eval") / "master")


@pytest.fixture(scope="module")
def ternary(master, tmp_path_factory):
    dst = tmp_path_factory.mktemp("eval") / "ternary"
    ryzq.quantize_model(master, dst)
    return dst


def llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("RYZQ_REQUIRE_INTEROP"):
            raise
        pytest.skip("needs llama-cpp-python: pip install '.[llama]'")
    return llama_cpp


def test_a_model_against_itself_agrees_exactly(master):
    report = ryzq.evaluate(master, master, tokens=300)
    s = report.summary_values
    assert s["kl_mean"] == s["kl_max"] == 0
    assert s["top1_agreement"] == 1
    assert s["logit_diff_max"] == 0
    assert s["reference_perplexity"] == s["candidate_perplexity"]
    # 300 tokens in windows of the model's 128: 3 windows, the first token of each unpredicted.
    assert (report.windows, report.context, report.predictions) == (3, CONTEXT, 297)


def windows_logits(folder, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return [
            model(torch.tensor([ids[s : s + CONTEXT]])).logits[0].double()
            for s in range(0, len(ids), CONTEXT)
        ]


def test_the_figures_are_those_torch_computes(master, ternary):
    n = 300
    report = ryzq.evaluate(master, ternary, tokens=n, seed=7)
    ids = np.random.default_rng(7).integers(0, VOCAB, size=n).tolist()
    kl, top1, nll_ref, nll_cand, diff = [], [], [], [], []
    for s, (a, b) in enumerate(
        zip(windows_logits(master, ids), windows_logits(ternary, ids), strict=True)
    ):
        targets = torch.tensor(ids[s * CONTEXT : (s + 1) * CONTEXT][1:])
        a, b = a[:-1], b[:-1]
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        kl += torch.nn.functional.kl_div(lb, la, log_target=True, reduction="none").sum(-1).tolist()
        top1 += (a.argmax(-1) == b.argmax(-1)).tolist()
        nll_ref += (-la.gather(1, targets[:, None])[:, 0]).tolist()
        nll_cand += (-lb.gather(1, targets[:, None])[:, 0]).tolist()
        diff += (a - b).abs().amax(-1).tolist()
    got = report.positions
    assert got.index == [i for s in range(0, n, CONTEXT) for i in range(s + 1, min(s + CONTEXT, n))]
    np.testing.assert_allclose(got.kl, kl, rtol=1e-9, atol=1e-12)
    assert got.top1_agree == top1
    np.testing.assert_allclose(got.reference_nll, nll_ref, rtol=1e-9)
    np.testing.assert_allclose(got.candidate_nll, nll_cand, rtol=1e-9)
    np.testing.assert_allclose(got.logit_diff_max, diff, rtol=1e-9)
    s = report.summary_values
    assert 0 < s["kl_mean"] < np.inf
    assert s["candidate_perplexity"] == pytest.approx(np.exp(np.mean(nll_cand)), rel=1e-9)
    assert s["top1_agreement"] == pytest.approx(np.mean(top1))


def test_a_wrong_scale_convention_stands_out(master, ternary, tmp_path):
    # The file stores 1/absmean, which BitLinear divides by; a config that says
    # autobitlinear multiplies by it instead: every projection off by absmean^2.
    wrong = tmp_path / "wrong"
    shutil.copytree(ternary, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["quantization_config"]["linear_class"] = "autobitlinear"
    (wrong / "config.json").write_text(json.dumps(config))
    right = ryzq.evaluate(master, ternary, tokens=200).summary_values
    off = ryzq.evaluate(master, wrong, tokens=200).summary_values
    # Measured: 0.18 and 2.0 nats.
    assert off["kl_mean"] > 5 * right["kl_mean"]
    assert off["top1_agreement"] < right["top1_agreement"] / 5


def test_gguf_and_safetensors_candidates_of_the_same_weights_agree(master, ternary, tmp_path):
    llama_cpp()
    gguf = tmp_path / "ternary.gguf"
    with pytest.warns(ryzq.RyzqWarning, match="no tokenizer"):
        ryzq.quantize_model(master, gguf, layout="tq2_0", tokenizer=False)
    folder = ryzq.evaluate(master, ternary, tokens=300)
    file = ryzq.evaluate(master, gguf, tokens=300)
    between = ryzq.evaluate(ternary, gguf, tokens=300)
    assert (file.runners["candidate"], folder.runners["candidate"]) == ("llama.cpp", "transformers")
    # The same ternary codes and scales, run by two runtimes that round activations to 8 bits
    # differently (per token in transformers' BitLinear, per 256 values in llama.cpp's Q8_K).
    # For one position, |KL(p||q1) - KL(p||q2)| = |sum p (log q2 - log q1)| <= max |log q2 -
    # log q1| <= 2 max |z2 - z1|, as log-softmax moves by at most twice the largest change of
    # the logits z: a bound from the candidates' own difference, measured by the third run.
    bound = 2 * np.array(between.positions.logit_diff_max) + 1e-9
    assert np.all(np.abs(np.subtract(folder.positions.kl, file.positions.kl)) <= bound)
    nll = np.abs(np.subtract(folder.positions.candidate_nll, file.positions.candidate_nll))
    assert np.all(nll <= bound)
    # And the two runtimes differ far less from each other than quantization moved the model
    # (measured: KL 0.0009 between them, 0.18 from the master).
    assert between.summary_values["kl_mean"] < 0.05 * folder.summary_values["kl_mean"]


def test_ryzq_s_other_layouts_are_dequantized_and_run(master, tmp_path):
    i2 = tmp_path / "i2"
    ryzq.quantize_model(master, i2, layout="i2")
    report = ryzq.evaluate(master, i2, tokens=100)
    assert report.runners["candidate"] == "transformers (dequantized by ryzq)"
    assert 0 < report.summary_values["kl_mean"] < np.inf
    # Dequantized elsewhere: the folder holds what quantize wrote, and nothing more.
    assert sorted(p.name for p in i2.iterdir()) == sorted(
        ["README.md", "config.json", "generation_config.json", "model.safetensors"]
    )


@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenized")
    master = make_model(root / "master")
    train_tokenizer(master, ryzq.evaluation.sample_text())
    ternary = root / "ternary"
    ryzq.quantize_model(master, ternary)
    return master, ternary


def test_the_built_in_text_runs_in_windows_that_start_with_bos(with_tokenizer):
    master, ternary = with_tokenizer
    report = ryzq.evaluate(master, ternary, max_tokens=400)
    assert report.input == {"kind": "text", "source": "built-in sample", "seed": None}
    assert report.tokens == 400
    # Each window is BOS and 127 tokens of the text: every token of the text is predicted.
    assert report.windows == 4
    assert report.positions.index == list(range(400))
    tokenizer = transformers.AutoTokenizer.from_pretrained(master)
    first = tokenizer(ryzq.evaluation.sample_text(), add_special_tokens=False)["input_ids"][0]
    model = transformers.AutoModelForCausalLM.from_pretrained(master, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([[tokenizer.bos_token_id, first]])).logits[0, 0].double()
    # Two tokens, not the window's 128: float32 sums in another order, a few ulps apart.
    assert report.positions.reference_nll[0] == pytest.approx(
        -torch.log_softmax(logits, -1)[first].item(), rel=1e-5
    )


def test_a_text_file_and_a_gguf_file_with_its_tokenizer(with_tokenizer, tmp_path):
    llama_cpp()
    master, _ = with_tokenizer
    gguf = tmp_path / "m.gguf"
    ryzq.quantize_model(master, gguf, layout="tq1_0")
    text = tmp_path / "text.txt"
    text.write_text("We hold these truths to be self-evident. " * 20)
    report = ryzq.evaluate(master, gguf, text=text)
    assert report.input["source"] == str(text)
    assert report.runners == {"reference": "transformers", "candidate": "llama.cpp"}
    assert 0 < report.summary_values["kl_mean"] < 1
    # The GGUF file alone: its own tokenizer (llama.cpp's) reads the text.
    alone = ryzq.evaluate(gguf, gguf, text=text)
    assert alone.summary_values["kl_max"] == 0
    assert alone.tokens == report.tokens


def test_models_of_different_vocabularies_are_an_error(master, tmp_path):
    other = make_model(tmp_path / "other", vocab=256)
    with pytest.raises(ryzq.RyzqError, match=r"other: its vocabulary has 256 tokens.*320"):
        ryzq.evaluate(master, other, tokens=10)


def test_a_model_transformers_cannot_run_is_an_error(master, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(master, odd)
    config = json.loads((odd / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(ryzq.RyzqError, match=r"odd: transformers cannot run this model"):
        ryzq.evaluate(master, odd, tokens=10)
    lacking = tmp_path / "lacking"
    shutil.copytree(master, lacking)
    config = json.loads((lacking / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (lacking / "config.json").write_text(json.dumps(config))
    with pytest.raises(ryzq.RyzqError, match=r"lacking: .* initialized at random"):
        ryzq.evaluate(master, lacking, tokens=10)


def test_a_gguf_file_llama_cpp_cannot_run_is_an_error(master, tmp_path):
    llama_cpp()
    tensors = tmp_path / "tensors.gguf"
    # Tensors under general.architecture llama, with none of a llama's hyperparameters.
    ryzq.write_gguf(tensors, {"w": np.zeros((4, 256), np.float32)})
    with pytest.raises(ryzq.RyzqError, match=r"tensors.gguf: llama.cpp cannot load this model"):
        ryzq.evaluate(master, tensors, tokens=10)
    assert tensors.stat().st_size > 0


def test_a_gguf_file_for_bitnet_cpp_is_refused_with_what_runs_instead(master, tmp_path):
    i2_s = tmp_path / "m.gguf"
    with pytest.warns(ryzq.RyzqWarning):
        ryzq.quantize_model(master, i2_s, layout="i2_s", tokenizer=False)
    with pytest.raises(ryzq.RyzqError, match=r"m.gguf: .*bitnet.cpp's I2_S.*tq2_0 or tq1_0"):
        ryzq.evaluate(master, i2_s, tokens=10)


def test_a_text_without_a_tokenizer_is_an_error(master):
    with pytest.raises(ryzq.RyzqError, match=r"has a tokenizer.*--tokens N"):
        ryzq.evaluate(master, master)


def test_ryzq_eval_prints_and_writes_every_figure(master, ternary, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(master), str(ternary), "--tokens", "150", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "KL(reference || candidate)" in printed and "top-1 agreement" in printed
    saved = json.loads(out.read_text())
    assert saved["predictions"] == len(saved["positions"]["kl"]) == 148
    assert saved["summary"]["kl_mean"] == pytest.approx(np.mean(saved["positions"]["kl"]))


def test_an_evaluation_alone_has_a_page(master, ternary, tmp_path):
    out, page = tmp_path / "eval.json", tmp_path / "eval.html"
    argv = ["eval", str(master), str(ternary), "--tokens", "100", "--json", str(out)]
    assert main([*argv, "--html", str(page), "--quiet"]) == 0
    text = page.read_text()
    assert "<h1>ryzq evaluation</h1>" in text and "top-1 agreement" in text
    again = tmp_path / "again.html"
    assert main(["report", str(out), "-o", str(again), "--quiet"]) == 0
    assert again.read_text() == text


def test_quantize_with_eval_adds_it_to_the_report(master, tmp_path, capsys):
    report = tmp_path / "report.json"
    dst = tmp_path / "q"
    argv = ["quantize", str(master), str(dst), "--eval-tokens", "100", "--report", str(report)]
    assert main(argv) == 0
    saved = json.loads(report.read_text())
    assert saved["eval"]["candidate"] == str(dst)
    assert saved["eval"]["input"]["kind"] == "random"
    assert len(saved["tensors"]) > 0
    assert "top-1 agreement" in capsys.readouterr().out
    card = (dst / "README.md").read_text()
    assert "## What the model computes" in card and "random token ids (seed 0)" in card


def test_a_tokenizer_that_adds_eos_too_still_starts_each_window_with_bos(with_tokenizer, tmp_path):
    master, _ = with_tokenizer
    both = tmp_path / "both"
    shutil.copytree(master, both)
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(both / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    (both / "tokenizer.json").write_text(tok.to_str())
    report = ryzq.evaluate(both, both, max_tokens=400)
    # BOS and 127 tokens of the text a window, as without EOS: BOS is no token of the text.
    assert report.windows == 4
    assert report.positions.index == list(range(400))


def test_an_empty_text_has_no_tokens(with_tokenizer, tmp_path):
    master, ternary = with_tokenizer
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ryzq.RyzqError, match=r"empty.txt: 0 token\(s\), too few"):
        ryzq.evaluate(master, ternary, text=empty)


def test_a_model_on_the_hub_runs_from_the_cache(master, ternary, tmp_path):
    from checkpoints import lay_out_hub_cache

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    cache = tmp_path / "cache"
    lay_out_hub_cache(cache, "some-org/master", master, commit)
    out = tmp_path / "eval.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    argv = ["eval", "hf://some-org/master", str(ternary), "--tokens", "100", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "ryzq", *argv, "--quiet"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    assert saved["reference"] == "hf://some-org/master"
    direct = ryzq.evaluate(master, ternary, tokens=100)
    assert saved["summary"]["kl_mean"] == pytest.approx(direct.summary_values["kl_mean"], rel=1e-12)
