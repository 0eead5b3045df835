"""Scoring by likelihood: how probable the model finds each candidate answer to a prompt (no generation).

Each candidate becomes the record's assistant turn and is tokenized exactly as in training
(:class:`~anymal_lit.data.chat.ChatTokenizer`: the response tokens are the candidate and the template's end-of-turn
marker), so its score is the log-likelihood of answering with it. Every candidate of every record goes into ONE
batched teacher-forced forward (a record's media are loaded and encoded once per candidate row). Scores are the
sum of the response tokens' log-probabilities (``reduction="sum"``) or their mean (``"mean"``, length-normalised);
a record's probabilities are the softmax of its candidates' scores.

Used by :class:`~anymal_lit.callbacks.likelihood_eval.LikelihoodEvalCallback` (Hateful Memes' p(yes), multiple
choice by likelihood) and usable on its own with a loaded model. No Lightning here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.collate import PaddingCollator, load_sample
from anymal_lit.data.records import Record
from anymal_lit.losses import IGNORE_INDEX, shift_for_next_token
from anymal_lit.models.anymal import AnyMALModel

REDUCTIONS = ("sum", "mean")


def response_logps(model: AnyMALModel, batch: dict[str, Any], reduction: str = "sum") -> torch.Tensor:
    """``[B]`` log-likelihood of each row's labelled tokens: their sum, or their mean (``reduction="mean"``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    out = model(batch, pack=False)  # per-row logits, labels spliced to the same positions
    logits, labels = shift_for_next_token(out["logits"], out["labels"])
    mask = labels != IGNORE_INDEX
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if reduction == "mean" else total


def candidate_records(record: Record, candidates: list[str]) -> list[Record]:
    """One copy of ``record`` per candidate, the candidate as its final assistant turn (replacing any answer)."""
    if not candidates:
        raise ValueError(f"{record.where()}: no candidate answers to score")
    prompt = record.messages[:-1] if record.messages[-1]["role"] == "assistant" else record.messages
    return [replace(record, messages=[*prompt, {"role": "assistant", "content": str(c)}]) for c in candidates]


def candidate_batch(
    records: list[Record],
    candidates: list[list[str]],
    chat: ChatTokenizer,
    processors: dict[str, Any],
    pad_token_id: int,
    skip_bad_records: bool = False,
) -> tuple[dict[str, Any] | None, list[int]]:
    """One labelled batch of every (record, candidate) row, and the number of rows of each record (0 for a record
    skipped as bad with ``skip_bad_records``). The batch is None when every record was skipped."""
    samples, sizes = [], []
    for index, (record, options) in enumerate(zip(records, candidates, strict=True)):
        rows = [load_sample(r, index, chat, processors, False, skip_bad_records)
                for r in candidate_records(record, options)]  # fmt: skip
        if any(row is None for row in rows):
            sizes.append(0)
            continue
        samples += rows
        sizes.append(len(rows))
    if not samples:
        return None, sizes
    return PaddingCollator(pad_token_id)(samples), sizes


@torch.no_grad()
def score_candidates(
    model: AnyMALModel,
    records: list[Record],
    candidates: list[list[str]],
    chat: ChatTokenizer,
    processors: dict[str, Any] | None = None,
    reduction: str = "sum",
    device: torch.device | str | None = None,
    skip_bad_records: bool = False,
) -> list[dict[str, list[float]] | None]:
    """Per record, ``{"logps": [...], "probs": [...]}`` over its candidates (in the given order), from one batched
    forward; None for a record skipped as bad.

    Args:
        model: The AnyMAL model (put in eval mode by the caller).
        records: Prompts (a final assistant turn, if any, is replaced by each candidate).
        candidates: Per record, its candidate answers.
        chat: The chat tokenizer of the model's LLM.
        processors: Media loaders (default: the model's).
        reduction: ``sum`` or ``mean`` of the candidate tokens' log-probabilities.
        device: Where the batch goes (default: the model's first parameter's device).
        skip_bad_records: Skip records whose media fail to load instead of raising.
    """
    processors = model.media_processors() if processors is None else processors
    pad = chat.tokenizer.pad_token_id
    batch, sizes = candidate_batch(records, candidates, chat, processors, pad, skip_bad_records)
    if batch is None:
        return [None] * len(records)
    device = device or next(model.parameters()).device
    batch = _to_device(batch, torch.device(device))
    # a plain forward: under FSDP2 the root module gathers its parameters itself, on every rank
    logps = response_logps(model, batch, reduction).double().cpu()
    parts = iter(torch.split(logps, [s for s in sizes if s]))
    out: list[dict[str, list[float]] | None] = []
    for size in sizes:
        part = next(parts) if size else None
        out.append(None if part is None else {"logps": part.tolist(), "probs": part.softmax(0).tolist()})
    return out


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in batch.items()}
