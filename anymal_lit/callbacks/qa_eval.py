"""Generation-based evaluation of short answers (VQA accuracy) and multiple choice (MMBench CircularEval)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L

from anymal_lit.callbacks.caption_eval import GenerationEvalCallback
from anymal_lit.data.records import Record
from anymal_lit.metrics.choice import ChoiceMetric
from anymal_lit.metrics.vqa import VQAMetric


class RecordTargetEvalCallback(GenerationEvalCallback):
    """Generation eval whose targets come from the evaluated JSONL's own records (see :meth:`target`)."""

    def target(self, record: Record) -> Any:
        raise NotImplementedError

    def _targets(self) -> dict[str, Any]:
        if not self.references:
            records = self._datamodule.records(self.data, require_response=False)
            self.references = {r.id: self.target(r) for r in records}
        return self.references

    def update(self, metric: Any, ids: list[str], texts: list[str]) -> None:
        targets = self._targets()
        metric.update(ids, texts, [targets[i] for i in ids])

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str = "") -> dict[str, float]:
        self._datamodule = trainer.datamodule
        self._targets()  # every rank reads every record's target before any collective: a bad one fails them all
        return super().evaluate(trainer, pl_module, suffix)


class QAEvalCallback(RecordTargetEvalCallback):
    """Answers the questions of a JSONL set and scores them with VQA accuracy (rule: official ``vqaEval.py``).

    Human answers come from each record's ``answers`` list (VQAv2 style) or, without one, its final assistant turn.
    Logs ``val/<name>/{vqa_official,vqa_always,exact_match}`` (fractions), writes predictions and merges the scores
    into the scorecard like :class:`CaptionEvalCallback`.

    Args:
        data: JSONL of questions (the final assistant turn, if any, is dropped from the prompt).
        name: Benchmark name in logs and the scorecard.
        **kwargs: The schedule, batching and reporting arguments of :class:`GenerationEvalCallback`.
    """

    def __init__(self, data: str, name: str = "vqa", **kwargs: Any) -> None:
        super().__init__(data, name, **kwargs)

    def new_metric(self) -> VQAMetric:
        return VQAMetric()

    def target(self, record: Record) -> list[str]:
        answers = record.extra.get("answers")
        if not answers and record.messages[-1]["role"] == "assistant":
            answers = [record.messages[-1]["content"]]
        if not answers:
            raise ValueError(f"{record.where()}: no 'answers' and no final assistant turn to score against")
        return [str(a) for a in answers]


class ChoiceEvalCallback(RecordTargetEvalCallback):
    """Multiple-choice evaluation: MMBench CircularEval (rule: VLMEvalKit exact matching, no LLM judge) or plain
    accuracy (AI2D / MMMU-style letters).

    Records carry ``index`` (rotations of one question share ``index % 1_000_000``), ``options`` (letter -> text),
    ``answer`` (letter) and optionally ``category`` (as written by ``anymal_lit.data.benchmarks.mmbench_records``).
    Logs ``val/<name>/{circular,vanilla,unresolved,...}`` or ``accuracy``.

    Args:
        data: JSONL of multiple-choice records.
        name: Benchmark name in logs and the scorecard.
        circular: Score with CircularEval (else plain per-record accuracy).
        **kwargs: The schedule, batching and reporting arguments of :class:`GenerationEvalCallback`.
    """

    def __init__(self, data: str, name: str = "mmbench", circular: bool = True, **kwargs: Any) -> None:
        super().__init__(data, name, **kwargs)
        self.circular = circular

    def new_metric(self) -> ChoiceMetric:
        return ChoiceMetric(circular=self.circular)

    def target(self, record: Record) -> dict[str, Any]:
        missing = [k for k in ("index", "options", "answer") if k not in record.extra]
        if missing:
            raise ValueError(f"{record.where()}: multiple-choice records need {missing}")
        keep = ("index", "options", "answer", "category")
        return {k: record.extra[k] for k in keep if k in record.extra}
