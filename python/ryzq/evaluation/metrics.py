"""What two models' logits on the same tokens say about each other, position by position.

Everything is computed in float64 from the runners' float32 logits, a few rows at a time, so
that a window of a large vocabulary never needs more than a few copies of its rows in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Rows of logits turned into float64 at once: 64 rows of a 128k vocabulary are 64 MB.
_ROWS = 64


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log p`` of each row of float64 ``logits``, shifted by the row's maximum so that no
    exp overflows."""
    z = logits - logits.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


@dataclass
class Positions:
    """Per predicted token: the position of the token in the evaluated sequence, and what the
    two models say of it."""

    index: list[int] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    top1_agree: list[bool] = field(default_factory=list)
    reference_nll: list[float] = field(default_factory=list)
    candidate_nll: list[float] = field(default_factory=list)
    logit_diff_max: list[float] = field(default_factory=list)
    logit_diff_mean: list[float] = field(default_factory=list)

    def add(
        self, reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray, first: int
    ) -> None:
        """Adds the predictions of one window: ``reference`` and ``candidate`` are its logits
        (rows x vocabulary), row ``i`` predicting ``targets[i]``, the token at position
        ``first + i`` of the sequence."""
        for start in range(0, len(targets), _ROWS):
            rows = slice(start, start + _ROWS)
            a = reference[rows].astype(np.float64)
            b = candidate[rows].astype(np.float64)
            la, lb = log_softmax(a), log_softmax(b)
            # KL(reference || candidate) >= 0; rounding can leave a tiny negative sum when the
            # two distributions are (nearly) equal.
            kl = np.maximum((np.exp(la) * (la - lb)).sum(axis=-1), 0.0)
            picked = targets[rows]
            at = np.arange(len(picked))
            diff = np.abs(a - b)
            self.index.extend(range(first + start, first + start + len(picked)))
            self.kl.extend(kl.tolist())
            self.top1_agree.extend((a.argmax(axis=-1) == b.argmax(axis=-1)).tolist())
            self.reference_nll.extend((-la[at, picked]).tolist())
            self.candidate_nll.extend((-lb[at, picked]).tolist())
            self.logit_diff_max.extend(diff.max(axis=-1).tolist())
            self.logit_diff_mean.extend(diff.mean(axis=-1).tolist())

    def summary(self) -> dict[str, float]:
        """The overall figures: KL's mean, median, 99th percentile and maximum; the fraction
        of positions whose most likely next token is the same; each model's perplexity on the
        sequence; the largest logit difference, and the mean of the per-position means."""
        kl = np.array(self.kl)
        return {
            "kl_mean": float(kl.mean()),
            "kl_median": float(np.median(kl)),
            "kl_p99": float(np.percentile(kl, 99)),
            "kl_max": float(kl.max()),
            "top1_agreement": float(np.mean(self.top1_agree)),
            "reference_perplexity": float(np.exp(np.mean(self.reference_nll))),
            "candidate_perplexity": float(np.exp(np.mean(self.candidate_nll))),
            "logit_diff_max": float(np.max(self.logit_diff_max)),
            "logit_diff_mean": float(np.mean(self.logit_diff_mean)),
        }

    def to_dict(self) -> dict[str, list[Any]]:
        return {
            "index": self.index,
            "kl": self.kl,
            "top1_agree": self.top1_agree,
            "reference_nll": self.reference_nll,
            "candidate_nll": self.candidate_nll,
            "logit_diff_max": self.logit_diff_max,
            "logit_diff_mean": self.logit_diff_mean,
        }
