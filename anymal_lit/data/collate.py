"""Datasets of conversation records and the padding collator."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.feature_cache import CachedFeatures
from anymal_lit.data.records import Record, RecordError
from anymal_lit.encoders.base import MediaError, MediaProcessor
from anymal_lit.losses import IGNORE_INDEX
from anymal_lit.models.batch import Batch, MediaGroup
from anymal_lit.models.padding import attention_mask, pad_rows

log = logging.getLogger(__name__)

Sample = dict[str, Any]


class ConversationDataset(Dataset):
    """Records -> tokenized samples with their media loaded into encoder pieces.

    Args:
        records: Validated records.
        chat: Tokenizer wrapper.
        processors: Modality -> media file loader (from the model's encoders).
        generation: Build generation prompts (no response, no labels) instead of training examples.
        skip_bad_records: Return ``None`` (dropped by the collator, counted in ``batch["skipped"]``, logged) for
            records whose media fail to load, instead of raising. Any exception of a media loader counts as a bad
            file (its message names the record and file; in strict mode the original error is chained).
    """

    def __init__(
        self,
        records: list[Record],
        chat: ChatTokenizer,
        processors: dict[str, MediaProcessor],
        generation: bool = False,
        skip_bad_records: bool = False,
    ) -> None:
        self.records = records
        self.chat = chat
        self.processors = processors
        self.generation = generation
        self.skip_bad_records = skip_bad_records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample | None:
        record = self.records[index]
        return load_sample(record, index, self.chat, self.processors, self.generation, self.skip_bad_records)


def load_sample(
    record: Record,
    index: int,
    chat: ChatTokenizer,
    processors: dict[str, MediaProcessor],
    generation: bool = False,
    skip_bad_records: bool = False,
) -> Sample | None:
    """One record -> a tokenized sample with its media loaded (``None`` for a bad record with ``skip_bad_records``)."""
    try:
        media = []
        for modality, path in record.media:
            if modality not in processors:
                raise RecordError(f"{record.where()}: no {modality} encoder in the model for {path}")
            try:
                media.append((modality, processors[modality](path)))
            except MediaError as err:
                raise RecordError(f"{record.where()}: {err}") from None
            except Exception as err:  # a decoder failing in a way its loader did not foresee: still name the record
                raise RecordError(
                    f"{record.where()}: {modality} file cannot be loaded: {path} ({type(err).__name__}: {err})"
                ) from err
        if generation:
            input_ids, labels = chat.generation_prompt(record), None
        else:
            input_ids, labels = chat.training_example(record)
    except RecordError as err:
        if not skip_bad_records:
            raise
        log.warning("skipping %s", err)
        return None
    return {"id": record.id, "input_ids": input_ids, "labels": labels, "media": media, "index": index}


@dataclass
class PaddingCollator:
    """Pads samples to the longest row and groups media pieces per modality (see ``anymal_lit.models.Batch``).

    Samples that failed to load (``None``, only with ``skip_bad_records``) are dropped and counted in
    ``batch["skipped"]``.
    """

    pad_token_id: int

    def __call__(self, samples: list[Sample | None]) -> Batch:
        kept = [s for s in samples if s is not None]
        if not kept:
            return {"skipped": len(samples)}
        rows = [torch.as_tensor(s["input_ids"], dtype=torch.long) for s in kept]
        media: dict[str, dict[str, list]] = {}
        for sample in kept:
            for modality, pieces in sample["media"]:
                group = media.setdefault(modality, {"pieces": [], "features": [], "counts": [], "cached": []})
                cached = isinstance(pieces, CachedFeatures)
                group["features" if cached else "pieces"].append(pieces.features if cached else pieces)
                group["counts"].append(pieces.shape[0])
                group["cached"].append(cached)
        batch: Batch = {
            "ids": [s["id"] for s in kept],
            "index": torch.tensor([s["index"] for s in kept]),
            "input_ids": pad_rows(rows, self.pad_token_id),
            "attention_mask": attention_mask([len(row) for row in rows]),
            "media": {m: _media_group(g) for m, g in media.items()},
            "skipped": len(samples) - len(kept),
        }
        if kept[0]["labels"] is not None:
            labels = [
                row.new_full(row.shape, IGNORE_INDEX) if s["labels"] is None else s["labels"]
                for s, row in zip(kept, rows)
            ]
            batch["labels"] = pad_rows([torch.as_tensor(row, dtype=torch.long) for row in labels], IGNORE_INDEX)
        return batch


def _media_group(group: dict[str, list]) -> MediaGroup:
    """One modality's items: ``pieces`` to encode and/or ``features`` from the cache, ``counts`` per item and, when
    any item was cached, ``cached`` (which items' pieces are in ``features``)."""
    out: MediaGroup = {"counts": torch.tensor(group["counts"])}
    if group["pieces"]:
        out["pieces"] = torch.cat(group["pieces"])
    if group["features"]:
        out["features"] = torch.cat(group["features"])
        out["cached"] = torch.tensor(group["cached"])
    return out
