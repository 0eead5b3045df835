"""On-policy samples: several sampled replies per prompt from a trained model, the raw material of preference data.

Preference tuning learns most from pairs whose rejected reply is the policy's own kind of error (RLHF-V, POVID):
sample the instruction-tuned model on the prompts, label each reply with a judge (for the toy world the scene itself,
:mod:`anymal_lit.toyworld.preferences`; for real data a reward model or people), and pair a good reply with a bad one.
``anymal-lit sample`` writes every input row back with a ``samples`` list, so a labeler sees everything the row held.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from anymal_lit.data.records import Record, RecordError, parse_record, raw_records
from anymal_lit.inference.chat import collate, generate_batch, placeholders, prepare_samples
from anymal_lit.models.anymal import AnyMALModel

log = logging.getLogger(__name__)


def sample_replies(
    model: AnyMALModel,
    records: list[Record],
    num_samples: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[list[str]]:
    """``num_samples`` replies to each record's prompt (its conversation without a final answer).

    A record's samples are drawn in one batch with its copies, so the replies of a record depend on ``seed`` and
    the batch it falls in only; the same call gives the same replies.

    Args:
        model: The policy (e.g. from :func:`anymal_lit.load_model`).
        records: Prompts; a final assistant turn, if present, is dropped.
        num_samples: Replies per record.
        temperature: Sampling temperature (0: greedy, then every sample is the same).
        top_p: Nucleus sampling mass.
        max_new_tokens: Longest reply.
        batch_size: Sequences per ``generate`` call (records x samples).
        seed: Seed of the sampler.
        progress: Show a progress bar.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1 (got {num_samples}, {batch_size})")
    prompts = [_prompt(r) for r in records]
    per_batch = max(1, batch_size // num_samples)
    replies: list[list[str]] = []
    torch.manual_seed(seed)
    bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not progress)
    for start in range(0, len(prompts), per_batch):
        chunk = prepare_samples(model, prompts[start : start + per_batch])
        batch = collate(model, [s for s in chunk for _ in range(num_samples)])
        texts = generate_batch(model, batch, max_new_tokens, temperature, top_p)
        replies += [texts[i : i + num_samples] for i in range(0, len(texts), num_samples)]
        bar.update(len(chunk))
    bar.close()
    return replies


def _prompt(record: Record) -> Record:
    messages = record.messages[:-1] if record.messages[-1]["role"] == "assistant" else record.messages
    if not messages:
        raise RecordError(f"{record.where()}: no user turn to answer")
    return Record(record.id, messages, record.media, record.source, record.extra)


def write_samples(
    model_path: str | Path,
    data: str | Path,
    out: str | Path,
    media_root: str | None = None,
    limit: int | None = None,
    **sampling: Any,
) -> Path:
    """Load a model, sample replies to every row of the JSONL ``data`` (the first ``limit``) and write ``out``: each
    row as it was, plus ``"samples": [reply, ...]``. ``sampling`` goes to :func:`sample_replies`."""
    from anymal_lit.inference.loading import load_model

    data = Path(data)
    model = load_model(model_path)
    base = Path(media_root) if media_root else data.parent
    rows, records = [], []
    for where, raw in raw_records(data):
        if limit is not None and len(rows) >= limit:
            break
        if isinstance(raw, RecordError):
            raise raw
        records.append(parse_record(raw, where, base, placeholders(model), require_response=False))
        rows.append(raw)
    if not rows:
        raise RecordError(f"{data}: no records")
    replies = sample_replies(model, records, **sampling)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for row, samples in zip(rows, replies):
            f.write(json.dumps({**row, "samples": samples}) + "\n")
    log.info("%s: %d replies to %d prompts of %s", out, sum(map(len, replies)), len(rows), data)
    return out
