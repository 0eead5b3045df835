"""Evaluation by likelihood during training: each record's candidate answers are scored by the model's
log-likelihood (:mod:`anymal_lit.inference.likelihood`), no text is generated.

Two modes: ``binary`` ranks records by the probability of the positive answer (Hateful Memes: p("yes") against
p("no"), scored with AUROC and accuracy) and ``choice`` picks the most likely option of a multiple-choice record
(accuracy, per category). Multi-process runs shard the records like the generation callbacks (every rank the same
number of batches, padded with a repeat the scores count once), gather the scores with
:func:`anymal_lit.collectives.gather_objects` on every rank, and a rank whose batch was all skipped still runs a
forward, so sharded strategies stay in step.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from anymal_lit.callbacks.schedule import ScheduledEvaluation, evaluation_share
from anymal_lit.collectives import gather_objects
from anymal_lit.data.prompts import apply_prompt
from anymal_lit.data.records import Record
from anymal_lit.inference.likelihood import REDUCTIONS, score_candidates
from anymal_lit.metrics.ranking import binary_scores

MODES = ("binary", "choice")
CHOICE_TEXTS = ("letter", "text")


class LikelihoodEvalCallback(ScheduledEvaluation):
    """Scores a JSONL set by the likelihood of candidate answers before fit, every N epochs and on validate.

    ``binary``: records carry ``label`` (1 = positive); ``candidates[0]`` is the positive answer. Logs
    ``val/<name>/{auroc,accuracy}``. ``choice``: records carry ``options`` (letter -> text), ``answer`` (a letter)
    and optionally ``category``; the candidates are the options' letters or texts. Logs ``val/<name>/accuracy``
    and ``accuracy/<category>``. Writes each record's candidate probabilities to
    ``<predictions_dir>/<stage>_<name>[_before].json`` and merges the scores into the scorecard.

    Args:
        data: JSONL of records (a final assistant turn, if any, is replaced by each candidate).
        name: Benchmark name in logs and the scorecard.
        mode: ``binary`` or ``choice`` (see above).
        candidates: The answers of ``binary`` mode, the positive one first.
        choice_text: In ``choice`` mode, score each option's ``letter`` or its ``text``.
        prompt: A template of :mod:`anymal_lit.data.prompts` (e.g. ``hateful_memes``) applied to every record;
            None keeps the records' own conversation.
        reduction: ``sum`` or ``mean`` (length-normalised) of the candidate tokens' log-probabilities.
        every_n_epochs: Evaluation period during fit.
        before_fit: Also evaluate once before the first training step.
        batch_size: Records per forward (each adds one row per candidate).
        limit: Evaluate only the first ``limit`` records (None: all).
        scorecard: JSON scorecard to merge the scores into.
        predictions_dir: Where the probabilities are written (default: the logger's folder).
    """

    def __init__(
        self,
        data: str,
        name: str = "hateful_memes",
        mode: str = "binary",
        candidates: list[str] | None = None,
        choice_text: str = "letter",
        prompt: str | None = None,
        reduction: str = "sum",
        every_n_epochs: int = 1,
        before_fit: bool = True,
        batch_size: int = 8,
        limit: int | None = None,
        scorecard: str | None = None,
        predictions_dir: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if choice_text not in CHOICE_TEXTS:
            raise ValueError(f"choice_text must be one of {CHOICE_TEXTS}, got {choice_text!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.data, self.name, self.mode = data, name, mode
        self.candidates = list(candidates) if candidates is not None else ["yes", "no"]
        if mode == "binary" and len(self.candidates) != 2:
            raise ValueError(f"binary mode needs two candidates (positive first), got {self.candidates}")
        self.choice_text, self.prompt, self.reduction = choice_text, prompt, reduction
        self.every_n_epochs, self.before_fit = every_n_epochs, before_fit
        self.batch_size, self.limit = batch_size, limit
        self.scorecard, self.predictions_dir = scorecard, predictions_dir
        self.last_scores: dict[str, float] = {}

    # ---- what a record is scored on ------------------------------------------------------------------------------
    def record_candidates(self, record: Record) -> list[str]:
        if self.mode == "binary":
            return self.candidates
        options = record.extra["options"]
        return sorted(options) if self.choice_text == "letter" else [str(options[k]) for k in sorted(options)]

    def target(self, record: Record) -> Any:
        keys = ("label",) if self.mode == "binary" else ("options", "answer")
        missing = [k for k in keys if k not in record.extra]
        if missing:
            raise ValueError(f"{record.where()}: {self.mode} likelihood evaluation needs {missing}")
        if self.mode == "binary":
            return int(record.extra["label"])
        return {k: record.extra[k] for k in ("options", "answer", "category") if k in record.extra}

    # ---- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str = "") -> dict[str, float]:
        """Score this rank's share, gather every rank's (a collective), score; returns name -> value."""
        datamodule = trainer.datamodule
        records = datamodule.records(self.data, require_response=False)
        records = records if self.limit is None else records[: self.limit]
        if self.prompt:
            records = [apply_prompt(r, self.prompt) for r in records]
        targets = {r.id: self.target(r) for r in records}  # every rank checks every record before any collective
        mine = evaluation_share(len(records), trainer)  # equal shares: equal forwards
        chat = datamodule.chat_tokenizer()
        was_training = pl_module.training
        pl_module.eval()
        rows = []
        for start in range(0, len(mine), self.batch_size):
            chunk = [records[i] for i in mine[start : start + self.batch_size]]
            results = score_candidates(
                pl_module.model, chunk, [self.record_candidates(r) for r in chunk], chat, datamodule.processors,
                self.reduction, pl_module.device, datamodule.skip_bad_records,
            )  # fmt: skip
            if all(r is None for r in results):  # all skipped: a forward anyway, so sharded ranks stay in step
                # (the last training batch, which runs the media encoders ZeRO-3 / FSDP2 gather on the other ranks)
                pl_module.model(pl_module.batch_to_evaluate(), pack=False)
            rows += [(r.id, res, targets[r.id]) for r, res in zip(chunk, results) if res is not None]
        pl_module.train(was_training)
        scored: dict[str, tuple[dict[str, list[float]], Any]] = {}
        for rid, result, target in gather_objects(rows):  # every rank, every time: a collective
            scored.setdefault(rid, (result, target))
        if not scored:
            raise ValueError(f"{self.name}: no record of {self.data} could be scored")
        scores = {f"{k}{suffix}": v for k, v in self.score(scored).items()}
        self.last_scores.update(scores)
        self._report(trainer, pl_module, scores, {rid: res for rid, (res, _) in scored.items()}, suffix)
        return scores

    def score(self, scored: dict[str, tuple[dict[str, list[float]], Any]]) -> dict[str, float]:
        ids = sorted(scored)
        if self.mode == "binary":
            probabilities = [scored[i][0]["probs"][0] for i in ids]
            return {**binary_scores(probabilities, [scored[i][1] for i in ids]), "num_records": float(len(ids))}
        hits, by_category = [], {}
        for i in ids:
            result, target = scored[i]
            letters = sorted(target["options"])
            best = max(range(len(letters)), key=lambda k: result["probs"][k])
            hit = letters[best] == target["answer"]
            hits.append(hit)
            if "category" in target:
                by_category.setdefault(str(target["category"]), []).append(hit)
        out = {"accuracy": sum(hits) / len(hits), "num_records": float(len(ids))}
        out.update({f"accuracy/{c}": sum(v) / len(v) for c, v in sorted(by_category.items())})
        return out

    @rank_zero_only
    def _report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, scores: dict[str, float], results: dict, suffix: str
    ) -> None:
        self.write_scores(trainer, pl_module, scores, results, suffix)
