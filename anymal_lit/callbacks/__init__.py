"""Lightning callbacks: generation-based evaluation and the scorecard."""

from anymal_lit.callbacks.caption_eval import CaptionEvalCallback, GenerationEvalCallback, read_coco_references
from anymal_lit.callbacks.preference_eval import PreferenceEvalCallback
from anymal_lit.callbacks.qa_eval import ChoiceEvalCallback, QAEvalCallback
from anymal_lit.callbacks.scorecard import update_scorecard

__all__ = [
    "CaptionEvalCallback",
    "ChoiceEvalCallback",
    "GenerationEvalCallback",
    "PreferenceEvalCallback",
    "QAEvalCallback",
    "read_coco_references",
    "update_scorecard",
]
