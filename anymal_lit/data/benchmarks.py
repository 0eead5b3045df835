"""Readers for public benchmark formats, turning them into the kit's JSONL conversation records.

* COCO captions: ``captions_*.json`` (``images`` + ``annotations``) and an image folder.
* VQAv2 / TextVQA-style: questions JSON (``questions``) + annotations JSON (``annotations`` with 10 ``answers``).
* AudioCaps: the CSV (``audiocap_id, youtube_id, start_time, caption``) and a folder of downloaded clips.
* MMBench: the official TSV (``index, question, hint, A..D, answer, category, image`` as base64).

The paper's other benchmarks have readers in sibling modules: ``vqa_readers`` (TextVQA, OK-VQA, VizWiz, ChartQA,
Hateful Memes), ``vlmeval_tsv`` (the VLMEvalKit TSV of MMMU, AI2D, MathVista, ChartQA), ``mmmu_release`` (MMMU's own
rows) and ``video_qa_readers`` (EgoSchema, MVBench); this module holds what they share (:class:`BadRows`,
:func:`conversation`, :func:`decode_image`, :func:`multiple_choice_prompt`).

Every reader validates as it goes and reports bad rows with their file and row id; ``skip_bad`` turns those
errors into counted skips. ``anymal-lit convert <format> ...`` writes the records as JSONL for the eval callbacks.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from anymal_lit.data.records import RecordError
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

log = logging.getLogger(__name__)

VQA_PROMPT = "Answer the question using a single word or phrase."
MC_PROMPT = "Answer with the option's letter from the given choices directly."
LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H", "I")


class BadRows:
    """A reader's bad rows: ``bad`` raises a one-line :class:`RecordError` naming the file and row, or (``skip_bad``)
    records it; ``done`` logs how many were skipped. ``skipped`` holds the messages of the skipped rows."""

    def __init__(self, source: str, skip_bad: bool) -> None:
        self.source, self.skip_bad, self.skipped = source, skip_bad, []

    def bad(self, row_id: Any, message: str) -> None:
        error = f"{self.source}: row {row_id}: {message}"
        if not self.skip_bad:
            raise RecordError(error)
        self.skipped.append(error)

    def done(self, records: list[dict]) -> list[dict]:
        if self.skipped:
            log.warning("%s: skipped %d rows; first: %s", self.source, len(self.skipped), self.skipped[0])
        return records


def conversation(user: str, answer: str | None = None, system: str | None = None) -> list[dict[str, str]]:
    """LLaVA-style turns: an optional system message, the user turn and (when known) the reference answer."""
    turns = [{"from": "system", "value": system}] if system else []
    turns.append({"from": "human", "value": user})
    return turns + ([{"from": "gpt", "value": answer}] if answer is not None else [])


def decode_image(data: str | bytes, path: Path) -> None:
    """Decode a base64 picture (str) or picture bytes and save it as PNG at ``path``; raises ``ValueError`` with the
    reason when the data is not a picture."""
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else data
        with Image.open(io.BytesIO(raw)) as img:
            img.convert("RGB").save(path)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as err:
        path.unlink(missing_ok=True)  # a half-written file would pass for a decoded one next time
        raise ValueError(f"image cannot be decoded ({err})") from None


def missing_fields(row: Any, keys: tuple[str, ...] | list[str]) -> list[str]:
    """The ``keys`` a decoded row lacks (all of them when the row is not a JSON object)."""
    return [k for k in keys if not isinstance(row, dict) or k not in row]


def present(value: Any) -> bool:
    """Whether a table cell holds a value (pandas writes missing cells of a TSV as ``nan``)."""
    return value is not None and str(value).strip() not in ("", "nan", "NaN", "None")


AUDIOCAPS_PROMPT = "A short audio caption:"


def audiocaps_records(
    csv_path: str | Path,
    audio_dir: str | Path,
    audio_pattern: str = "{youtube_id}_{start_time}.wav",
    prompt: str = AUDIOCAPS_PROMPT,
    skip_bad: bool = False,
) -> list[dict]:
    """AudioCaps CSV (``audiocap_id, youtube_id, start_time, caption``) + a local audio folder -> one record per clip.

    The val/test splits hold 5 captions per clip (rows sharing ``youtube_id`` and ``start_time``): all of them become
    the clip's ``references``. ``audio_pattern`` names the downloaded files (fields of the CSV row); clips whose
    file is missing are reported with their row (AudioCaps clips often vanish from YouTube: use ``skip_bad``).
    """
    path = Path(csv_path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"youtube_id", "start_time", "caption"}
    if rows and not need <= set(rows[0]):
        raise RecordError(f"{path}: AudioCaps CSV needs columns {sorted(need)}, found {sorted(rows[0])}")
    clips: dict[tuple[str, str], dict[str, Any]] = {}
    bad = BadRows(str(path), skip_bad)
    for i, row in enumerate(rows, start=2):  # line numbers (after the header)
        row_id = row.get("audiocap_id") or f"line {i}"
        if not (row.get("caption") or "").strip():
            bad.bad(row_id, "empty caption")
            continue
        key = (row["youtube_id"], row["start_time"])
        clip = clips.setdefault(key, {"row": row, "row_id": row_id, "captions": []})
        clip["captions"].append(row["caption"].strip())
    out = []
    for (youtube_id, start_time), clip in clips.items():
        try:
            audio = Path(audio_dir) / audio_pattern.format(**clip["row"])
        except KeyError as err:
            raise RecordError(f"{path}: audio_pattern {audio_pattern!r} names a missing column {err}") from None
        if not audio.is_file():
            bad.bad(clip["row_id"], f"audio file not found: {audio}")
            continue
        out.append(
            {
                "id": f"{youtube_id}_{start_time}",
                "audio": str(audio.resolve()),
                "references": clip["captions"],
                "conversations": [
                    {"from": "human", "value": f"<audio>\n{prompt}"},
                    {"from": "gpt", "value": clip["captions"][0]},
                ],
            }
        )
    return bad.done(out)


def coco_caption_records(
    captions_json: str | Path, image_dir: str | Path, prompt: str = "A short image caption:", skip_bad: bool = False
) -> list[dict]:
    """One record per image: the prompt, the first reference as the response, all references in ``references``."""
    data = json.loads(Path(captions_json).read_text())
    refs: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    out, bad = [], BadRows(str(captions_json), skip_bad)
    for image in data["images"]:
        path = Path(image_dir) / image["file_name"]
        if not path.is_file():
            bad.bad(image["id"], f"image file not found: {path}")
            continue
        if not refs.get(image["id"]):
            bad.bad(image["id"], "no reference captions")
            continue
        out.append(
            {
                "id": str(image["id"]),
                "image": str(path.resolve()),
                "references": refs[image["id"]],
                "conversations": [
                    {"from": "human", "value": f"<image>\n{prompt}"},
                    {"from": "gpt", "value": refs[image["id"]][0]},
                ],
            }
        )
    return bad.done(out)


def vqa_records(
    questions_json: str | Path,
    annotations_json: str | Path,
    image_dir: str | Path,
    image_pattern: str = "COCO_val2014_{image_id:012d}.jpg",
    prompt: str = VQA_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """VQAv2-format questions + annotations -> records with ``answers`` (the human answers) and ``answer_type``
    (``system``: an optional system message before the question)."""
    questions = json.loads(Path(questions_json).read_text())["questions"]
    annotations = {a["question_id"]: a for a in json.loads(Path(annotations_json).read_text())["annotations"]}
    out, bad = [], BadRows(str(questions_json), skip_bad)
    for q in questions:
        qid = q.get("question_id")
        ann = annotations.get(qid)
        if ann is None:
            bad.bad(qid, "no annotation for this question")
            continue
        answers = [a["answer"] for a in ann.get("answers", []) if isinstance(a, dict) and "answer" in a]
        if not answers or not str(q.get("question", "")).strip():
            bad.bad(qid, "empty question or no human answers")
            continue
        path = Path(image_dir) / image_pattern.format(image_id=q["image_id"])
        if not path.is_file():
            bad.bad(qid, f"image file not found: {path}")
            continue
        out.append(
            {
                "id": str(qid),
                "image_id": q["image_id"],
                "image": str(path.resolve()),
                "answers": answers,
                "question": q["question"],
                "answer_type": ann.get("answer_type", "other"),
                "question_type": ann.get("question_type", ""),
                "conversations": conversation(
                    f"<image>\n{q['question']}\n{prompt}", ann.get("multiple_choice_answer", answers[0]), system
                ),
            }
        )
    return bad.done(out)


def multiple_choice_prompt(
    question: str, options: dict[str, str], hint: str | None = None, instruction: str = MC_PROMPT
) -> str:
    """MMBench's prompt: hint, question, one ``X. text`` line per option, then the letter instruction."""
    lines = ([hint] if hint else []) + [question] + [f"{k}. {v}" for k, v in options.items()] + [instruction]
    return "\n".join(line for line in lines if line)


def mmbench_records(
    tsv: str | Path, image_dir: str | Path, skip_bad: bool = False, prompt: str = MC_PROMPT, system: str | None = None
) -> list[dict]:
    """The MMBench TSV -> records with ``index``, ``options``, ``answer``, ``category``; images decoded to files
    (``prompt``: the instruction after the options; ``system``: an optional system message)."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(sys.maxsize)
    out, bad = [], BadRows(str(tsv), skip_bad)
    with open(tsv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            index = row.get("index")
            options = {k: row[k] for k in LETTERS if row.get(k) not in (None, "", "nan")}
            if index is None or not str(index).strip().lstrip("-").isdigit():
                bad.bad(index, "missing or non-integer index")
                continue
            if len(options) < 2 or row.get("answer") not in options:
                bad.bad(
                    index, f"needs >= 2 options and an answer among them (got {sorted(options)}, {row.get('answer')!r})"
                )
                continue
            path = image_dir / f"{int(index)}.png"
            if not path.is_file():
                try:
                    decode_image(row.get("image") or "", path)
                except ValueError as err:
                    bad.bad(index, str(err))
                    continue
            hint = row.get("hint") if row.get("hint") not in (None, "", "nan") else None
            user = multiple_choice_prompt(row["question"], options, hint, prompt)
            out.append(
                {
                    "id": str(index),
                    "index": int(index),
                    "image": str(path.resolve()),
                    "question": row["question"],
                    **({"hint": hint} if hint else {}),
                    "options": options,
                    "answer": row["answer"],
                    "category": row.get("category", ""),
                    "conversations": conversation(f"<image>\n{user}", row["answer"], system),
                }
            )
    return bad.done(out)


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    """Write records as JSONL. Media paths inside the file's folder are written relative to it (the readers resolve
    them against the JSONL's folder), so the folder can be moved or copied with its media; others stay absolute."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()

    def portable(media: str) -> str:
        media_path = Path(media)
        return str(media_path.relative_to(folder)) if media_path.is_relative_to(folder) else media

    lines = []
    for record in records:
        for key in DEFAULT_PLACEHOLDERS:
            value = record.get(key)
            if isinstance(value, str):
                record = {**record, key: portable(value)}
            elif isinstance(value, list):
                record = {**record, key: [portable(v) for v in value]}
        lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    return path
