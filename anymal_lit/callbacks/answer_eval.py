"""Generation-based evaluation of benchmarks with their own answer rule: ChartQA (relaxed accuracy), MMMU (the
official answer parsing) and MathVista (rule-based extraction)."""

from __future__ import annotations

from typing import Any

from anymal_lit.callbacks.qa_eval import RecordTargetEvalCallback
from anymal_lit.data.records import Record
from anymal_lit.metrics.mathvista import MathVistaMetric
from anymal_lit.metrics.mmmu import MMMUMetric
from anymal_lit.metrics.relaxed import RelaxedAccuracyMetric

RULES = ("relaxed", "mmmu", "mathvista")


class AnswerEvalCallback(RecordTargetEvalCallback):
    """Answers the questions of a JSONL set and scores them by a benchmark's own rule.

    * ``relaxed`` (ChartQA, pix2struct's relaxed accuracy): targets are the record's ``answers`` (or ``answer``, or
      its final assistant turn); logs ``val/<name>/{relaxed_accuracy,relaxed_accuracy_swapped}``.
    * ``mmmu`` (MMMU's ``parse_multi_choice_response`` / ``parse_open_response``): multiple-choice records carry
      ``options`` and the ``answer`` letter, open ones ``answers`` (or ``answer``); ``question_type`` defaults to
      multiple choice when the record has options (VLMEvalKit's TSV keeps none) and ``category`` is the subject.
      Logs ``accuracy``, ``random_fallback``, ``num_questions`` and ``accuracy/<subject>``.
    * ``mathvista``: records carry ``question_type`` (``multi_choice`` / ``free_form``), ``answer_type``,
      ``answer`` (a letter of ``options`` or the option's text for multiple choice, the value otherwise) and
      optionally ``precision`` and ``category``. Logs ``accuracy``, ``accuracy_no_llm``, ``needs_llm``.

    Predictions are written and scores merged into the scorecard like :class:`QAEvalCallback`.

    Args:
        data: JSONL of questions as written by ``anymal-lit convert`` (the final assistant turn is dropped).
        rule: ``relaxed``, ``mmmu`` or ``mathvista`` (see above).
        name: Benchmark name in logs and the scorecard (None: the rule's name, e.g. ``chartqa`` for ``relaxed``).
        **kwargs: The schedule, batching and reporting arguments of :class:`GenerationEvalCallback`.
    """

    default_max_new_tokens = 16

    def __init__(self, data: str, rule: str = "relaxed", name: str | None = None, **kwargs: Any) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        super().__init__(data, name or {"relaxed": "chartqa"}.get(rule, rule), **kwargs)
        self.rule = rule

    def new_metric(self) -> RelaxedAccuracyMetric | MMMUMetric | MathVistaMetric:
        return {"relaxed": RelaxedAccuracyMetric, "mmmu": MMMUMetric, "mathvista": MathVistaMetric}[self.rule]()

    def target(self, record: Record) -> Any:
        return {"relaxed": relaxed_target, "mmmu": mmmu_target, "mathvista": mathvista_target}[self.rule](record)


def _answers(record: Record) -> list[str]:
    """The accepted answers: ``answers``, else ``answer``, else the final assistant turn."""
    answers = record.extra.get("answers")
    if not answers and record.extra.get("answer") not in (None, ""):
        answers = [record.extra["answer"]]
    if not answers and record.messages and record.messages[-1]["role"] == "assistant":
        answers = [record.messages[-1]["content"]]
    if not answers:
        raise ValueError(f"{record.where()}: no 'answers', 'answer' or final assistant turn to score against")
    return [str(a) for a in answers]


def relaxed_target(record: Record) -> list[str]:
    """ChartQA: every accepted answer (the best match counts)."""
    return _answers(record)


def mmmu_target(record: Record) -> dict[str, Any]:
    """MMMU: ``{question_type, answer, options[, subject]}`` for :func:`anymal_lit.metrics.mmmu.mmmu_scores`."""
    extra = record.extra
    options = extra.get("options") or {}
    qtype = extra.get("question_type") or ("multiple-choice" if options else "open")
    if qtype == "multiple-choice":
        if not options or extra.get("answer") not in options:
            raise ValueError(f"{record.where()}: an MMMU multiple-choice record needs 'options' and an 'answer' letter")
        target = {"question_type": qtype, "answer": str(extra["answer"]), "options": dict(options)}
    elif qtype == "open":
        target = {"question_type": qtype, "answer": _answers(record), "options": {}}
    else:
        raise ValueError(f"{record.where()}: unknown MMMU question_type {qtype!r} (multiple-choice or open)")
    if extra.get("category"):
        target["subject"] = str(extra["category"])
    return target


def mathvista_target(record: Record) -> dict[str, Any]:
    """MathVista: the fields of :func:`anymal_lit.metrics.mathvista.mathvista_scores`; a multiple-choice answer given
    as a letter (VLMEvalKit's TSV) becomes its option's text, the string upstream compares against."""
    extra = record.extra
    missing = [k for k in ("question_type", "answer_type", "answer") if k not in extra]
    if missing:
        raise ValueError(f"{record.where()}: MathVista records need {missing}")
    options = extra.get("options") or {}
    choices = [str(options[k]) for k in sorted(options)] if isinstance(options, dict) else [str(o) for o in options]
    answer = str(extra["answer"])
    if extra["question_type"] == "multi_choice":
        if not choices:
            raise ValueError(f"{record.where()}: a MathVista multi_choice record needs 'options'")
        if isinstance(options, dict) and answer in options:
            answer = str(options[answer])
        elif answer not in choices:
            raise ValueError(f"{record.where()}: answer {answer!r} is neither an option letter nor an option")
    target = {
        "question_type": extra["question_type"],
        "answer_type": extra["answer_type"],
        "answer": answer,
        "choices": choices,
        "precision": _precision(record),
    }
    if extra.get("category"):
        target["category"] = str(extra["category"])
    return target


def _precision(record: Record) -> int | None:
    """Decimal places of a float answer; a TSV writes them as text (``"1.0"``), which upstream's ``int()`` rejects."""
    value = record.extra.get("precision")
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except ValueError as err:
        raise ValueError(f"{record.where()}: precision {value!r} is not a number") from err
