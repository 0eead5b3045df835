"""Toy-world extras for the scorecard: per-attribute caption and interleaved-answer accuracy, VQA and MMBench scores
split by how many objects the picture holds, the best constant-caption baseline and a blind QA baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anymal_lit.callbacks.caption_eval import read_coco_references
from anymal_lit.metrics.choice import CIRCULAR_MOD, mmbench_circular
from anymal_lit.metrics.vqa import vqa_accuracy
from anymal_lit.toyworld import signals
from anymal_lit.toyworld.constant_caption import best_constant_cider
from anymal_lit.toyworld.hallucination import hallucination_rates
from anymal_lit.toyworld.shapes import Scene, attribute_accuracy


def constant_candidates(train_jsonl: Path, count: int = 300, seed: int = 0) -> list[str]:
    """Training captions to try as a constant prediction (a sample; scoring all of them takes minutes)."""
    captions = sorted({json.loads(line)["conversations"][-1]["value"] for line in train_jsonl.open()})
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(captions), size=min(count, len(captions)), replace=False)
    return [captions[i] for i in sorted(picked)]


SIGNAL_VOCAB = {"audio": signals.SOUND_VOCAB, "imu": signals.IMU_VOCAB, "video": signals.VIDEO_VOCAB}


def caption_report(
    world: str | Path, modality: str, predictions: str | Path, predictions_before: str | Path | None
) -> dict:
    """``cider_constant`` (best single training caption) and per-attribute accuracy (and ``..._before``) of one
    modality's caption val set; for pictures also ``hallucination_{object,output}`` (:func:`hallucination_report`)."""
    world = Path(world)
    truths = json.loads((world / f"{modality}_scenes_val.json").read_text())

    def accuracy(preds: dict[str, str]) -> dict[str, float]:
        if modality == "image":
            scenes = {k: Scene.from_dict(v) for k, v in truths.items()}
            return {**attribute_accuracy(preds, scenes), **hallucination_rates(preds, scenes)}
        return signals.attribute_accuracy(preds, truths, SIGNAL_VOCAB[modality])

    out = _before_and_after(accuracy, predictions, predictions_before)
    references = read_coco_references(world / f"{modality}_caption_val_coco.json")
    score, caption = best_constant_cider(constant_candidates(world / f"{modality}_caption_train.jsonl"), references)
    out["cider_constant"] = score
    out["constant_caption"] = caption
    return out


def hallucination_report(world: str | Path, predictions: str | Path, predictions_before: str | Path | None) -> dict:
    """``hallucination_object`` (share of object mentions not in the picture, CHAIR-i) and ``hallucination_output``
    (share of captions with at least one, CHAIR-s) of image caption predictions (and ``..._before``)."""
    truths = json.loads((Path(world) / "image_scenes_val.json").read_text())
    scenes = {k: Scene.from_dict(v) for k, v in truths.items()}
    return _before_and_after(lambda preds: hallucination_rates(preds, scenes), predictions, predictions_before)


def interleaved_report(world: str | Path, predictions: str | Path, predictions_before: str | Path | None) -> dict:
    """Per-attribute accuracy of the interleaved image + IMU answers ("What am I doing near the red square?"): the
    activity and pace (any of their words, as in the IMU caption report) and whether the answer names the object
    asked about (and ``..._before``). Exact match alone counts a paraphrase ("riding a bike at a fast pace" for
    "cycling quickly") as wrong."""
    world = Path(world)
    motions = json.loads((world / "imu_scenes_val.json").read_text())
    truths, objects = {}, {}
    for line in (world / "interleaved_val.jsonl").open():
        row = json.loads(line)
        truths[row["id"]] = motions[str(int(Path(row["imu"]).stem))]
        objects[row["id"]] = row["conversations"][0]["value"].rsplit("near the ", 1)[1].rstrip("?")

    def accuracy(preds: dict[str, str]) -> dict[str, float]:
        named = sum(o in preds.get(k, "").lower() for k, o in objects.items())
        return {
            **signals.attribute_accuracy(preds, truths, signals.IMU_VOCAB),
            "object_accuracy": named / max(1, len(objects)),
        }

    return _before_and_after(accuracy, predictions, predictions_before)


OBJECT_COUNTS = {1: "one_object", 2: "two_objects"}


def object_count_report(
    world: str | Path, benchmark: str, predictions: str | Path, predictions_before: str | Path | None
) -> dict:
    """``benchmark`` (``"vqa"`` or ``"mmbench"``) scored apart on pictures of one object and of two (and
    ``..._before``): ``vqa_official/one_object``, ``circular/two_objects``, ``vanilla/...``.

    A question about one of two objects names it by the other attribute ("What colour is the triangle?"), so the model
    must bind attributes to objects; with one object it need not. The split shows where the model's errors are.
    """
    if benchmark not in ("vqa", "mmbench"):
        raise ValueError(f"benchmark must be 'vqa' or 'mmbench', got {benchmark!r}")
    world = Path(world)
    scenes = json.loads((world / "image_scenes_val.json").read_text())
    records = [json.loads(line) for line in (world / f"image_{benchmark}_val.jsonl").open()]

    def picture(record: dict) -> int:
        # VQA records carry their image_id; the toy world gives each MMBench group its picture's number as base index
        return int(record["image_id"]) if benchmark == "vqa" else int(record["index"]) % CIRCULAR_MOD

    by_count: dict[int, list[dict]] = {}
    for record in records:
        by_count.setdefault(len(scenes[str(picture(record))]["objects"]), []).append(record)

    def score(preds: dict[str, str]) -> dict[str, float]:
        out = {}
        for count, name in OBJECT_COUNTS.items():
            subset = by_count.get(count, [])
            if not subset:
                continue
            if benchmark == "vqa":
                hits = [vqa_accuracy(preds.get(r["id"], ""), r["answers"]) for r in subset]
                out[f"vqa_official/{name}"] = float(np.mean(hits))
            else:
                result = mmbench_circular([{**r, "prediction": preds.get(r["id"], "")} for r in subset])
                out[f"circular/{name}"] = result["circular"]
                out[f"vanilla/{name}"] = result["vanilla"]
        return out

    return _before_and_after(score, predictions, predictions_before)


def _before_and_after(
    score: Callable[[dict[str, str]], dict[str, float]], predictions: str | Path, predictions_before: str | Path | None
) -> dict[str, float]:
    """``score`` of each predictions JSON that exists: keys as they are, and with ``_before`` for the earlier one."""
    out = {}
    for suffix, path in (("", predictions), ("_before", predictions_before)):
        if path is not None and Path(path).exists():
            out.update({f"{k}{suffix}": v for k, v in score(json.loads(Path(path).read_text())).items()})
    return out


def qa_blind_baseline(world: str | Path) -> dict:
    """Exact match of a blind (no-media) answerer: the most common training answer for each question form."""
    world = Path(world)

    def form(question: str) -> str:
        # the question with its colour/shape words kept: what a text-only model can condition on
        return question.split("\n")[1]

    by_form: dict[str, dict[str, int]] = {}
    for line in (world / "image_sft_train.jsonl").open():
        rec = json.loads(line)
        if "answers" not in rec:
            continue
        counts = by_form.setdefault(form(rec["conversations"][0]["value"]), {})
        answer = rec["conversations"][-1]["value"]
        counts[answer] = counts.get(answer, 0) + 1
    hits = total = 0
    for line in (world / "image_vqa_val.jsonl").open():
        rec = json.loads(line)
        counts = by_form.get(form(rec["conversations"][0]["value"]), {})
        guess = max(counts, key=counts.get) if counts else ""
        hits += guess == rec["conversations"][-1]["value"]
        total += 1
    return {"blind_exact_match": hits / max(1, total)}
