"""MMMU answer parsing and scoring, reimplemented from the official evaluation (github.com/MMMU-Benchmark/MMMU,
``mmmu/utils/eval_utils.py``: ``parse_multi_choice_response``, ``parse_open_response``, ``normalize_str``,
``extract_numbers``, ``eval_multi_choice``, ``eval_open``), quirks included:

* Multiple choice: the response loses leading/trailing ``, . ! ? ; : '`` and gains a space at each end; candidates
  are the bracketed letters ``(A)``; without any, the bare letters between spaces ``" A "``; without any and when
  the response has more than 5 words, the options whose text occurs in it (case-insensitive). With several
  candidates the one occurring LAST wins (ties: the earlier option). With none, a random letter: the official code
  seeds Python's ``random`` with 42 once at import and draws in scoring order, reproduced here by one
  ``random.Random(seed)`` per scoring run; :func:`mmmu_scores` counts these draws (``random_fallback``).
* Open questions: the lower-cased response is cut into sentences on newlines (the ``". (?=[A-Z])"`` split never
  fires after lower-casing, as upstream); from each, the shortest tail after an indicator ("is ", "so ",
  "therefore ", "answer ", ... and "=" in the last sentence) is kept; the numbers in those tails are added; every
  candidate is normalised (numbers -> floats rounded to 2 decimals, text lower-cased, a single character padded
  with a space on either side). The answer is right when a number equals a normalised gold number, or a gold
  string occurs inside a candidate string.
"""

from __future__ import annotations

import random
import re
from typing import Any

from anymal_lit.metrics.gather import RowMetric

OFFICIAL_SEED = 42
EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")
KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
TRIVIAL_TAILS = (":", ",", ".", "!", "?", ";", "'")
NUMBER_WITH_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def _last(candidates: list[str], positions: list[int]) -> str:
    """The candidate at the largest position; the first one on a tie (``np.argmax``)."""
    return candidates[max(range(len(positions)), key=lambda i: (positions[i], -i))]


def parse_multi_choice_response(
    response: str, options: dict[str, str], rng: random.Random | None = None
) -> tuple[str, bool]:
    """The option letter MMMU's parser reads from ``response``, and whether it had to draw it at random.

    Args:
        response: The model's output.
        options: Letter -> option text (the official ``index2ans``; ``all_choices`` is its letters in order).
        rng: Source of the random fallback (default: a fresh ``random.Random(42)``, as upstream's first draw).
    """
    letters = sorted(options)
    for char in EDGE_PUNCTUATION:
        response = response.strip(char)
    response = f" {response} "
    candidates = [c for c in letters if f"({c})" in response]
    bracketed, by_text = bool(candidates), False
    if not candidates:
        candidates = [c for c in letters if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c in letters if str(options[c]).lower() in response.lower()]
        by_text = bool(candidates)
    if not candidates:
        return (rng or random.Random(OFFICIAL_SEED)).choice(letters), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_text:
        positions = [response.lower().rfind(str(options[c]).lower()) for c in candidates]
    elif bracketed:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return _last(candidates, positions), False


def check_is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[str | float]:
    """A number -> ``[float rounded to 2]``; text -> ``[lower]``; one character -> ``[" c", "c "]``."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """Numbers with thousands commas, then in scientific notation, then plain ones (upstream's order)."""
    return NUMBER_WITH_COMMAS.findall(text) + NUMBER_SCIENTIFIC.findall(text) + NUMBER_SIMPLE.findall(text)


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for index, sentence in enumerate(sentences):
        indicators = KEY_INDICATORS + (("=",) if index == len(sentences) - 1 else ())
        shortest = None
        for indicator in indicators:
            if indicator in sentence:
                tail = sentence.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty tail is replaced, as upstream
                    shortest = tail
        if shortest and shortest.strip() not in TRIVIAL_TAILS:
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[str | float]:
    """The normalised candidate answers MMMU reads from an open-question response (a set, as a list)."""
    keys = _key_subresponses(response)
    candidates: list[str] = list(keys)
    for key in keys:
        candidates += extract_numbers(key)
    normalised = [value for candidate in candidates for value in normalize_str(candidate)]
    return list(dict.fromkeys(normalised))


def eval_multi_choice(gold: str | list[str], parsed: str) -> bool:
    return parsed in gold if isinstance(gold, list) else parsed == gold


def eval_open(gold: str | list[str], parsed: list[str | float]) -> bool:
    golds = [value for answer in (gold if isinstance(gold, list) else [gold]) for value in normalize_str(str(answer))]
    for prediction in parsed:
        if isinstance(prediction, str):
            if any(isinstance(g, str) and g in prediction for g in golds):
                return True
        elif prediction in golds:
            return True
    return False


def mmmu_scores(records: list[dict[str, Any]], seed: int = OFFICIAL_SEED) -> dict[str, float]:
    """MMMU accuracy of ``{prediction, answer, question_type, options[, subject]}`` records, in [0, 1].

    ``question_type`` is ``"multiple-choice"`` (``options``: letter -> text, ``answer``: a letter or a list of
    letters) or ``"open"`` (``answer``: a string or a list). Random fallbacks are drawn in record order from one
    generator seeded with ``seed``. Returns ``accuracy``, ``random_fallback`` (how many multiple-choice answers
    needed the random draw, a count), ``num_questions`` and, per ``subject``, ``accuracy/<subject>``.
    """
    if not records:
        raise ValueError("no records to score")
    rng = random.Random(seed)
    hits, fallbacks, by_subject = [], 0, {}
    for record in records:
        prediction = str(record["prediction"])
        if record["question_type"] == "multiple-choice":
            parsed, drawn = parse_multi_choice_response(prediction, record["options"], rng)
            fallbacks += drawn
            hit = eval_multi_choice(record["answer"], parsed)
        else:
            hit = eval_open(record["answer"], parse_open_response(prediction))
        hits.append(hit)
        if "subject" in record:
            by_subject.setdefault(str(record["subject"]), []).append(hit)
    out = {"accuracy": sum(hits) / len(hits), "random_fallback": float(fallbacks), "num_questions": float(len(hits))}
    out.update({f"accuracy/{s}": sum(v) / len(v) for s, v in sorted(by_subject.items())})
    return out


class MMMUMetric(RowMetric):
    """MMMU scores over every process's rows; targets are ``{answer, question_type, options[, subject]}``. Rows are
    scored in id order, so the random fallbacks do not depend on the number of processes."""

    def __init__(self, seed: int = OFFICIAL_SEED) -> None:
        super().__init__()
        self.seed = seed

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        records = [{**targets[i], "prediction": predictions[i]} for i in sorted(predictions)]
        return mmmu_scores(records, self.seed)
