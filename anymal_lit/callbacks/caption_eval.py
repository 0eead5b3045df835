"""Generation-based captioning evaluation during training (CIDEr and friends), with samples in TensorBoard."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from anymal_lit.callbacks.sample_figures import log_sample
from anymal_lit.callbacks.schedule import ScheduledEvaluation, evaluation_share
from anymal_lit.data.prompts import get_prompt
from anymal_lit.metrics.caption import CaptionMetric
from anymal_lit.metrics.json_caption import JSONCaptionMetric

log = logging.getLogger(__name__)


def read_coco_references(path: str | Path) -> dict[str, list[str]]:
    """COCO caption annotations (``images``/``annotations``) -> image id (as a string) -> reference captions."""
    data = json.loads(Path(path).read_text())
    refs: dict[str, list[str]] = {}
    for ann in data["annotations"]:
        refs.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    return refs


class GenerationEvalCallback(ScheduledEvaluation):
    """Shared machinery: generate for a JSONL set before fit, every N epochs and on validate; score; report.

    Subclasses implement :meth:`new_metric` (an object with ``update(ids, predictions)``, ``gathered()`` that
    gathers across processes once, and ``score(predictions, targets)``), set ``default_max_new_tokens`` for their
    kind of answer, and pass these arguments through ``**kwargs`` (so each is declared and documented once, here).

    Args:
        data: JSONL of records to generate for (the final assistant turn, if any, is dropped from the prompt).
        name: Benchmark name in logs and the scorecard.
        every_n_epochs: Evaluation period during fit.
        before_fit: Also evaluate once before the first training step (scores suffixed ``_before``).
        batch_size: Generation batch size (batched greedy decoding with left padding and a KV cache).
        max_new_tokens: Longest generation (None: the benchmark kind's own, e.g. 40 for captions, 8 for answers).
        limit: Evaluate only the first ``limit`` records (None: all).
        num_logged_samples: Predictions shown in TensorBoard.
        scorecard: JSON scorecard to merge the scores into (None: don't write one).
        predictions_dir: Where predictions are written (default: the logger's folder).
        prompt: A task template of :mod:`anymal_lit.data.prompts` (e.g. ``vqa``, ``coco_caption``: the paper's
            system and user messages) that replaces each record's question; None keeps the records' own.
    """

    default_max_new_tokens = 8

    def __init__(
        self,
        data: str,
        name: str,
        every_n_epochs: int = 1,
        before_fit: bool = True,
        batch_size: int = 16,
        max_new_tokens: int | None = None,
        limit: int | None = None,
        num_logged_samples: int = 4,
        scorecard: str | None = None,
        predictions_dir: str | None = None,
        prompt: str | None = None,
    ) -> None:
        if prompt is not None:
            get_prompt(prompt)  # an unknown name fails here, at configuration, not after an epoch of training
        self.prompt = prompt
        self.data = data
        self.name = name
        self.every_n_epochs = every_n_epochs
        self.before_fit = before_fit
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens or self.default_max_new_tokens
        self.limit = limit
        self.num_logged_samples = num_logged_samples
        self.scorecard = scorecard
        self.predictions_dir = predictions_dir
        self.last_scores: dict[str, float] = {}
        self.references: dict[str, list[str]] = {}

    def new_metric(self) -> Any:
        raise NotImplementedError

    def update(self, metric: Any, ids: list[str], texts: list[str]) -> None:
        metric.update(ids, texts)

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def _loader(self, trainer: L.Trainer) -> DataLoader:
        datamodule = trainer.datamodule
        loader = datamodule.dataloader(self.data, self.batch_size, generation=True, prompt=self.prompt)
        dataset = loader.dataset
        count = len(dataset) if self.limit is None else min(self.limit, len(dataset))
        shard = Subset(dataset, evaluation_share(count, trainer))  # the metric gathers every share before scoring
        return DataLoader(shard, batch_size=self.batch_size, collate_fn=loader.collate_fn, num_workers=0)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str = "") -> dict[str, float]:
        """Generate, score and report; returns lower-case metric names (with ``suffix``) -> score."""
        was_training = pl_module.training
        pl_module.eval()
        metric = self.new_metric()
        predictions: dict[str, str] = {}
        loader = self._loader(trainer)
        bar = tqdm(loader, desc=f"{self.name}: generating", leave=False, disable=not trainer.is_global_zero)
        for batch in bar:
            if "input_ids" not in batch:  # all skipped: generate for a placeholder (discarded) so that sharded
                pl_module.model.generate(pl_module.placeholder_batch(), max_new_tokens=1)  # ranks stay in step
                continue
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            texts = pl_module.model.generate(batch, max_new_tokens=self.max_new_tokens)
            self.update(metric, [str(r) for r in batch["ids"]], texts)
            predictions.update(zip(map(str, batch["ids"]), texts))
        all_predictions, targets = metric.gathered()
        raw = metric.score(all_predictions, targets)
        pl_module.train(was_training)
        scores = {f"{k.lower()}{suffix}": v for k, v in raw.items()}
        self.last_scores.update(scores)
        self._report(trainer, pl_module, scores, all_predictions, suffix)
        return scores

    @rank_zero_only
    def _report(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        scores: dict[str, float],
        predictions: dict[str, str],
        suffix: str,
    ) -> None:
        self.write_scores(trainer, pl_module, scores, predictions, suffix)
        self._log_samples(trainer, pl_module, predictions, suffix)

    def _log_samples(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: dict[str, str], suffix: str
    ) -> None:
        """One figure per sample (its media with the prompt, the answer and the references under it)."""
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        records = {r.id: r for r in trainer.datamodule.records(self.data, require_response=False)}
        for i, (rid, text) in enumerate(list(predictions.items())[: self.num_logged_samples]):
            record = records.get(rid)
            prompt = " ".join(m["content"] for m in record.messages if m["role"] == "user") if record else ""
            log_sample(
                experiment,
                f"samples/{self.name}{suffix}/{i}",
                trainer.global_step,
                record.media if record else [],
                pl_module.model.encoders,
                f"[{rid}] {prompt}",
                text,
                _reference_texts(self.references.get(rid)) or _record_references(record),
            )


def _reference_texts(target: Any) -> list[str]:
    """What a callback scores against, as lines under a sample: reference captions or answers as they are; a
    multiple-choice target (``answer`` letter and ``options``) as ``B. the option's text``."""
    if target is None:
        return []
    if isinstance(target, dict):
        if "answers" in target and isinstance(target["answers"], list):
            return [str(a) for a in target["answers"]]
        answer, options = target.get("answer"), target.get("options") or {}
        if answer is not None:
            return [f"{answer}. {options[answer]}" if isinstance(options, dict) and answer in options else str(answer)]
        return [str(target)]
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target]
    return [str(target)]


def _record_references(record: Any) -> list[str]:
    """A QA record's expected answer(s): its ``answers`` (VQA), else its final assistant turn."""
    if record is None:
        return []
    answers = record.extra.get("answers")
    if isinstance(answers, list) and answers:
        # VQA lists ten annotators' answers, often the same: show each once
        return list(dict.fromkeys(a["answer"] if isinstance(a, dict) else str(a) for a in answers))
    last = record.messages[-1] if record.messages else None
    return [last["content"]] if last and last["role"] == "assistant" else []


class CaptionEvalCallback(GenerationEvalCallback):
    """Generates captions for a JSONL set and scores them against COCO-format references.

    Runs before training (scores suffixed ``_before``: the untrained projector), every ``every_n_epochs`` epochs
    after validation, and on ``anymal-lit validate``. Logs ``val/<name>/{cider,bleu_4,meteor,rouge_l}``, writes
    the predictions to ``<predictions_dir>/<stage>_<name>[_before].json``, adds sample predictions beside their
    images to TensorBoard and merges the scores into ``scorecard`` under ``stages.<stage>.<name>``. Each process
    generates its share of the records; the metric gathers all of them before scoring (CIDEr is corpus-level).

    Args:
        data: JSONL whose records' ``id`` matches the references' ``image_id``; the final assistant turn is dropped.
        references: COCO caption annotation JSON; None takes each record's own ``references`` list (as written by
            ``anymal-lit convert``, e.g. for AudioCaps).
        name: Benchmark name in logs and the scorecard.
        with_meteor: Compute METEOR (starts a Java process).
        **kwargs: The schedule, batching and reporting arguments of :class:`GenerationEvalCallback`.
    """

    default_max_new_tokens = 40

    def __init__(
        self,
        data: str,
        references: str | None = None,
        name: str = "image_caption",
        with_meteor: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, name, **kwargs)
        self.references = read_coco_references(references) if references else {}
        self.with_meteor = with_meteor

    def new_metric(self) -> CaptionMetric:
        if self.prompt is not None and get_prompt(self.prompt).answer_format == "json_caption":
            return JSONCaptionMetric(with_meteor=self.with_meteor)  # the caption is read out of the JSON answer
        return CaptionMetric(with_meteor=self.with_meteor)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str = "") -> dict[str, float]:
        if not self.references:
            records = trainer.datamodule.records(self.data, require_response=False)
            self.references = {r.id: list(r.extra.get("references") or []) for r in records}
            self.references = {k: v for k, v in self.references.items() if v}
        return super().evaluate(trainer, pl_module, suffix)

    def update(self, metric: Any, ids: list[str], texts: list[str]) -> None:
        missing = [rid for rid in ids if rid not in self.references]
        if missing:
            raise KeyError(f"{self.data}: records {missing[:3]} have no references")
        metric.update(ids, texts, [self.references[r] for r in ids])
