"""Captions answered in JSON (the AnyMAL paper's COCO prompt asks for ``{"caption": "..."}``), read before scoring.

A well-formed answer is the first JSON object in the output with a string ``caption``. Anything else is counted
as malformed and read leniently: a ``"caption": "...`` fragment (the paper's own example leaves the closing quote
out), else the raw output. Scoring a malformed answer on its raw text (braces and keys included) would lower
CIDEr for a formatting slip, and dropping it would hide the slip, so both the caption and the count come back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from anymal_lit.metrics.caption import CaptionMetric, caption_scores

CAPTION_FRAGMENT = re.compile(r'"caption"\s*:\s*"([^"}]*)')


def parse_json_caption(text: str) -> tuple[str, bool]:
    """``(caption, well_formed)`` of a model output that should be ``{"caption": "..."}``."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("caption"), str):
            return value["caption"].strip(), True
        start = text.find("{", start + 1)
    fragment = CAPTION_FRAGMENT.search(text)
    return (fragment.group(1).strip() if fragment else text.strip()), False


def parse_json_captions(texts: list[str]) -> tuple[list[str], int]:
    """The captions of many outputs and how many of them were malformed."""
    parsed = [parse_json_caption(t) for t in texts]
    return [caption for caption, _ in parsed], sum(not ok for _, ok in parsed)


class JSONCaptionMetric(CaptionMetric):
    """:class:`CaptionMetric` over the captions parsed from JSON answers, plus ``malformed_json`` (the share of
    outputs that were not a JSON object with a ``caption``)."""

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, Any]:
        if not predictions:
            raise ValueError("JSONCaptionMetric: nothing to score (no update() on any process)")
        ids = list(predictions)
        captions, malformed = parse_json_captions([predictions[i] for i in ids])
        scores = caption_scores(dict(zip(ids, captions)), references, self.with_meteor)
        return {**scores, "malformed_json": malformed / len(ids)}
