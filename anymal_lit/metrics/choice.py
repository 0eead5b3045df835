"""Multiple-choice answer extraction and MMBench CircularEval, as VLMEvalKit's exact-matching mode (no LLM judge).

Extraction (``vlmeval/utils/matching_util.py`` ``can_infer``: option, then text): each of ``.()[],:;!*#{}``
becomes a space and the output is split on whitespace; exactly one option letter among the tokens, at one of the
last positions (``index > len(tokens) - 5``, as upstream), gives that letter; fixed refusal phrases or a lone
``Z`` mean "refused"; else ``answer is X``; else, when the lower-cased output is at most twice as long as all
option texts together, a unique option text contained in it. Anything else is unresolved and scores as wrong.
CircularEval (``vlmeval/dataset/utils/multiple_choice.py``): records with equal ``index % 1_000_000`` are the
rotations of one question; the question counts only if every rotation is answered correctly.
"""

from __future__ import annotations

import re
from typing import Any

from anymal_lit.metrics.gather import RowMetric

REFUSED = "Z"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
STRIPPED = ".()[],:;!*#{}"
ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
CIRCULAR_MOD = 1_000_000


def _infer_option(output: str, letters: list[str]) -> str | None:
    if any(phrase in output for phrase in REFUSALS):
        return REFUSED
    text = output
    for ch in STRIPPED:
        text = text.replace(ch, " ")
    tokens = text.split()
    found = [letter for letter in letters if letter in tokens]
    if len(found) == 1:
        return found[0] if tokens.index(found[0]) > len(tokens) - 5 else None
    if not found and REFUSED in tokens:
        return REFUSED
    return None


def _infer_text(output: str, options: dict[str, str]) -> str | None:
    lowered = output.lower()
    if len(lowered) > 2 * sum(len(str(t)) for t in options.values()):
        return None
    found = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return found[0] if len(found) == 1 else None


def extract_choice(output: str, options: dict[str, str]) -> str | None:
    """The option letter a free-form output picks, ``"Z"`` when it refuses, None when unresolved."""
    output = str(output)
    letters = sorted(options)
    choice = _infer_option(output, letters)
    if choice is not None:
        return choice
    match = ANSWER_IS.search(output)
    if match and match.group(1) in options:
        return match.group(1)
    return _infer_text(output, options)


def choice_correct(prediction: str, answer: str, options: dict[str, str]) -> bool:
    return extract_choice(prediction, options) == answer


def multiple_choice_accuracy(records: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of ``{prediction, answer, options[, category]}`` records (AI2D, EgoSchema, MVBench letters), in
    [0, 1], with ``accuracy/<category>`` per category (MVBench's task) when records carry one."""
    if not records:
        raise ValueError("no records to score")
    hits = [choice_correct(r["prediction"], r["answer"], r["options"]) for r in records]
    unresolved = sum(extract_choice(r["prediction"], r["options"]) is None for r in records)
    out = {"accuracy": sum(hits) / len(hits), "unresolved": unresolved / len(records)}
    by_category: dict[str, list[bool]] = {}
    for record, hit in zip(records, hits):
        if "category" in record:  # AI2D's category, EgoSchema's subset, MVBench's task
            by_category.setdefault(str(record["category"]), []).append(hit)
    out.update({f"accuracy/{c}": sum(v) / len(v) for c, v in sorted(by_category.items())})
    return out


def mmbench_circular(records: list[dict[str, Any]]) -> dict:
    """MMBench CircularEval and vanilla accuracy over records with ``index``, ``prediction``, ``answer``, ``options``.

    Returns ``circular`` (question groups all answered correctly), ``vanilla`` (every record on its own), both in
    [0, 1], the group and record counts, and per ``category`` (when records carry one) ``circular/<category>``.
    """
    if not records:
        raise ValueError("no records to score")
    groups: dict[int, list[bool]] = {}
    categories: dict[int, str] = {}
    correct = []
    for record in records:
        hit = choice_correct(record["prediction"], record["answer"], record["options"])
        correct.append(hit)
        key = int(record["index"]) % CIRCULAR_MOD
        groups.setdefault(key, []).append(hit)
        if "category" in record:
            categories[key] = str(record["category"])
    passed = {key: all(hits) for key, hits in groups.items()}
    out: dict[str, Any] = {
        "circular": sum(passed.values()) / len(passed),
        "vanilla": sum(correct) / len(correct),
        "num_questions": len(passed),
        "num_records": len(records),
    }
    for category in sorted(set(categories.values())):
        keys = [k for k, c in categories.items() if c == category]
        out[f"circular/{category}"] = sum(passed[k] for k in keys) / len(keys)
    return out


def circular_variants(record: dict[str, Any]) -> list[dict[str, Any]]:
    """All rotations of a multiple-choice record (MMBench's construction): rotation r gets ``index + r * 1e6``."""
    letters = sorted(record["options"])
    texts = [record["options"][k] for k in letters]
    answer_text = record["options"][record["answer"]]
    out = []
    for r in range(len(letters)):
        rotated = texts[r:] + texts[:r]
        options = dict(zip(letters, rotated))
        answer = letters[rotated.index(answer_text)]
        out.append({**record, "index": int(record["index"]) + r * CIRCULAR_MOD, "options": options, "answer": answer})
    return out


class ChoiceMetric(RowMetric):
    """Multiple-choice scores over every process's rows; targets are ``{index, answer, options[, category]}``.

    With ``circular=True``: MMBench CircularEval (``circular``, ``vanilla``, per category); else plain accuracy.
    Both add ``unresolved`` (outputs no rule could map to an option; scored wrong).
    """

    def __init__(self, circular: bool = True) -> None:
        super().__init__()
        self.circular = circular

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        records = [{**targets[i], "prediction": predictions[i]} for i in sorted(predictions)]
        scores = mmbench_circular(records) if self.circular else multiple_choice_accuracy(records)
        unresolved = sum(extract_choice(r["prediction"], r["options"]) is None for r in records)
        return {**{k: float(v) for k, v in scores.items()}, "unresolved": unresolved / len(records)}
