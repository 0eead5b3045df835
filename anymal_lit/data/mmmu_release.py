"""MMMU's own release (the ``MMMU/MMMU`` rows: one parquet per subject and split, or the same rows as JSON/JSONL) ->
the kit's JSONL records.

A row has ``id`` (``validation_Art_Theory_1``), ``question``, ``options`` (a stringified Python list, ``"['a', 'b']"``;
``"[]"`` for open questions), ``answer`` (a letter, or for open questions the answer or a stringified list of accepted
answers), ``question_type`` (``multiple-choice`` / ``open``), ``image_1`` .. ``image_7`` and metadata (``subfield``,
``topic_difficulty``, ``img_type``, ``explanation``). Pictures come as parquet image structs (``{bytes, path}``), raw
bytes, base64 strings or file paths (relative to the rows' file). ``<image k>`` in the question and options becomes
the kit's image placeholder at that spot (see :func:`~anymal_lit.data.vlmeval_tsv.place_image_references`), so a
record holds as many pictures as its text mentions, in text order; its ``question`` and ``options`` hold the
placeholders too, so a prompt template rebuilding the user turn from them keeps every picture in place.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
from pathlib import Path
from typing import Any

from anymal_lit.data.benchmarks import (
    LETTERS,
    MC_PROMPT,
    VQA_PROMPT,
    BadRows,
    conversation,
    decode_image,
    missing_fields,
    multiple_choice_prompt,
)
from anymal_lit.data.records import RecordError
from anymal_lit.data.vlmeval_tsv import interleaved, place_image_references

MAX_IMAGES = 7
KEPT = ("question_type", "subfield", "topic_difficulty", "img_type")


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``.parquet`` (needs ``pyarrow``), ``.json`` (a list) or ``.jsonl`` file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RecordError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read the rows ({err})") from None
    if not isinstance(rows, list):
        raise RecordError(f"{path}: expected a JSON list of MMMU rows")
    return rows


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a base64 string is too long a file name
        return False


def _picture(value: Any, target: Path, folder: Path) -> str:
    """Write one ``image_k`` value to ``target`` (or point at its file); raises ``ValueError`` when unusable."""
    if isinstance(value, dict):  # a parquet / datasets image struct
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and _is_file(folder / value):
        return str((folder / value).resolve())
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"picture is neither a file nor base64 ({value[:40]!r})") from None
    if not isinstance(value, bytes | bytearray):
        raise ValueError(f"picture of unsupported type {type(value).__name__}")
    if not target.is_file():
        decode_image(bytes(value), target)
    return str(target.resolve())


def _answers(row: dict) -> list[str]:
    """An open question's accepted answers (the release writes several as a stringified list)."""
    answer = str(row["answer"]).strip()
    if answer.startswith("["):
        try:
            values = ast.literal_eval(answer)
            if isinstance(values, list) and values:
                return [str(v) for v in values]
        except (ValueError, SyntaxError):
            pass
    return [answer]


def mmmu_records(
    paths: str | Path | list[str | Path],
    image_dir: str | Path,
    prompt: str = VQA_PROMPT,
    mc_prompt: str = MC_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """MMMU release rows -> records (``index`` counts rows over all files, ``category`` is the subject).

    Multiple-choice records carry ``options`` and the ``answer`` letter; open ones ``answers`` (every accepted
    answer). ``question_type``, ``subfield``, ``topic_difficulty`` and ``img_type`` are kept.

    Args:
        paths: One or more rows files (``Art_Theory/validation-00000-of-00001.parquet``, ``.json``, ``.jsonl``).
        image_dir: Folder the pictures are decoded into (``{id}_{k}.png``; reused when there).
        prompt: Instruction after an open question.
        mc_prompt: Instruction after the options of a multiple-choice question.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    out: list[dict] = []
    for path in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(path)
        bad = BadRows(str(path), skip_bad)
        for i, row in enumerate(read_rows(path)):
            rid = str(row.get("id", f"#{i}")) if isinstance(row, dict) else f"#{i}"
            missing = missing_fields(row, ("id", "question", "options", "answer"))
            if missing:
                bad.bad(rid, f"missing field(s) {missing}")
                continue
            try:
                options = ast.literal_eval(row["options"]) if isinstance(row["options"], str) else row["options"]
                if not isinstance(options, list) or len(options) > len(LETTERS):
                    raise ValueError(f"a list of at most {len(LETTERS)} options is needed")
            except (ValueError, SyntaxError) as err:
                bad.bad(rid, f"options cannot be parsed ({type(err).__name__}: {str(row['options'])[:80]!r})")
                continue
            options = {letter: str(text) for letter, text in zip(LETTERS, options)}
            multiple_choice = row.get("question_type", "multiple-choice" if options else "open") == "multiple-choice"
            answer = str(row["answer"]).strip()
            if multiple_choice and answer not in options:
                bad.bad(rid, f"answer {answer!r} is not one of the options {sorted(options)}")
                continue
            ks = [k for k in range(1, MAX_IMAGES + 1) if row.get(f"image_{k}") is not None]
            try:
                if ks != list(range(1, len(ks) + 1)):
                    raise ValueError(f"pictures must be image_1..image_n without gaps, found {ks}")
                pictures = [_picture(row[f"image_{k}"], image_dir / f"{rid}_{k}.png", path.parent) for k in ks]
                texts, prefix, order = place_image_references([str(row["question"]), *options.values()], len(ks))
            except ValueError as err:
                bad.bad(rid, str(err))
                continue
            question, shown = texts[0], dict(zip(options, texts[1:]))
            if multiple_choice:
                user, target = multiple_choice_prompt(question, shown, None, mc_prompt), answer
                fields = {"options": shown, "answer": answer}
            else:
                answers = _answers(row)
                user, target = f"{question}\n{prompt}", answers[0]
                fields = {"answer": answers[0], "answers": answers}
            media = [pictures[k] for k in order]
            out.append(
                {
                    "id": rid,
                    "index": len(out),
                    **({"image": media if len(media) > 1 else media[0]} if media else {}),
                    "question": prefix + question if interleaved(str(row["question"]), *options.values()) else question,
                    **fields,
                    "category": rid.split("_", 1)[1].rsplit("_", 1)[0] if rid.count("_") >= 2 else "",
                    **{k: row[k] for k in KEPT if row.get(k) is not None},
                    "conversations": conversation(prefix + user, target, system),
                }
            )
        bad.done([])
    return out
