"""The JSONL conversation format: parsing and validation of records, with file:line in every error.

One JSON object per line::

    {"id": "coco-391895",
     "image": "images/391895.jpg",                       # or a list; also "audio", "video", "imu"
     "conversations": [{"from": "human", "value": "<image>\\nA short image caption:"},
                       {"from": "gpt", "value": "A man riding a bike."}]}

``messages`` with ``role``/``content`` (``system``, ``user``, ``assistant``) is accepted in place of LLaVA's
``conversations`` with ``from``/``value`` (``system``, ``human``, ``gpt``). Every placeholder (``<image>``,
``<audio>``, ``<video>``, ``<imu>``) consumes the next media path of its modality, in text order; media paths are
relative to the JSONL file's folder unless absolute. Other keys (``references``, ``answers``, ...) are kept in
``Record.extra`` for evaluation.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_KEYS = ("conversations", "messages")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file, line and record id."""


@dataclass
class Record:
    """One validated sample: a conversation and the media its placeholders refer to.

    Attributes:
        id: The record's id (``id`` key, else ``<file>:<line>``).
        messages: ``[{"role": ..., "content": ...}]`` in chat-template form.
        media: ``(modality, path)`` in the order the placeholders appear in the text.
        source: ``file:line`` for error messages.
        extra: The record's other keys (references, answers, ...).
    """

    id: str
    messages: list[dict[str, str]]
    media: list[tuple[str, str]]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"record {self.id!r} ({self.source})"


def _messages(raw: dict[str, Any], where: str) -> list[dict[str, str]]:
    turns = next((raw[k] for k in MESSAGE_KEYS if k in raw), None)
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"{where}: needs a non-empty 'conversations' or 'messages' list")
    messages = []
    for turn in turns:
        role = turn.get("role", turn.get("from")) if isinstance(turn, dict) else None
        content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
        if role not in ROLE_ALIASES or not isinstance(content, str):
            raise RecordError(f"{where}: bad turn {turn!r} (needs role/from in {sorted(ROLE_ALIASES)} and a text)")
        messages.append({"role": ROLE_ALIASES[role], "content": content})
    return messages


def parse_record(
    raw: Any, where: str, base_dir: Path, placeholders: dict[str, str], require_response: bool = True
) -> Record:
    """Validate one decoded JSON line; raises :class:`RecordError` naming ``where`` on any problem."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: a record must be a JSON object")
    rid = str(raw.get("id", where))
    source, where = where, f"record {rid!r} ({where})"
    messages = _messages(raw, where)
    if require_response:
        if messages[-1]["role"] != "assistant":
            raise RecordError(f"{where}: the last turn must be the assistant's response")
        empty = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not m["content"].strip()]
        if empty:
            raise RecordError(f"{where}: empty assistant response in turn {empty[0]}")
    text = "".join(m["content"] for m in messages)
    media: list[tuple[str, str]] = []
    for modality, token in placeholders.items():
        paths = raw.get(modality, [])
        paths = [paths] if isinstance(paths, str) else paths
        count = text.count(token)
        if count != len(paths):
            raise RecordError(f"{where}: {count} {token} placeholder(s) but {len(paths)} {modality} item(s)")
        for path in paths:
            resolved = path if os.path.isabs(path) else str(base_dir / path)
            if not os.path.exists(resolved):
                raise RecordError(f"{where}: {modality} file not found: {resolved}")
            media.append((modality, resolved))
    # order the items as their placeholders appear in the text
    positions = {m: [i for i in range(len(text)) if text.startswith(t, i)] for m, t in placeholders.items()}
    order = sorted(range(len(media)), key=lambda i: positions[media[i][0]][_rank(media, i)])
    extra = {k: v for k, v in raw.items() if k not in (*MESSAGE_KEYS, "id", *placeholders)}
    return Record(rid, messages, [media[i] for i in order], source, extra)


def _rank(media: list[tuple[str, str]], index: int) -> int:
    """How many earlier items share this item's modality."""
    return sum(1 for m, _ in media[:index] if m == media[index][0])


def read_records(
    path: str | Path,
    placeholders: dict[str, str],
    media_root: str | None = None,
    skip_bad_records: bool = False,
    require_response: bool = True,
) -> list[Record]:
    """Read and validate a JSONL file. Bad lines raise :class:`RecordError`, or are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    base_dir = Path(media_root) if media_root else path.parent
    records, skipped = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RecordError(f"{where}: invalid JSON ({err})") from None
                records.append(parse_record(raw, where, base_dir, placeholders, require_response))
            except RecordError as err:
                if not skip_bad_records:
                    raise
                skipped.append(str(err))
    if skipped:
        log.warning(
            "%s: skipped %d of %d records; first: %s", path, len(skipped), len(records) + len(skipped), skipped[0]
        )
    if not records:
        raise RecordError(f"{path}: no usable records")
    return records
