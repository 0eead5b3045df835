"""Benchmark metrics that reproduce the reference implementations (see each module for the rule it follows)."""

from anymal_lit.metrics.caption import CaptionMetric, caption_scores, cider_score
from anymal_lit.metrics.choice import (
    ChoiceMetric,
    circular_variants,
    extract_choice,
    mmbench_circular,
    multiple_choice_accuracy,
)
from anymal_lit.metrics.mathvista import MathVistaMetric, mathvista_scores
from anymal_lit.metrics.mmmu import MMMUMetric, mmmu_scores, parse_multi_choice_response, parse_open_response
from anymal_lit.metrics.ranking import BinaryRankingMetric, auroc, binary_scores, yes_probability
from anymal_lit.metrics.relaxed import RelaxedAccuracyMetric, relaxed_accuracy, relaxed_scores
from anymal_lit.metrics.vqa import VQAMetric, normalize_answer, vqa_accuracy, vqa_scores

__all__ = [
    "BinaryRankingMetric",
    "CaptionMetric",
    "ChoiceMetric",
    "MMMUMetric",
    "MathVistaMetric",
    "RelaxedAccuracyMetric",
    "VQAMetric",
    "auroc",
    "binary_scores",
    "caption_scores",
    "cider_score",
    "circular_variants",
    "extract_choice",
    "mathvista_scores",
    "mmbench_circular",
    "mmmu_scores",
    "multiple_choice_accuracy",
    "normalize_answer",
    "parse_multi_choice_response",
    "parse_open_response",
    "relaxed_accuracy",
    "relaxed_scores",
    "vqa_accuracy",
    "vqa_scores",
    "yes_probability",
]
