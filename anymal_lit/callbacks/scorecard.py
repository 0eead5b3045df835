"""The JSON scorecard: ``{"stages": {<stage>: {<benchmark>: {<metric>: number}}}, ...}``, merged across runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def update_scorecard(path: str | Path, stage: str, benchmark: str, scores: dict[str, Any]) -> dict[str, Any]:
    """Merge ``scores`` into ``stages.<stage>.<benchmark>`` of the scorecard at ``path`` (created if missing)."""
    path = Path(path)
    card = json.loads(path.read_text()) if path.exists() else {}
    card.setdefault("stages", {}).setdefault(stage, {}).setdefault(benchmark, {}).update(scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=True))
    return card


SPREAD_KEYS = ("mean", "min", "max", "per_seed")
"""The form of a figure in a scorecard over several seeds (:func:`combine_scorecards`)."""


def combine_scorecards(cards: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One scorecard over runs that differ only in their seed: every number of ``stages`` becomes
    ``{"mean", "min", "max", "per_seed"}`` (``per_seed`` in the order of ``seeds``); other values are the first
    run's. A figure missing from a run is left out of that figure's statistics (``per_seed`` holds None there)."""
    if len(cards) != len(seeds) or not cards:
        raise ValueError(f"{len(cards)} scorecards for {len(seeds)} seeds")

    def combine(values: list[Any]) -> Any:
        first = next((v for v in values if v is not None), None)
        if isinstance(first, dict):
            keys = dict.fromkeys(k for v in values if isinstance(v, dict) for k in v)
            return {k: combine([v.get(k) if isinstance(v, dict) else None for v in values]) for k in keys}
        if isinstance(first, bool) or not isinstance(first, int | float):
            return first
        present = [float(v) for v in values if v is not None]
        return {
            "mean": sum(present) / len(present),
            "min": min(present),
            "max": max(present),
            "per_seed": [None if v is None else float(v) for v in values],
        }

    return {"seeds": list(seeds), "stages": combine([c.get("stages", {}) for c in cards])}


def seed_scorecard(card: dict[str, Any], index: int) -> dict[str, Any]:
    """The scorecard of the ``index``-th seed of a :func:`combine_scorecards` card (a one-seed card as it is)."""

    def pick(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == set(SPREAD_KEYS):
            return node["per_seed"][index]
        if isinstance(node, dict):
            return {k: pick(v) for k, v in node.items()}
        return node

    return {k: v for k, v in pick(card).items() if k != "seeds"} if "seeds" in card else card
