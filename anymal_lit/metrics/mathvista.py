"""MathVista scoring with rule-based answer extraction (reimplemented from github.com/lupantech/MathVista,
``evaluation/extract_answer.py`` and ``evaluation/calculate_score.py``).

The official harness extracts the final answer with an LLM (GPT-4, a few-shot prompt) whenever its quick rules
fail; no LLM is called here. Two extractions are scored and both are reported:

* ``accuracy_no_llm``: the official code path with the LLM call failing (what its ``extract_answer`` returns when
  the request raises: an empty string). Its rules: an empty response stays empty; a multiple-choice response equal
  to an option is taken; ``int(response)`` for integer answers and ``float(response)`` for float answers; the
  quick rule ``The answer is "..."``. An empty extraction of a multiple-choice question then becomes the option
  nearest to ``""`` by edit distance (the shortest one), as ``normalize_extracted_answer`` does.
* ``accuracy``: the same rules, then the kit's stand-in for the LLM: for multiple choice a bracketed or final
  option letter (``(B)``, ``answer is B``, a lone ``B``), else the response itself (matched to the nearest option
  by edit distance, as upstream normalises any extraction); for numeric answers the last number in the response.

Normalisation and comparison are upstream's: a letter (or ``(B)``) indexes the options, any other text becomes the
nearest option by Levenshtein distance; integers are ``str(int(float(x)))``, floats ``str(round(float(x),
precision))``, lists ``str(x)``; the answer is right when the normalised extraction equals the answer string.
"""

from __future__ import annotations

import re
from typing import Any

from anymal_lit.metrics.gather import RowMetric

QUICK_ANSWER = re.compile(r'The answer is "(.*)"\.')
BRACKETED_LETTER = re.compile(r"\(([a-zA-Z])\)")
ANSWER_LETTER = re.compile(r"(?i:answer)\s*(?:(?i:is)|:)?\s*\(?([A-Z])\)?(?![A-Za-z])")  # "is a ..." is no letter
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each), as ``Levenshtein.distance``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def official_quick_extract(response: str, question_type: str, answer_type: str, choices: list[str]) -> str | None:
    """The official extractor's rules before its LLM call; None where it would ask the LLM."""
    if response == "":
        return ""
    if question_type == "multi_choice" and response in choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    match = QUICK_ANSWER.search(response)
    return match.group(1) if match else None


def rule_extract(response: str, question_type: str, answer_type: str, choices: list[str]) -> str:
    """The kit's rule-based stand-in for the LLM extractor (see the module docstring)."""
    quick = official_quick_extract(response, question_type, answer_type, choices)
    if quick is not None:
        return quick
    if question_type == "multi_choice":
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        for pattern in (BRACKETED_LETTER, ANSWER_LETTER):
            found = [m.upper() for m in pattern.findall(response) if m.upper() in letters]
            if found:
                return found[-1]
        stripped = response.strip().rstrip(".").strip()
        return stripped.upper() if stripped.upper() in letters else response
    numbers = NUMBER.findall(response)
    return numbers[-1].replace(",", "") if numbers else response


def normalize_extracted_answer(
    extraction: str, choices: list[str], question_type: str, answer_type: str, precision: int | None
) -> str | None:
    """Upstream's ``normalize_extracted_answer`` (with ``ignore_empty_extractions=False``, its default)."""
    if question_type == "multi_choice":
        extraction = str(extraction).strip()
        letter = BRACKETED_LETTER.findall(extraction)
        if letter:
            extraction = letter[0].upper()
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in letters:
            return choices[letters.index(extraction)]
        distances = [levenshtein(extraction, c) for c in choices]
        return choices[distances.index(min(distances))]
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision or 0)))
    except (TypeError, ValueError):
        return None
    return str(extraction)


def mathvista_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """MathVista accuracy (fractions in [0, 1]) of records ``{prediction, answer, question_type ("multi_choice" |
    "free_form"), answer_type ("text" | "integer" | "float" | "list"), choices, precision[, category]}``.

    Returns ``accuracy`` (kit rules), ``accuracy_no_llm`` (the official path without its LLM), ``needs_llm`` (the
    share of answers the official quick rules could not extract), and ``accuracy/<category>`` per category.
    """
    if not records:
        raise ValueError("no records to score")
    hits, hits_no_llm, needs_llm, by_category = [], [], 0, {}
    for r in records:
        response, choices = str(r["prediction"]), list(r.get("choices") or [])
        qtype, atype, precision = r["question_type"], r["answer_type"], r.get("precision")
        quick = official_quick_extract(response, qtype, atype, choices)
        needs_llm += quick is None
        answer = str(r["answer"])
        no_llm = normalize_extracted_answer("" if quick is None else quick, choices, qtype, atype, precision)
        extracted = rule_extract(response, qtype, atype, choices)
        ours = normalize_extracted_answer(extracted, choices, qtype, atype, precision)
        hits_no_llm.append(no_llm == answer)
        hits.append(ours == answer)
        if "category" in r:
            by_category.setdefault(str(r["category"]), []).append(ours == answer)
    n = len(records)
    out = {"accuracy": sum(hits) / n, "accuracy_no_llm": sum(hits_no_llm) / n, "needs_llm": needs_llm / n}
    out.update({f"accuracy/{c}": sum(v) / len(v) for c, v in sorted(by_category.items())})
    return out


class MathVistaMetric(RowMetric):
    """MathVista scores over every process's rows (targets: the record fields of :func:`mathvista_scores`)."""

    def score(self, predictions: dict[str, str], targets: dict[str, Any]) -> dict[str, float]:
        return mathvista_scores([{**targets[i], "prediction": predictions[i]} for i in sorted(predictions)])
