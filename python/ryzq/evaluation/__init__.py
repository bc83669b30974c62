"""Model-level evaluation: what a quantized model computes, against the model it came from.

Both models run on the same token ids, window by window, and every next-token prediction is
compared: KL divergence of the distributions (reference || candidate), whether the most likely
token is the same, each model's negative log-likelihood of the actual next token, and the
difference of the logits.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ryzq._ryzq import RyzqError
from ryzq.evaluation.metrics import Positions
from ryzq.evaluation.runners import Runner, open_runner
from ryzq.hub import fetch, is_hub
from ryzq.progress import StepProgress
from ryzq.report import _finite

#: Tokens evaluated unless asked otherwise: enough for the figures to settle, few enough that
#: a 2B-parameter model on a laptop takes a minute or two.
DEFAULT_MAX_TOKENS = 1024
#: The longest window unless asked otherwise (and unless a model's context is shorter): the
#: logits of a window are held in memory, window length x vocabulary floats for each model.
DEFAULT_CONTEXT = 512
SAMPLE_SOURCE = "built-in sample"


def sample_text() -> str:
    """The built-in text: the Declaration of Independence (1776), in the public domain."""
    return resources.files("ryzq.evaluation").joinpath("sample.txt").read_text(encoding="utf-8")


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RyzqError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise RyzqError(f"{path}: cannot read the text: {err.strerror or err}") from err


def _positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise RyzqError(f"{name} must be a positive whole number, not {value!r}")


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` found; :meth:`to_dict` is its JSON, :meth:`summary` its text."""

    reference: str
    candidate: str
    runners: dict[str, str]
    #: ``kind`` ("text" or "random"), ``source`` (the text's file, or the built-in sample),
    #: ``seed`` (of random token ids)
    input: dict[str, Any]
    #: tokens of the sequence evaluated (the text's own, without the tokenizer's BOS)
    tokens: int
    context: int
    windows: int
    vocab_size: int
    positions: Positions
    seconds: dict[str, float]
    summary_values: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary_values", self.positions.summary())

    @property
    def predictions(self) -> int:
        return len(self.positions.kl)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "runners": dict(self.runners),
            "input": dict(self.input),
            "tokens": self.tokens,
            "context": self.context,
            "windows": self.windows,
            "predictions": self.predictions,
            "vocab_size": self.vocab_size,
            "summary": {k: _finite(v) for k, v in self.summary_values.items()},
            "positions": {
                k: [_finite(x) if isinstance(x, float) else x for x in v]
                for k, v in self.positions.to_dict().items()
            },
            "seconds": dict(self.seconds),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def summary(self) -> str:
        s = self.summary_values
        where = (
            f"random token ids (seed {self.input['seed']})"
            if self.input["kind"] == "random"
            else f"the {self.input['source']}"
            if self.input["source"] == SAMPLE_SOURCE
            else str(self.input["source"])
        )
        ref_ppl, cand_ppl = s["reference_perplexity"], s["candidate_perplexity"]
        change = (cand_ppl / ref_ppl - 1) if ref_ppl and math.isfinite(ref_ppl) else math.nan
        return "\n".join(
            [
                f"eval: {self.reference} ({self.runners['reference']}) -> {self.candidate} "
                f"({self.runners['candidate']})",
                f"  {self.predictions:,} next-token predictions on {self.tokens:,} tokens of "
                f"{where}, {self.windows:,} window{'s' if self.windows != 1 else ''} of up to "
                f"{self.context:,}",
                f"  KL(reference || candidate): mean {s['kl_mean']:.4g}, median "
                f"{s['kl_median']:.4g}, p99 {s['kl_p99']:.4g}, max {s['kl_max']:.4g} nats",
                f"  top-1 agreement: {s['top1_agreement']:.1%}",
                f"  perplexity: reference {ref_ppl:.4g}, candidate {cand_ppl:.4g} ({change:+.1%})",
                f"  logits: largest difference {s['logit_diff_max']:.4g}, mean "
                f"{s['logit_diff_mean']:.4g}",
                f"  time: reference {self.seconds['reference']:.1f} s, candidate "
                f"{self.seconds['candidate']:.1f} s",
            ]
        )


def evaluate(
    reference: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    *,
    text: str | os.PathLike[str] | None = None,
    tokens: int | None = None,
    max_tokens: int | None = None,
    context: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
) -> EvalReport:
    """Run ``reference`` (usually the master weights) and ``candidate`` (what ryzq wrote, or
    any model of the same vocabulary) on the same tokens and compare their predictions.

    Each is a model folder (run by transformers, in float32; a folder in one of ryzq's own
    layouts is dequantized first), a GGUF file (run by llama.cpp), or a model on the Hub
    (``hf://ORG/MODEL[@REVISION]``, fetched into the Hub's cache first). The tokens are ``text``
    (a UTF-8 file; by default the built-in sample) tokenized by the reference's tokenizer (the
    candidate's if the reference has none), at most ``max_tokens`` of them (default 1024);
    or, with ``tokens=N``, N random token ids drawn with ``seed``, for models without a
    tokenizer. They run in windows of ``context`` tokens (default: 512, or the models' context
    if shorter), each starting with the tokenizer's BOS where it adds one."""
    if text is not None and tokens is not None:
        raise RyzqError("give a text or a number of random tokens, not both")
    _positive("tokens", tokens)
    _positive("max_tokens", max_tokens)
    _positive("context", context)
    _positive("threads", threads)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RyzqError(f"seed must be a whole number >= 0, not {seed!r}")
    body_text = None
    if tokens is None:
        body_text = sample_text() if text is None else _read_text(text)
    # Models on the Hub run from the Hub's cache, fetched first.
    where = {}
    for name, model in (("reference", reference), ("candidate", candidate)):
        if is_hub(model):
            where[name] = fetch(str(model), progress=progress).path
    runners: list[Runner] = []
    try:
        ref = open_runner(where.get("reference", reference), threads=threads)
        runners.append(ref)
        cand = open_runner(where.get("candidate", candidate), threads=threads)
        runners.append(cand)
        window = min(ref.context_length, cand.context_length, context or DEFAULT_CONTEXT)
        if window < 2:
            raise RyzqError(f"a window of {window} token predicts nothing; give context >= 2")
        ref.load(window)
        cand.load(window)
        if ref.vocab_size != cand.vocab_size:
            raise RyzqError(
                f"{candidate}: its vocabulary has {cand.vocab_size:,} tokens, the reference "
                f"{reference}'s {ref.vocab_size:,}: the two models do not predict the same "
                "tokens"
            )
        vocab = ref.vocab_size
        if body_text is not None:
            tokenizer = next((r for r in (ref, cand) if r.has_tokenizer()), None)
            if tokenizer is None:
                raise RyzqError(
                    f"neither {reference} nor {candidate} has a tokenizer to read the text "
                    "with; evaluate on random token ids instead (tokens=N, --tokens N)"
                )
            prefix, body = tokenizer.tokenize(body_text)
            beyond = [i for i in prefix + body if not 0 <= i < vocab]
            if beyond:
                raise RyzqError(
                    f"{tokenizer.path}: its tokenizer gives token {beyond[0]:,}, beyond the "
                    f"model's vocabulary of {vocab:,}"
                )
            source = SAMPLE_SOURCE if text is None else os.fspath(text)
            spec: dict[str, Any] = {"kind": "text", "source": source, "seed": None}
        else:
            prefix = []
            rng = np.random.default_rng(seed)
            body = rng.integers(0, vocab, size=tokens).tolist()
            spec = {"kind": "random", "source": None, "seed": seed}
        if max_tokens is not None or tokens is None:
            body = body[: max_tokens or DEFAULT_MAX_TOKENS]
        if len(prefix) >= window:
            raise RyzqError(
                f"a window of {window} tokens holds only the tokenizer's {len(prefix)} leading "
                "special tokens"
            )
        step = window - len(prefix)
        starts = [s for s in range(0, len(body), step) if len(prefix) + len(body[s : s + step]) > 1]
        if not starts:
            raise RyzqError(
                f"{spec['source'] or 'the tokens'}: {len(body)} token(s), too few to predict any"
            )
        positions = Positions()
        seconds = {"reference": 0.0, "candidate": 0.0}
        bar = StepProgress(len(starts), "eval ", unit="windows") if progress else None
        first_predicted = max(1, len(prefix))
        for s in starts:
            ids = prefix + body[s : s + step]
            t = time.perf_counter()
            a = ref.logits(ids)
            seconds["reference"] += time.perf_counter() - t
            t = time.perf_counter()
            b = cand.logits(ids)
            seconds["candidate"] += time.perf_counter() - t
            rows = slice(first_predicted - 1, len(ids) - 1)
            positions.add(
                a[rows],
                b[rows],
                np.asarray(ids[first_predicted:]),
                first=s + first_predicted - len(prefix),
            )
            if bar is not None:
                bar.step()
        return EvalReport(
            reference=os.fspath(reference),
            candidate=os.fspath(candidate),
            runners={"reference": ref.name, "candidate": cand.name},
            input=spec,
            tokens=len(body),
            context=window,
            windows=len(starts),
            vocab_size=vocab,
            positions=positions,
            seconds=seconds,
        )
    finally:
        for r in runners:
            r.close()
