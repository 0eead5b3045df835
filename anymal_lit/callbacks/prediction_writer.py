"""What ``anymal-lit predict`` generates, written as JSONL: one line per record, in input order, from any number of
processes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import BasePredictionWriter

from anymal_lit.collectives import all_gather_objects

log = logging.getLogger(__name__)

# (dataset index, record id, generated text) as each process collects them
Row = tuple[int, str, str]


class PredictionWriter(BasePredictionWriter):
    """Writes every record's generated reply to a JSONL file, with what the record says the answer is.

    One line per record of the predict file, in the file's order::

        {"id": "vqa-17", "prediction": "red", "reference": "red", "answers": ["red", "red", ...], ...}

    ``reference`` is the record's final assistant turn when it has one (the prompt is the conversation without it);
    the record's other keys (``answers``, ``references``, ``options``, ``answer``, ...) follow as they are.
    ``anymal-lit predict`` adds this callback (options ``--predictions.path``, ``--predictions.max_new_tokens``).

    With several processes each generates its share; at the end rank 0 gathers all of them, keeps each record once
    (a sampler that pads its shards to equal length repeats records) and sorts them by their index in the file.
    Records skipped as bad (``skip_bad_records``) have no line. After ``trainer.predict`` rank 0's writer holds the
    file in ``written`` and ``{"generated", "written", "skipped"}`` in ``counts``; the CLI prints them.

    Args:
        path: JSONL file to write. Default: ``predictions.jsonl`` in the run's folder (``trainer.log_dir``, else
            ``default_root_dir``). Its folder is created.
        max_new_tokens: Longest reply generated per record. Default: the stage's ``predict_max_new_tokens`` (64).
    """

    def __init__(self, path: str | None = None, max_new_tokens: int | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.max_new_tokens = max_new_tokens
        self.written: Path | None = None
        self.counts: dict[str, int] = {}
        self._rows: dict[int, list[Row]] = {}
        self._out: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.max_new_tokens is not None:
            pl_module.predict_max_new_tokens = self.max_new_tokens
        self._rows = {}
        # log_dir broadcasts from rank 0, so every process asks for it, here, together
        self._out = (
            Path(self.path) if self.path else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"
        )

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not prediction:  # every record of the batch was skipped as bad
            return
        # the dataset index each kept sample carries: Lightning's `batch_indices` also list the samples the collator
        # dropped as bad (skip_bad_records), so they would pair predictions with the wrong records
        indices = batch["index"].tolist()
        rows = self._rows.setdefault(dataloader_idx, [])
        rows.extend((i, str(p["id"]), p["prediction"]) for i, p in zip(indices, prediction))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        gathered = all_gather_objects(self._rows)  # every process takes part, whatever its share was
        self._rows = {}
        if not trainer.is_global_zero:
            return
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for idx, loader in enumerate(loaders):
            out = self._out if len(loaders) == 1 else self._out.with_name(f"{self._out.stem}_{idx}{self._out.suffix}")
            self._write(out, loader.dataset, [row for part in gathered for row in part.get(idx, [])])

    def _write(self, out: Path, dataset: Any, rows: list[Row]) -> None:
        unique: dict[int, tuple[str, str]] = {}
        for index, rid, text in rows:
            unique.setdefault(index, (rid, text))
        records = getattr(dataset, "records", None)
        lines = [_line(rid, text, records[i] if records else None) for i, (rid, text) in sorted(unique.items())]
        _write_jsonl(out, lines)
        total = len(records) if records else len(unique)
        self.counts = {"generated": len(rows), "written": len(unique), "skipped": total - len(unique)}
        log.info("wrote %d predictions to %s (%d records skipped as bad)", len(unique), out, self.counts["skipped"])
        self.written = out


def _line(rid: str, prediction: str, record: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"id": rid, "prediction": prediction}
    if record is None:
        return line
    if record.messages[-1]["role"] == "assistant":
        line["reference"] = record.messages[-1]["content"]
    # the record's own keys (answers, references, options, ...) never replace what was generated
    line.update({k: v for k, v in record.extra.items() if k not in line})
    return line


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated file under the final name
