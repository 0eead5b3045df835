"""VQA accuracy exactly as the official VQAv2 evaluation (GT-Vision-Lab/VQA ``vqaEval.py``, master).

Per question: newlines/tabs become spaces and answers are stripped; when the 10 human answers are *not* all
identical, prediction and answers are normalised with ``processPunctuation`` and ``processDigitArticle``; the
accuracy is the mean over the 10 leave-one-out subsets of ``min(1, #matching answers among the other 9 / 3)``.
``normalize="always"`` normalises every question (lmms-eval's convention), ``"never"`` compares raw strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from anymal_lit.metrics.gather import RowMetric

# The official tables, kept verbatim (including their quirks, e.g. "somebody'd" -> "somebodyd").
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
# Verbatim from vqaEval.py: "(?!<=\d)" is a (mistyped) lookahead, not a lookbehind, and the official call passes
# re.UNICODE (= 32) as sub()'s *count* argument; both are reproduced so scores match to the decimal.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NORMALIZE_MODES = ("official", "always", "never")


def process_punctuation(text: str) -> str:
    """``processPunctuation``: a mark next to a space (or any text with a digit,digit comma) is deleted, otherwise
    replaced by a space; periods not followed by a digit are stripped."""
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """``processDigitArticle``: lower-case, number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Both official normalisation steps."""
    return process_digit_article(process_punctuation(text))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: list[str], normalize: str = "official") -> float:
    """VQA accuracy of one prediction against the human answers (10 in VQAv2), in [0, 1].

    Args:
        prediction: The model's answer.
        answers: The human answers.
        normalize: ``"official"`` (vqaEval.py: normalise only when the answers are not all identical),
            ``"always"`` (lmms-eval) or ``"never"``.
    """
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = _clean(prediction)
    gts = [_clean(a) for a in answers]
    if normalize == "always" or (normalize == "official" and len(set(gts)) > 1):
        gts = [normalize_answer(a) for a in gts]
        pred = normalize_answer(pred)
    scores = []
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def vqa_scores(
    predictions: Iterable[str], answers: Iterable[list[str]], answer_types: Iterable[str] | None = None,
    normalize: str = "official",
) -> dict[str, float]:  # fmt: skip
    """Overall and per-answer-type accuracy (x100, rounded to 2 decimals as the official report)."""
    accs = [vqa_accuracy(p, a, normalize) for p, a in zip(predictions, answers)]
    if not accs:
        raise ValueError("no questions to score")
    out = {"overall": round(100 * sum(accs) / len(accs), 2)}
    if answer_types is not None:
        by_type: dict[str, list[float]] = {}
        for acc, kind in zip(accs, answer_types):
            by_type.setdefault(kind, []).append(acc)
        out.update({f"type/{k}": round(100 * sum(v) / len(v), 2) for k, v in sorted(by_type.items())})
    return out


class VQAMetric(RowMetric):
    """VQA accuracy over every process's (id, prediction, human answers) rows, as fractions in [0, 1]:
    ``vqa_official`` (the official rule), ``vqa_always`` (lmms-eval's), ``exact_match`` (normalised prediction
    equals the most common normalised answer)."""

    def score(self, predictions: dict[str, str], answers: dict[str, Any]) -> dict[str, float]:
        ids = sorted(predictions)
        official = [vqa_accuracy(predictions[i], answers[i]) for i in ids]
        always = [vqa_accuracy(predictions[i], answers[i], normalize="always") for i in ids]
        exact = []
        for i in ids:
            normalised = [normalize_answer(a) for a in answers[i]]
            exact.append(normalize_answer(predictions[i]) == max(set(normalised), key=normalised.count))
        n = len(ids)
        return {"vqa_official": sum(official) / n, "vqa_always": sum(always) / n, "exact_match": sum(exact) / n}
