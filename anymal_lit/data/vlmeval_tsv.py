"""The VLMEvalKit TSV layout (how MMMU, AI2D, MathVista, ChartQA, MMBench, ... are distributed for evaluation) ->
the kit's JSONL records, with one reader for all of them.

A TSV row has ``index``, ``question``, ``answer`` and its picture(s):

* ``image``: base64, a list of base64 strings (``"['iVBOR...', '/9j/...']"``, multi-image rows such as MMMU's), or
  the ``index`` of another row whose picture it shares (VLMEvalKit saves space this way: any cell of 64 characters
  or fewer is such a reference);
* or ``image_path``: a path or list of paths (relative to ``image_root``).

Options are columns ``A``..``I``, or an ``options`` list column, or MathVista's ``choices`` list column (whose
question already lists the choices and a hint: it is used as written) with ``answer_option`` the letter. Rows with
options become multiple-choice records (``options``, ``answer`` letter, ``index``; the prompt lists the options
unless the question already does); rows without become open records (``answers: [answer]``). ``<image k>`` in the
question or options (MMMU) becomes the kit's image placeholder at that spot, the k-th picture its media; pictures
the text does not mention go first. Every other column (``category``, ``l2-category``, ``split``, ``question_type``,
``answer_type``, ``precision``, ``unit``, ``skills``...) is kept in the record as written, for the metrics.

Records also keep the bare ``question`` (and ``hint``) so a prompt template can rebuild the user turn; when the text
places pictures with ``<image k>``, ``question`` and ``options`` hold the kit's placeholders where the pictures go.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from anymal_lit.data.benchmarks import (
    LETTERS,
    MC_PROMPT,
    VQA_PROMPT,
    BadRows,
    conversation,
    decode_image,
    multiple_choice_prompt,
    present,
)
from anymal_lit.data.records import RecordError
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

IMAGE_REFERENCE = re.compile(r"<image\s*(\d+)>")
STRUCTURE = {"index", "question", "answer", "image", "image_path", "hint", "options", "choices", "answer_option"}
RESERVED = {"id", "conversations", "messages", "answers", "options"}


def parse_list(cell: Any, what: str) -> list:
    """A list cell as written by pandas / the releases (``"['a', 'b']"`` or JSON); raises ``ValueError`` naming
    ``what`` when it is not a list."""
    if isinstance(cell, list):
        return cell
    try:
        value = json.loads(cell)
    except (TypeError, json.JSONDecodeError):
        try:
            value = ast.literal_eval(str(cell))
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise ValueError(f"{what} is not a list ({type(err).__name__}: {str(cell)[:80]!r})") from None
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list: {str(cell)[:80]!r}")
    return value


def place_image_references(texts: list[str], count: int) -> tuple[list[str], str, list[int]]:
    """Replace ``<image k>`` in ``texts`` (question, options... in prompt order) with the kit's image placeholder.

    Returns the texts, a prefix holding one placeholder per picture the texts never mention, and the picture order
    (0-based; the prefix's pictures first, then one entry per reference in text order, repeats included) that the
    record's media list must follow. Raises ``ValueError`` for a reference to a picture that is not there.
    """
    token = DEFAULT_PLACEHOLDERS["image"]
    referenced: list[int] = []

    def swap(match: re.Match) -> str:
        k = int(match.group(1))
        if not 1 <= k <= count:
            raise ValueError(f"the text refers to <image {k}> but the row has {count} picture(s)")
        referenced.append(k - 1)
        return token

    out = [IMAGE_REFERENCE.sub(swap, text) for text in texts]
    unmentioned = [k for k in range(count) if k not in referenced]
    prefix = "".join(f"{token}\n" for _ in unmentioned)
    return out, prefix, unmentioned + referenced


def interleaved(*texts: str) -> bool:
    """Whether the texts place pictures with ``<image k>`` (the record's ``question`` then holds the placeholders, all
    of them, and a prompt template must not add its own)."""
    return any(IMAGE_REFERENCE.search(text) for text in texts)


def _pictures(row: dict, by_index: dict[str, str], image_dir: Path, image_root: Path) -> list[str]:
    """The row's pictures as files: base64 decoded into ``image_dir`` (kept when already there), paths checked."""
    index = str(row["index"]).strip()
    cell = row.get("image")
    if present(cell):
        cell = str(cell)
        if len(cell) <= 64:  # the index of the row holding the picture
            if cell.strip() not in by_index or len(by_index[cell.strip()]) <= 64:
                raise ValueError(f"image refers to row {cell.strip()!r}, which holds no picture")
            cell = by_index[cell.strip()]
        encoded = [str(x) for x in parse_list(cell, "image")] if cell.lstrip().startswith("[") else [cell]
        if not encoded:
            raise ValueError("empty image list")
        names = [f"{index}.png"] if len(encoded) == 1 else [f"{index}_{k + 1}.png" for k in range(len(encoded))]
        paths = []
        for data, name in zip(encoded, names):
            path = image_dir / name
            if not path.is_file():
                decode_image(data.strip(), path)
            paths.append(str(path.resolve()))
        return paths
    if present(row.get("image_path")):
        cell = str(row["image_path"])
        names = [str(x) for x in parse_list(cell, "image_path")] if cell.lstrip().startswith("[") else [cell]
        paths = [image_root / name for name in names]
        if not paths:
            raise ValueError("empty image_path list")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"image file not found: {missing[0]}")
        return [str(p.resolve()) for p in paths]
    raise ValueError("no picture (neither 'image' nor 'image_path')")


def _options(row: dict) -> tuple[dict[str, str], bool]:
    """(letter -> option text, whether the question already lists them: MathVista's ``choices``)."""
    columns = {k: str(row[k]) for k in LETTERS if present(row.get(k))}
    if columns:
        return columns, False
    for key, listed in (("options", False), ("choices", True)):
        if present(row.get(key)):
            values = parse_list(row[key], key)
            if len(values) > len(LETTERS):
                raise ValueError(f"{len(values)} {key}: at most {len(LETTERS)} are supported")
            return {letter: str(v) for letter, v in zip(LETTERS, values)}, listed
    return {}, False


def _letter(row: dict, options: dict[str, str]) -> str:
    """The answer as an option letter: the ``answer_option`` or ``answer`` letter, else the option whose text is the
    answer; raises ``ValueError`` when the answer is none of the options."""
    answer = str(row.get("answer", "")).strip()
    for value in (row.get("answer_option"), answer):
        if present(value) and str(value).strip() in options:
            return str(value).strip()
    matches = [k for k, text in options.items() if text.strip() == answer]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"answer {answer!r} is not one of the options {sorted(options)}")


def _metadata(row: dict) -> dict[str, str]:
    """The row's other columns, as written; names that would read as media keys or record fields are prefixed."""
    out = {}
    for key, value in row.items():
        if key is None or key in STRUCTURE or key in LETTERS or not present(value):
            continue
        base = key.lower().split("_")[0].rstrip("s")
        out[f"tsv_{key}" if key in RESERVED or base in DEFAULT_PLACEHOLDERS else key] = value
    return out


def vlmeval_tsv_records(
    tsv: str | Path,
    image_dir: str | Path,
    image_root: str | Path | None = None,
    prompt: str = VQA_PROMPT,
    mc_prompt: str = MC_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """A VLMEvalKit TSV -> multiple-choice and open records (see the module's docstring for the layout).

    Args:
        tsv: The benchmark's TSV (``MMMU_DEV_VAL.tsv``, ``AI2D_TEST.tsv``, ``MathVista_MINI.tsv``...).
        image_dir: Folder base64 pictures are decoded into (``{index}.png``, ``{index}_{k}.png``; reused when there,
            so give each TSV its own folder).
        image_root: Folder ``image_path`` entries are relative to (default: the TSV's folder).
        prompt: Instruction after an open question (not added to MathVista's complete queries).
        mc_prompt: Instruction after the options of a multiple-choice question.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    path, image_dir = Path(tsv), Path(image_dir)
    image_root = Path(image_root) if image_root is not None else path.parent
    image_dir.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    need = {"index", "question", "answer"}
    if rows and not need <= set(rows[0]):
        found = sorted(k for k in rows[0] if k)
        raise RecordError(f"{path}: a VLMEvalKit TSV needs columns {sorted(need)}, found {found}")
    by_index = {str(r.get("index", "")).strip(): str(r.get("image") or "") for r in rows}
    out, bad = [], BadRows(str(path), skip_bad)
    for lineno, row in enumerate(rows, start=2):
        index = str(row.get("index") or "").strip()
        if not index.lstrip("-").isdigit():
            bad.bad(index or f"line {lineno}", "missing or non-integer index")
            continue
        if not present(row.get("question")) or not present(row.get("answer")):
            bad.bad(index, "empty question or answer")
            continue
        try:
            pictures = _pictures(row, by_index, image_dir, image_root)
            options, listed = _options(row)
            letter = _letter(row, options) if options else None
            hint = str(row["hint"]) if present(row.get("hint")) else None
            texts, prefix, order = place_image_references([row["question"], *options.values()], len(pictures))
        except ValueError as err:
            bad.bad(index, str(err))
            continue
        question, shown = texts[0], dict(zip(options, texts[1:]))
        complete = listed or row.get("question_type") in ("multi_choice", "free_form")  # MathVista's queries
        if options:
            user = question if listed else multiple_choice_prompt(question, shown, hint, mc_prompt)
            record = {"options": shown, "answer": letter, "answer_text": options[letter]}
        else:
            user = "\n".join(t for t in (hint, question, None if complete else prompt) if t)
            record = {"answer": str(row["answer"]), "answers": [str(row["answer"])]}
        out.append(
            {
                "id": index,
                "index": int(index),
                "image": [pictures[k] for k in order] if len(order) > 1 else pictures[order[0]],
                "question": prefix + question if interleaved(row["question"], *options.values()) else question,
                **({"hint": hint} if hint else {}),
                **record,
                **_metadata(row),
                "conversations": conversation(prefix + user, letter or str(row["answer"]), system),
            }
        )
    return bad.done(out)
