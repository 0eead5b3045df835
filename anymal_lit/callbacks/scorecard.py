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
