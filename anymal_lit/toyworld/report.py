"""Toy-world extras for the scorecard: per-attribute caption accuracy and the best constant-caption baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anymal_lit.callbacks.caption_eval import read_coco_references
from anymal_lit.metrics.caption import best_constant_cider
from anymal_lit.toyworld.shapes import Scene, attribute_accuracy


def constant_candidates(train_jsonl: Path, count: int = 300, seed: int = 0) -> list[str]:
    """Training captions to try as a constant prediction (a sample; scoring all of them takes minutes)."""
    captions = sorted({json.loads(line)["conversations"][-1]["value"] for line in train_jsonl.open()})
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(captions), size=min(count, len(captions)), replace=False)
    return [captions[i] for i in sorted(picked)]


def image_caption_report(world: str | Path, predictions: str | Path, predictions_before: str | Path | None) -> dict:
    """``cider_constant`` and ``<attribute>_accuracy`` (and ``..._before``) for the image-caption val set."""
    world = Path(world)
    scenes = {k: Scene.from_dict(v) for k, v in json.loads((world / "image_scenes_val.json").read_text()).items()}
    out = {}
    for suffix, path in (("", predictions), ("_before", predictions_before)):
        if path is not None and Path(path).exists():
            preds = json.loads(Path(path).read_text())
            out.update({f"{k}{suffix}": v for k, v in attribute_accuracy(preds, scenes).items()})
    references = read_coco_references(world / "image_caption_val_coco.json")
    score, caption = best_constant_cider(constant_candidates(world / "image_caption_train.jsonl"), references)
    out["cider_constant"] = score
    out["constant_caption"] = caption
    return out
