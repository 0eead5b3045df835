"""Benchmark metrics that reproduce the reference implementations (see each module for the rule it follows)."""

from anymal_lit.metrics.caption import CaptionMetric, best_constant_cider, caption_scores, cider_score

__all__ = ["CaptionMetric", "best_constant_cider", "caption_scores", "cider_score"]
