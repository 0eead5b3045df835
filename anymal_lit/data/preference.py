"""Preference data for DPO: a prompt (any media), a chosen and a rejected response.

One JSON object per line, the conversation without its final answer plus the two candidates::

    {"id": "p1", "image": "images/1.png",
     "conversations": [{"from": "human", "value": "<image>\\nDescribe the picture."}],
     "chosen": "a large red circle on the left", "rejected": "a large blue circle on the left"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from anymal_lit.data.collate import ConversationDataset, PaddingCollator, Sample
from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.data.records import Record, RecordError
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

log = logging.getLogger(__name__)


def check_preference(record: Record) -> None:
    """Chosen and rejected must be non-empty strings that differ."""
    chosen, rejected = record.extra.get("chosen"), record.extra.get("rejected")
    if not isinstance(chosen, str) or not chosen.strip():
        raise RecordError(f"{record.where()}: empty or missing 'chosen' response")
    if not isinstance(rejected, str) or not rejected.strip():
        raise RecordError(f"{record.where()}: empty or missing 'rejected' response")
    if chosen.strip() == rejected.strip():
        raise RecordError(f"{record.where()}: 'chosen' and 'rejected' are identical")
    marks = [tok for tok in DEFAULT_PLACEHOLDERS.values() if tok in chosen + rejected]
    if marks:  # media belong to the prompt; a placeholder in a response would have no item to splice in
        raise RecordError(f"{record.where()}: 'chosen' or 'rejected' holds the placeholder {marks[0]}")
    if record.messages[-1]["role"] == "assistant":
        raise RecordError(f"{record.where()}: the conversation must end before the response (given as chosen/rejected)")


def pair_hash(record: Record) -> str:
    """A short hash of what a pair's log-probs depend on: the prompt turns, both responses and the media paths
    (relative to the JSONL file's folder, so a data folder moved whole keeps its hashes). DPO's precomputed
    reference keys its entries by it, so a record id reused with other content never picks up another pair's values.
    """
    folder = os.path.dirname(record.source.rpartition(":")[0]) or "."
    media = [(modality, os.path.relpath(path, folder)) for modality, path in record.media]
    content = [record.messages, record.extra.get("chosen"), record.extra.get("rejected"), media]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:16]


def with_response(record: Record, response: str) -> Record:
    messages = [*record.messages, {"role": "assistant", "content": response}]
    return Record(record.id, messages, record.media, record.source, record.extra)


class PreferenceDataset(ConversationDataset):
    """Each item is ``(chosen_sample, rejected_sample)``: the same prompt and media with either response; the chosen
    sample carries the pair's :func:`pair_hash` (``pair_hash``)."""

    def __getitem__(self, index: int) -> tuple[Sample, Sample] | None:
        record = self.records[index]
        try:
            check_preference(record)
        except RecordError:
            if not self.skip_bad_records:
                raise
            return None
        pair = []
        for key in ("chosen", "rejected"):
            self.records[index] = with_response(record, record.extra[key])
            try:
                sample = super().__getitem__(index)
            finally:
                self.records[index] = record
            if sample is None:
                return None
            pair.append(sample)
        pair[0]["pair_hash"] = pair_hash(record)
        return pair[0], pair[1]


@dataclass
class PreferenceCollator:
    """Collates pairs into one padded batch: rows ``[:n]`` are the chosen responses, rows ``[n:]`` the rejected;
    ``pair_hashes`` holds the ``n`` pairs' :func:`pair_hash`."""

    pad_token_id: int

    def __call__(self, pairs: list[tuple[Sample, Sample] | None]) -> dict[str, Any]:
        kept = [p for p in pairs if p is not None]
        if not kept:
            return {"skipped": len(pairs)}
        batch = PaddingCollator(self.pad_token_id)([c for c, _ in kept] + [r for _, r in kept])
        batch["num_pairs"] = len(kept)
        batch["pair_hashes"] = [c["pair_hash"] for c, _ in kept]
        batch["skipped"] = len(pairs) - len(kept)
        return batch


class PreferenceDataModule(ConversationDataModule):
    """Preference JSONL files (see module docstring) for :class:`~anymal_lit.stages.DPOStage`.

    Records with empty or identical responses raise an error naming them, or are skipped and counted with
    ``skip_bad_records``. Arguments as :class:`ConversationDataModule`.
    """

    def preference_records(self, path: str) -> list[Record]:
        """Validated preference records of a file (bad ones raise, or are skipped and counted)."""
        records = self.records(path, require_response=False)
        good = []
        for record in records:
            try:
                check_preference(record)
                good.append(record)
            except RecordError:
                if not self.skip_bad_records:
                    raise
        if len(good) < len(records):
            log.warning("%s: skipped %d of %d preference records", path, len(records) - len(good), len(records))
        return good

    def dataset(self, path: str, generation: bool = False, prompt: str | None = None) -> ConversationDataset:
        base = super().dataset(path, generation=True, prompt=prompt)  # prompts: no final response required
        if generation:  # plain prompts (e.g. a QA set scored by a callback during DPO)
            return base
        if prompt is not None:
            raise ValueError(f"{path}: a prompt template applies to generation sets, not to preference pairs")
        records = self.preference_records(path)
        return PreferenceDataset(records, base.chat, base.processors, False, base.skip_bad_records)

    def collator(self, generation: bool = False) -> Any:
        if generation:
            return super().collator(generation)
        return PreferenceCollator(self.tokenizer.pad_token_id)
