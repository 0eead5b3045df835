"""Metrics over rows of strings, gathered from every process (torchmetrics cannot sync list-of-string states)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from anymal_lit.collectives import gather_objects


def gather_rows(rows: Iterable[tuple[str, str, Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """Every process's ``(id, prediction, target)`` rows as id -> prediction and id -> target, the first row of
    each id kept (distributed samplers repeat records to even out shards). A collective: call it on every rank."""
    predictions: dict[str, str] = {}
    targets: dict[str, Any] = {}
    for rid, pred, target in gather_objects(list(rows)):
        predictions.setdefault(rid, pred)
        targets.setdefault(rid, target)
    return predictions, targets


class RowMetric:
    """Stores ``(id, prediction, target)`` rows per process; :meth:`gathered` merges every process's rows once per
    id (:func:`gather_rows`)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, Any]] = []

    def update(self, ids: list[str], predictions: list[str], targets: list[Any]) -> None:
        if not len(ids) == len(predictions) == len(targets):
            raise ValueError("ids, predictions and targets must have the same length")
        self.rows += list(zip(map(str, ids), predictions, targets))

    def gathered(self) -> tuple[dict[str, str], dict[str, Any]]:
        predictions, targets = gather_rows(self.rows)
        if not predictions:
            raise ValueError(f"{type(self).__name__}: nothing to score (no update() on any process)")
        return predictions, targets

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        """Scores of already gathered rows."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        return self.score(*self.gathered())
