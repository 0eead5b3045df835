"""Benchmark metrics that reproduce the reference implementations (see each module for the rule it follows)."""

from anymal_lit.metrics.caption import CaptionMetric, caption_scores, cider_score
from anymal_lit.metrics.choice import (
    ChoiceMetric,
    circular_variants,
    extract_choice,
    mmbench_circular,
    multiple_choice_accuracy,
)
from anymal_lit.metrics.vqa import VQAMetric, normalize_answer, vqa_accuracy, vqa_scores

__all__ = [
    "CaptionMetric",
    "ChoiceMetric",
    "VQAMetric",
    "caption_scores",
    "cider_score",
    "circular_variants",
    "extract_choice",
    "mmbench_circular",
    "multiple_choice_accuracy",
    "normalize_answer",
    "vqa_accuracy",
    "vqa_scores",
]
