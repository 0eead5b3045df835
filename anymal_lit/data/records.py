"""The conversation record format: parsing and validation of records, with file:line in every error.

One JSON object per line (JSONL), or a JSON array of such objects (how LLaVA ships ``llava_v1_5_mix665k.json``;
errors then name ``file.json[12]``)::

    {"id": "coco-391895",
     "image": "images/391895.jpg",                       # or a list; also "audio", "video", "imu"
     "conversations": [{"from": "human", "value": "<image>\\nA short image caption:"},
                       {"from": "gpt", "value": "A man riding a bike."}]}

``messages`` with ``role``/``content`` (``system``, ``user``, ``assistant``) is accepted in place of LLaVA's
``conversations`` with ``from``/``value`` (``system``, ``human``, ``gpt``). Every placeholder (``<image>``,
``<audio>``, ``<video>``, ``<imu>``) consumes the next media path of its modality, in text order; media paths are
relative to the file's folder (or ``media_root``) unless absolute. Other keys (``references``, ``answers``, ...)
are kept in ``Record.extra`` for evaluation.

Placeholders and media are checked against each other for *every* known modality, whatever the reader accepts: a
record holding ``<audio>`` or an ``audio`` key where only images are read is an error (it would otherwise reach the
model with a placeholder no media fills). Keys that look like a misspelt media key (``images``, ``audio_path``) and
keys ``k`` whose ``<k>`` appears in the text (a modality the kit has no encoder for) are errors too, never silently
ignored. Relative media paths must stay inside the media folder (``..`` climbing out of it is an error unless
allowed: a JSONL written for another folder layout); absolute paths are read as given.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

log = logging.getLogger(__name__)

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_KEYS = ("conversations", "messages")
MEDIA_KEY_SUFFIXES = ("s", "_path", "_paths", "_file", "_files")
"""Endings that make a key a likely misspelling of a media key (``images``, ``audio_path``)."""
FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file, line and record id."""


@dataclass
class Record:
    """One validated sample: a conversation and the media its placeholders refer to.

    Attributes:
        id: The record's id (``id`` key, else ``<file>:<line>``).
        messages: ``[{"role": ..., "content": ...}]`` in chat-template form.
        media: ``(modality, path)`` in the order the placeholders appear in the text.
        source: ``file:line`` (``file[index]`` in a JSON array) for error messages.
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
            raise RecordError(f"{where}: bad turn {turn!r:.200} (needs role/from in {sorted(ROLE_ALIASES)} and a text)")
        messages.append({"role": ROLE_ALIASES[role], "content": content})
    return messages


def _media_key_typos(raw: dict[str, Any], known: dict[str, str], text: str, where: str) -> None:
    """Refuse keys the reader would silently ignore although they clearly meant media."""
    for key in raw:
        if key in known or key in MESSAGE_KEYS or key == "id":
            continue
        base = key.lower()
        for suffix in MEDIA_KEY_SUFFIXES:
            if base.endswith(suffix) and base[: -len(suffix)] in known:
                base = base[: -len(suffix)]
                break
        if base in known and base not in raw:
            raise RecordError(f"{where}: unknown key {key!r}: media go under {base!r} (media keys: {sorted(known)})")
        if f"<{key}>" in text and _looks_like_paths(raw[key]):
            raise RecordError(
                f"{where}: <{key}> placeholder and {key!r} key name a modality the kit does not know "
                f"(known: {sorted(known)})"
            )


def _looks_like_paths(value: Any) -> bool:
    """A file name or a list of them (``"depth/1.png"``), as opposed to a value such as an answer ``"B"``."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        return False
    return all(isinstance(v, str) and FILE_SUFFIX.fullmatch(os.path.splitext(v)[1]) for v in values)


def _resolve(path: Any, modality: str, base_dir: Path, allow_outside: bool, where: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise RecordError(f"{where}: {modality} path must be a non-empty string, got {path!r:.100}")
    if os.path.isabs(path):
        resolved = path
    else:
        # lexical check (not resolve()): a symlinked media folder inside the data folder stays allowed
        resolved = os.path.normpath(base_dir / path)
        root = os.path.normpath(base_dir)
        if not allow_outside and os.path.commonpath([root, resolved]) != root:
            raise RecordError(
                f"{where}: {modality} path {path!r} leaves the media folder {root} (use a path inside it, an absolute "
                "path, media_root, or allow_media_outside_root)"
            )
    if not os.path.exists(resolved):
        raise RecordError(f"{where}: {modality} file not found: {resolved}")
    return resolved


def parse_record(
    raw: Any,
    where: str,
    base_dir: Path,
    placeholders: dict[str, str],
    require_response: bool = True,
    modalities: tuple[str, ...] | list[str] | None = None,
    allow_media_outside_root: bool = False,
) -> Record:
    """Validate one decoded JSON record; raises :class:`RecordError` naming ``where`` on any problem.

    Args:
        raw: The decoded JSON value.
        where: ``file:line`` or ``file[index]`` for messages.
        base_dir: Folder relative media paths are resolved against.
        placeholders: Modality -> placeholder token of the modalities that may be read (the model's); the kit's
            other modalities (``image``, ``audio``, ``video``, ``imu``) are still recognised, and refused.
        require_response: The last turn must be a non-empty assistant response.
        modalities: Of ``placeholders``, the modalities this reader accepts (None: all of them).
        allow_media_outside_root: Accept relative media paths that climb out of ``base_dir``.
    """
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(raw).__name__}")
    rid = str(raw.get("id", where))
    source, where = where, f"record {rid!r} ({where})"
    messages = _messages(raw, where)
    if require_response:
        if messages[-1]["role"] != "assistant":
            raise RecordError(f"{where}: the last turn must be the assistant's response")
        empty = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not m["content"].strip()]
        if empty:
            raise RecordError(f"{where}: empty assistant response in turn {empty[0]}")
    known = {**DEFAULT_PLACEHOLDERS, **placeholders}
    accepted = [m for m in placeholders if modalities is None or m in modalities]
    # the separator keeps a placeholder from forming across two turns
    text = "\x00".join(m["content"] for m in messages)
    _media_key_typos(raw, known, text, where)
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and any(t in message["content"] for t in known.values()):
            # a generation prompt drops the final answer and a DPO pair swaps it: its media would be orphaned
            raise RecordError(f"{where}: media placeholder in assistant turn {i} (media belong in user turns)")
    media: list[tuple[str, str]] = []
    positions: dict[str, list[int]] = {}
    for modality, token in known.items():
        paths = raw.get(modality, [])
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list):
            raise RecordError(f"{where}: {modality!r} must be a path or a list of paths, got {type(paths).__name__}")
        count = text.count(token)
        if modality not in accepted:
            if count or paths:
                raise RecordError(
                    f"{where}: holds {modality} ({count} {token} placeholder(s), {len(paths)} {modality} item(s)) "
                    f"but this data reads only {', '.join(accepted) or 'text'}"
                )
            continue
        if count != len(paths):
            raise RecordError(f"{where}: {count} {token} placeholder(s) but {len(paths)} {modality} item(s)")
        media += [(modality, _resolve(p, modality, base_dir, allow_media_outside_root, where)) for p in paths]
        positions[modality] = [match.start() for match in re.finditer(re.escape(token), text)]
    # order the items as their placeholders appear in the text
    order = sorted(range(len(media)), key=lambda i: positions[media[i][0]][_rank(media, i)])
    extra = {k: v for k, v in raw.items() if k not in (*MESSAGE_KEYS, "id", *known)}
    return Record(rid, messages, [media[i] for i in order], source, extra)


def _rank(media: list[tuple[str, str]], index: int) -> int:
    """How many earlier items share this item's modality."""
    return sum(1 for m, _ in media[:index] if m == media[index][0])


def _is_json_array(path: Path) -> bool:
    """Whether the file's first non-blank character is ``[`` (a JSON array; JSONL lines are objects)."""
    with path.open("rb") as f:
        while chunk := f.read(4096):
            stripped = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if stripped:
                return stripped.startswith(b"[")
    return False


def raw_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, decoded value)`` per record of a JSONL file or JSON array file; an undecodable JSONL line yields
    its :class:`RecordError` instead of a value (skippable), an undecodable array file raises (nothing is usable)."""
    if _is_json_array(path):
        try:
            items = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RecordError(f"{path}: not a valid JSON array of records ({err})") from None
        for index, item in enumerate(items):
            yield f"{path}[{index}]", item
        return
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield where, RecordError(f"{where}: not UTF-8 text ({err})")
                continue
            if not text.strip():
                continue
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as err:
                yield where, RecordError(f"{where}: invalid JSON ({err})")


def read_records(
    path: str | Path,
    placeholders: dict[str, str],
    media_root: str | None = None,
    skip_bad_records: bool = False,
    require_response: bool = True,
    modalities: tuple[str, ...] | list[str] | None = None,
    allow_media_outside_root: bool = False,
    skipped: list[str] | None = None,
) -> list[Record]:
    """Read and validate a JSONL file or a JSON array file of records. Bad records raise :class:`RecordError`, or
    are skipped and counted (their messages appended to ``skipped`` when given; see :func:`parse_record` for the
    other arguments)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    base_dir = Path(media_root) if media_root else path.parent
    records, errors = [], []
    for where, raw in raw_records(path):
        try:
            if isinstance(raw, RecordError):
                raise raw
            records.append(
                parse_record(raw, where, base_dir, placeholders, require_response, modalities, allow_media_outside_root)
            )
        except RecordError as err:
            if not skip_bad_records:
                raise
            errors.append(str(err))
    if errors:
        log.warning("%s: skipped %d of %d records; first: %s", path, len(errors), len(records) + len(errors), errors[0])
        if skipped is not None:
            skipped.extend(errors)
    if not records:
        raise RecordError(f"{path}: no usable records" + (f" (first error: {errors[0]})" if errors else ""))
    return records
