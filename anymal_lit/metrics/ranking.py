"""Scores of ranked answers: the probability of "yes" against "no" and the area under the ROC curve (Hateful Memes).

The Hateful Memes challenge ranks memes by the model's probability that each is hateful and reports AUROC (with
accuracy beside it). A generative model gives that probability by scoring the two answers: ``p(yes) =
exp(l_yes) / (exp(l_yes) + exp(l_no))`` from the log-likelihoods of the answers (see
``anymal_lit.inference.likelihood``). AUROC comes from torchmetrics (``binary_auroc``: ties between scores count
one half, as the Mann-Whitney statistic).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import binary_auroc

from anymal_lit.metrics.gather import RowMetric

log = logging.getLogger(__name__)


def yes_probability(logp_yes: float | torch.Tensor, logp_no: float | torch.Tensor) -> torch.Tensor:
    """``p(yes)`` renormalised over the two answers, from their log-likelihoods."""
    pair = torch.stack([torch.as_tensor(logp_yes, dtype=torch.float64), torch.as_tensor(logp_no, dtype=torch.float64)])
    return pair.softmax(0)[0]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) against 0/1 ``labels``; NaN, with a
    warning, when the labels hold one class only (a subset of a benchmark, ``limit_val_batches``): the ranking is
    undefined there, and the other figures of the evaluation still count."""
    labels_t = torch.as_tensor([int(v) for v in labels])
    if labels_t.numel() == 0:
        raise ValueError("no scores to rank")
    if not set(labels_t.tolist()) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(labels_t.tolist()))}")
    if labels_t.min() == labels_t.max():
        log.warning("AUROC needs both classes among the labels (all %d are %d): reported as NaN", len(labels_t),
                    int(labels_t[0]))  # fmt: skip
        return math.nan
    return float(binary_auroc(torch.as_tensor(list(scores), dtype=torch.float64), labels_t, thresholds=None))


def binary_scores(probabilities: Sequence[float], labels: Sequence[int]) -> dict[str, float]:
    """``auroc`` and ``accuracy`` (probability > 0.5 read as positive) in [0, 1]."""
    hits = [(p > 0.5) == bool(y) for p, y in zip(probabilities, labels, strict=True)]
    return {"auroc": auroc(probabilities, labels), "accuracy": sum(hits) / len(hits)}


class BinaryRankingMetric(RowMetric):
    """AUROC and accuracy over every process's ``(id, probability of the positive answer, 0/1 label)`` rows."""

    def score(self, predictions: dict[str, Any], targets: dict[str, Any]) -> dict[str, float]:
        ids = sorted(predictions)
        return binary_scores([float(predictions[i]) for i in ids], [int(targets[i]) for i in ids])
