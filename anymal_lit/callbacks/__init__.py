"""Lightning callbacks: generation-based evaluation, the scorecard and the writer of ``anymal-lit predict``."""

from anymal_lit.callbacks.answer_eval import AnswerEvalCallback
from anymal_lit.callbacks.caption_eval import CaptionEvalCallback, GenerationEvalCallback, read_coco_references
from anymal_lit.callbacks.paper_tables import PaperTablesCallback, paper_tables
from anymal_lit.callbacks.prediction_writer import PredictionWriter
from anymal_lit.callbacks.preference_eval import PreferenceEvalCallback
from anymal_lit.callbacks.qa_eval import ChoiceEvalCallback, QAEvalCallback
from anymal_lit.callbacks.scorecard import update_scorecard

__all__ = [
    "AnswerEvalCallback",
    "CaptionEvalCallback",
    "ChoiceEvalCallback",
    "GenerationEvalCallback",
    "PaperTablesCallback",
    "PredictionWriter",
    "PreferenceEvalCallback",
    "QAEvalCallback",
    "paper_tables",
    "read_coco_references",
    "update_scorecard",
]
