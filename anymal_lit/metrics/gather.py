"""Gathering Python objects (strings, dicts) from every process: torchmetrics cannot sync list-of-string states."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate ``local`` lists from every process (a no-op without an initialised process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        return [item for part in parts for item in part]
    return list(local)


class RowMetric:
    """Stores ``(id, prediction, target)`` rows per process; :meth:`gathered` merges every process's rows once per
    id (distributed samplers may repeat records to even out shards)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, Any]] = []

    def update(self, ids: list[str], predictions: list[str], targets: list[Any]) -> None:
        if not len(ids) == len(predictions) == len(targets):
            raise ValueError("ids, predictions and targets must have the same length")
        self.rows += list(zip(map(str, ids), predictions, targets))

    def gathered(self) -> tuple[dict[str, str], dict[str, Any]]:
        predictions: dict[str, str] = {}
        targets: dict[str, Any] = {}
        for rid, pred, target in gather_objects(self.rows):
            predictions.setdefault(rid, pred)
            targets.setdefault(rid, target)
        if not predictions:
            raise ValueError(f"{type(self).__name__}: nothing to score (no update() on any process)")
        return predictions, targets

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        """Scores of already gathered rows."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        return self.score(*self.gathered())
