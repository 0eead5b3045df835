"""ChartQA's relaxed accuracy, as the pix2struct metric code defines it (``pix2struct/metrics.py``,
``relaxed_correctness``; the rule of Methani et al. 2020 that ChartQA adopted).

A prediction and a target that both read as numbers (a trailing ``%`` divides by 100) match when the prediction is
within ``max_relative_change`` (5 %) *of the target*; otherwise, and whenever the target reads as 0 (the relative
change is undefined, so the code falls through), the two strings must be equal ignoring case. Nothing is stripped
or normalised beyond what Python's ``float`` accepts (surrounding whitespace inside the number parse): ``"0.0"``
against the target ``"0"`` is wrong, ``"12 %"`` is not a number. Some harnesses call the function with prediction
and target swapped, which measures the change relative to the *prediction*: ``relative_to="prediction"``.
"""

from __future__ import annotations

from typing import Any

from anymal_lit.metrics.gather import RowMetric

RELATIVE_TO = ("target", "prediction")


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0  # rstrip, as upstream: "5%%" reads as 0.05 too
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(
    prediction: str, target: str, max_relative_change: float = 0.05, relative_to: str = "target"
) -> float:
    """1.0 when ``prediction`` matches ``target`` by ChartQA's relaxed rule, else 0.0.

    Args:
        prediction: The model's answer.
        target: The reference answer.
        max_relative_change: Largest accepted ``|prediction - target| / |target|`` for numeric answers.
        relative_to: ``"target"`` (pix2struct, the official rule) or ``"prediction"`` (the swapped call some
            harnesses make: the change is divided by the prediction, and a prediction reading as 0 falls back to
            the string comparison).
    """
    if relative_to not in RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {RELATIVE_TO}, got {relative_to!r}")
    prediction, target = str(prediction), str(target)
    if relative_to == "prediction":
        prediction, target = target, prediction
    prediction_float, target_float = _to_float(prediction), _to_float(target)
    if prediction_float is not None and target_float:  # a target of 0 (falsy) takes the string branch, as upstream
        return float(abs(prediction_float - target_float) / abs(target_float) <= max_relative_change)
    return float(prediction.lower() == target.lower())


def relaxed_scores(
    predictions: list[str], targets: list[Any], max_relative_change: float = 0.05, relative_to: str = "target"
) -> dict[str, float]:
    """Mean relaxed accuracy in [0, 1]; a target may be a list of answers (the best match counts, as ChartQA's
    evaluation in lmms-eval / VLMEvalKit does for several references)."""
    if not predictions:
        raise ValueError("no answers to score")
    hits = []
    for prediction, target in zip(predictions, targets, strict=True):
        options = target if isinstance(target, (list, tuple)) else [target]
        hits.append(max(relaxed_accuracy(prediction, t, max_relative_change, relative_to) for t in options))
    return {"relaxed_accuracy": sum(hits) / len(hits)}


class RelaxedAccuracyMetric(RowMetric):
    """Relaxed accuracy over every process's ``(id, prediction, target)`` rows: ``relaxed_accuracy`` (the official
    rule) and ``relaxed_accuracy_swapped`` (relative to the prediction), fractions in [0, 1]."""

    def __init__(self, max_relative_change: float = 0.05) -> None:
        super().__init__()
        self.max_relative_change = max_relative_change

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        ids = sorted(predictions)
        preds, golds = [predictions[i] for i in ids], [targets[i] for i in ids]
        official = relaxed_scores(preds, golds, self.max_relative_change)["relaxed_accuracy"]
        swapped = relaxed_scores(preds, golds, self.max_relative_change, "prediction")["relaxed_accuracy"]
        return {"relaxed_accuracy": official, "relaxed_accuracy_swapped": swapped}
