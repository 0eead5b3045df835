"""Lightning callbacks: generation-based evaluation and the scorecard."""

from anymal_lit.callbacks.caption_eval import CaptionEvalCallback, read_coco_references
from anymal_lit.callbacks.scorecard import update_scorecard

__all__ = ["CaptionEvalCallback", "read_coco_references", "update_scorecard"]
