"""OpenAI-style chat messages -> the kit's records: text with placeholder tokens and the media files they name.

A message's ``content`` is a string or a list of parts, in order::

    {"type": "text", "text": "What colour is it?"}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}   # or a local path / file:// URL
    {"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}
    {"type": "video", "video": "clip.mp4"}                                    # the kit's own: path or data URL
    {"type": "imu", "imu": "trace.csv"}                                       # the kit's own: path or data URL

Parts are joined with newlines, each media part becoming its modality's placeholder (``<image>``), so
``[image, text]`` reads ``"<image>\\nWhat colour is it?"``, the layout of the kit's JSONL records. Inline media
(data URLs, base64 audio) are written to files in a folder the caller owns, so they go through the same loaders as
training data. Local paths are read only where the caller allows: anywhere (the Python API) or under one folder
(``media_root``, the server), never outside it.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

from anymal_lit.data.records import ROLE_ALIASES, Record

PART_MODALITIES = {"image_url": "image", "input_audio": "audio", "video": "video", "imu": "imu"}
"""Content part type -> modality."""
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*);base64,(?P<data>.*)$", re.S)


class MessageError(ValueError):
    """A request the model cannot answer (bad part, undecodable media, unknown modality...); names the problem."""


def to_record(
    messages: Any,
    placeholders: dict[str, str],
    workdir: str | Path,
    media_root: str | Path | None = None,
    allow_local_paths: bool = True,
    record_id: str = "chat",
) -> Record:
    """Validate ``messages`` and turn them into a :class:`Record` whose media are files.

    Args:
        messages: OpenAI-style ``[{"role": ..., "content": str | [parts]}]``.
        placeholders: Modality -> placeholder token of the model (``{"image": "<image>"}``); other modalities are
            refused.
        workdir: Folder where inline media are written.
        media_root: Folder local paths are resolved against and must stay inside; None: the working directory.
        allow_local_paths: Accept media given as local paths (otherwise only inline data).
        record_id: Id used in error messages.
    """
    if not isinstance(messages, list) or not messages:
        raise MessageError("messages must be a non-empty list")
    turns, media = [], []
    for m, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLE_ALIASES:
            raise MessageError(f"messages[{m}]: needs a role in {sorted(set(ROLE_ALIASES.values()))}")
        text = _content(message.get("content"), f"messages[{m}]", placeholders, media, workdir, media_root,
                        allow_local_paths)  # fmt: skip
        turns.append({"role": ROLE_ALIASES[message["role"]], "content": text})
    if turns[-1]["role"] == "assistant":
        raise MessageError("the last message must not be the assistant's: there is nothing to answer")
    return Record(record_id, turns, media, source="request")


def _content(
    content: Any,
    where: str,
    placeholders: dict[str, str],
    media: list[tuple[str, str]],
    workdir: str | Path,
    media_root: str | Path | None,
    allow_local_paths: bool,
) -> str:
    if isinstance(content, str):
        parts: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content:
        parts = content
    else:
        raise MessageError(f"{where}.content: must be a string or a non-empty list of parts")
    texts = []
    for p, part in enumerate(parts):
        at = f"{where}.content[{p}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise MessageError(f"{at}: a text part needs a 'text' string")
            clash = [tok for tok in placeholders.values() if tok in text]
            if clash:
                raise MessageError(f"{at}: the text holds {clash[0]}; send media as content parts instead")
            texts.append(text)
        elif kind in PART_MODALITIES:
            modality = PART_MODALITIES[kind]
            if modality not in placeholders:
                raise MessageError(f"{at}: this model has no {modality} encoder (it reads {sorted(placeholders)})")
            path = _media_file(part, kind, at, len(media), workdir, media_root, allow_local_paths)
            media.append((modality, path))
            texts.append(placeholders[modality])
        else:
            known = ["text", *PART_MODALITIES]
            raise MessageError(f"{at}: unknown part type {kind!r} (known: {', '.join(known)})")
    return "\n".join(texts)


def _media_file(
    part: dict[str, Any],
    kind: str,
    at: str,
    index: int,
    workdir: str | Path,
    media_root: str | Path | None,
    allow_local_paths: bool,
) -> str:
    value = part.get(kind)
    if kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise MessageError(f"{at}: input_audio needs {{'data': <base64>, 'format': 'wav'}}")
        fmt = str(value.get("format", "wav")).lower()
        if not re.fullmatch(r"[a-z0-9]{1,8}", fmt):
            raise MessageError(f"{at}: bad audio format {fmt!r}")
        return _write(_b64(value["data"], at), f".{fmt}", workdir, index)
    source = value.get("url") if kind == "image_url" and isinstance(value, dict) else value
    if not isinstance(source, str) or not source:
        raise MessageError(f"{at}: {kind} needs a URL or path string")
    match = DATA_URL.match(source)
    if match:
        mime = match["mime"] or "application/octet-stream"
        suffix = mimetypes.guess_extension(mime) or ""
        suffix = {".jpe": ".jpg", ".jpeg": ".jpg"}.get(suffix, suffix)
        return _write(_b64(match["data"], at), suffix, workdir, index)
    if source.startswith("data:"):
        raise MessageError(f"{at}: only base64 data URLs are read (data:<mime>;base64,...)")
    if re.match(r"^[a-z][a-z0-9+.-]*://", source) and not source.startswith("file://"):
        raise MessageError(f"{at}: remote URLs are not fetched; send the media inline as a base64 data URL")
    return _local(source.removeprefix("file://"), at, media_root, allow_local_paths)


def _local(path: str, at: str, media_root: str | Path | None, allow_local_paths: bool) -> str:
    if not allow_local_paths:
        raise MessageError(f"{at}: local paths are not accepted here (start the server with --media-root to allow "
                           "a folder); send the media inline as a base64 data URL")  # fmt: skip
    root = Path(media_root or os.getcwd()).resolve()
    resolved = (root / path).resolve()
    if media_root is not None and not resolved.is_relative_to(root):
        raise MessageError(f"{at}: {path} is outside the allowed media folder")
    if not resolved.is_file():
        raise MessageError(f"{at}: media file not found: {path}")
    return str(resolved)


def _b64(data: str, at: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(f"{at}: undecodable base64 data") from None
    if not raw:
        raise MessageError(f"{at}: empty media data")
    return raw


def _write(raw: bytes, suffix: str, workdir: str | Path, index: int) -> str:
    path = Path(workdir) / f"media{index}{suffix}"
    path.write_bytes(raw)
    return str(path)
