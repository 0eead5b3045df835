"""Readers of the paper's open-answer image benchmarks, from their official release files to JSONL records.

* TextVQA: ``TextVQA_0.5.1_val.json`` (``{"data": [{question_id, question, image_id, answers[10], ...}]}``), pictures
  ``train_images/{image_id}.jpg`` (the val questions are about train_images).
* OK-VQA: VQAv2's layout (``OpenEnded_mscoco_val2014_questions.json`` + ``mscoco_val2014_annotations.json``) over
  COCO val2014 pictures.
* VizWiz: ``val.json`` (``[{image, question, answers: [{answer, answer_confidence}], answerable, answer_type}]``),
  pictures in ``val/``; "unanswerable" human answers stay among the references, as the official evaluation scores them.
* ChartQA: ``test_human.json`` / ``test_augmented.json`` (``[{imgname, query, label}]``), charts in ``png/``.
* Hateful Memes: ``dev_seen.jsonl`` / ``test_seen.jsonl`` / ... (``{id, img, label, text}``), pictures ``img/…``
  relative to the JSONL's folder; label 1 (hateful) becomes the reference "yes", 0 "no".

Records carry ``answers`` (every human answer, for VQA accuracy or ChartQA's relaxed accuracy) and the benchmark's own
metadata. ``prompt`` is the instruction after the question and ``system`` an optional system message (the paper's
per-task templates are selected by the caller). Bad rows raise a one-line :class:`RecordError` naming the file and
row, or are counted skips with ``skip_bad``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from anymal_lit.data.benchmarks import VQA_PROMPT, BadRows, conversation, missing_fields, vqa_records
from anymal_lit.data.records import RecordError

VIZWIZ_PROMPT = "When the provided information is insufficient, respond with 'Unanswerable'.\n" + VQA_PROMPT
"""LLaVA-1.5's VizWiz instruction: the references of unanswerable questions are "unanswerable"."""
HATEFUL_MEMES_PROMPT = 'The text in the meme: "{text}"\nIs this meme hateful? Answer yes or no.'
"""Hateful Memes' question; ``{text}`` is the meme's text (the pictures carry it too, but OCR is not the task)."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read the JSON file ({err})") from None


def _most_common(answers: list[str]) -> str:
    """The majority human answer (first seen wins a tie), the response a record trains or is shown with."""
    return Counter(answers).most_common(1)[0][0]


def textvqa_records(
    questions_json: str | Path,
    image_dir: str | Path,
    image_pattern: str = "{image_id}.jpg",
    prompt: str = VQA_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """TextVQA's ``TextVQA_0.5.1_{train,val}.json`` -> records with the 10 ``answers`` and the OCR-free metadata.

    Args:
        questions_json: The release JSON (``{"data": [...]}``; the test split has no answers and is refused).
        image_dir: The pictures' folder (``train_images`` for train and val).
        image_pattern: File name of a picture from the row's fields.
        prompt: Instruction after the question.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    path = Path(questions_json)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise RecordError(f"{path}: not TextVQA's layout (a JSON object with a 'data' list)")
    out, bad = [], BadRows(str(path), skip_bad)
    for i, row in enumerate(data["data"]):
        qid = row.get("question_id", f"#{i}") if isinstance(row, dict) else f"#{i}"
        missing = missing_fields(row, ("question_id", "question", "image_id", "answers"))
        if missing:
            bad.bad(qid, f"missing field(s) {missing}")
            continue
        answers = [str(a) for a in row["answers"]] if isinstance(row["answers"], list) else []
        if not answers or not str(row["question"]).strip():
            bad.bad(qid, "empty question or no human answers")
            continue
        try:
            image = Path(image_dir) / image_pattern.format(**row)
        except KeyError as err:
            raise RecordError(f"{path}: image_pattern {image_pattern!r} names a missing field {err}") from None
        if not image.is_file():
            bad.bad(qid, f"image file not found: {image}")
            continue
        out.append(
            {
                "id": str(row["question_id"]),
                "image_id": row["image_id"],
                "image": str(image.resolve()),
                "question": row["question"],
                "answers": answers,
                "image_classes": row.get("image_classes", []),
                "conversations": conversation(f"<image>\n{row['question']}\n{prompt}", _most_common(answers), system),
            }
        )
    return bad.done(out)


def okvqa_records(
    questions_json: str | Path,
    annotations_json: str | Path,
    image_dir: str | Path,
    image_pattern: str = "COCO_val2014_{image_id:012d}.jpg",
    prompt: str = VQA_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """OK-VQA's question + annotation JSON pair (VQAv2's layout; ``question_type`` is its knowledge category) ->
    records with the 10 ``answers``: :func:`~anymal_lit.data.benchmarks.vqa_records` with COCO val2014 names."""
    return vqa_records(questions_json, annotations_json, image_dir, image_pattern, prompt, skip_bad, system)


def vizwiz_records(
    annotations_json: str | Path,
    image_dir: str | Path,
    prompt: str = VIZWIZ_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """VizWiz-VQA's ``val.json`` (a list of ``{image, question, answers, answerable, answer_type}``) -> records.

    ``answers`` keeps all 10 human answers, "unanswerable" included (the official accuracy compares against them as
    against any answer); ``answerable`` (0/1) and ``answer_type`` are kept for per-type scores.

    Args:
        annotations_json: ``train.json`` or ``val.json`` (``test.json`` has no answers and is refused).
        image_dir: The split's picture folder (``val/``).
        prompt: Instruction after the question.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    path = Path(annotations_json)
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise RecordError(f"{path}: not VizWiz's layout (a JSON list of questions)")
    out, bad = [], BadRows(str(path), skip_bad)
    for i, row in enumerate(rows):
        row_id = row.get("image", f"#{i}") if isinstance(row, dict) else f"#{i}"
        missing = missing_fields(row, ("image", "question", "answers"))
        if missing:
            bad.bad(row_id, f"missing field(s) {missing}")
            continue
        answers = [str(a["answer"]) for a in row["answers"] if isinstance(a, dict) and "answer" in a]
        if not answers or len(answers) != len(row["answers"]):
            bad.bad(row_id, "answers must be a non-empty list of {answer, answer_confidence}")
            continue
        image = Path(image_dir) / row["image"]
        if not image.is_file():
            bad.bad(row_id, f"image file not found: {image}")
            continue
        out.append(
            {
                "id": Path(row["image"]).stem,
                "image": str(image.resolve()),
                "question": row["question"],
                "answers": answers,
                "answerable": row.get("answerable"),
                "answer_type": row.get("answer_type", "other"),
                "conversations": conversation(f"<image>\n{row['question']}\n{prompt}", _most_common(answers), system),
            }
        )
    return bad.done(out)


def chartqa_records(
    json_path: str | Path,
    image_dir: str | Path | None = None,
    split: str | None = None,
    prompt: str = VQA_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """ChartQA's ``test_human.json`` / ``test_augmented.json`` (``[{imgname, query, label}]``) -> records whose
    ``answers`` is ``[label]`` (scored with relaxed accuracy) and ``split`` names the set (ChartQA reports both).

    Args:
        json_path: The split's JSON.
        image_dir: The charts' folder (default: ``png/`` beside the JSON, as released).
        split: Recorded split name (default: from the file name, ``test_human.json`` -> ``human``).
        prompt: Instruction after the question.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    path = Path(json_path)
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise RecordError(f"{path}: not ChartQA's layout (a JSON list of {{imgname, query, label}})")
    image_dir = Path(image_dir) if image_dir is not None else path.parent / "png"
    split = split or path.stem.split("_")[-1]
    out, bad = [], BadRows(str(path), skip_bad)
    for i, row in enumerate(rows):
        missing = missing_fields(row, ("imgname", "query", "label"))
        if missing:
            bad.bad(i, f"missing field(s) {missing}")
            continue
        label = str(row["label"]).strip()
        if not label or not str(row["query"]).strip():
            bad.bad(i, "empty query or label")
            continue
        image = image_dir / row["imgname"]
        if not image.is_file():
            bad.bad(i, f"image file not found: {image}")
            continue
        out.append(
            {
                "id": f"{split}-{i}",
                "image": str(image.resolve()),
                "question": row["query"],
                "answers": [label],
                "split": split,
                "conversations": conversation(f"<image>\n{row['query']}\n{prompt}", label, system),
            }
        )
    return bad.done(out)


def hateful_memes_records(
    jsonl: str | Path,
    image_root: str | Path | None = None,
    prompt: str = HATEFUL_MEMES_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """Hateful Memes' ``{id, img, label, text}`` JSONL -> records asking whether the meme is hateful.

    ``label`` (0/1) is kept for AUROC and its reference answer ("yes" for 1, "no" for 0) is the response and the
    single ``answers`` entry. Splits without labels (the original ``test.jsonl``) are refused row by row.

    Args:
        jsonl: The split's JSONL.
        image_root: Folder the ``img`` paths (``img/42953.png``) are relative to (default: the JSONL's folder).
        prompt: The question; ``{text}`` is replaced by the meme's text.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    path = Path(jsonl)
    root = Path(image_root) if image_root is not None else path.parent
    out, bad = [], BadRows(str(path), skip_bad)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad.bad(f"line {lineno}", f"invalid JSON ({err})")
                continue
            row_id = row.get("id", f"line {lineno}") if isinstance(row, dict) else f"line {lineno}"
            missing = missing_fields(row, ("id", "img", "label", "text"))
            if missing:
                bad.bad(row_id, f"missing field(s) {missing}")
                continue
            if row["label"] not in (0, 1):
                bad.bad(row_id, f"label must be 0 or 1, got {row['label']!r}")
                continue
            image = root / row["img"]
            if not image.is_file():
                bad.bad(row_id, f"image file not found: {image}")
                continue
            answer = "yes" if row["label"] == 1 else "no"
            question = prompt.replace("{text}", str(row["text"]))
            out.append(
                {
                    "id": str(row["id"]),
                    "image": str(image.resolve()),
                    "label": row["label"],
                    "answers": [answer],
                    "text": row["text"],
                    "conversations": conversation(f"<image>\n{question}", answer, system),
                }
            )
    return bad.done(out)
