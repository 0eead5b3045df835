"""The paper's benchmark rules on hand-written cases that pin each official quirk (ChartQA relaxed accuracy, MMMU
parsing, MathVista extraction, per-task multiple choice, Hateful Memes AUROC, TextVQA / OKVQA / VizWiz)."""

import math
import random

import pytest

from anymal_lit.metrics import (
    auroc,
    binary_scores,
    mathvista_scores,
    mmmu_scores,
    multiple_choice_accuracy,
    parse_multi_choice_response,
    parse_open_response,
    relaxed_accuracy,
    vqa_accuracy,
    yes_probability,
)
from anymal_lit.metrics.mathvista import levenshtein, normalize_extracted_answer
from anymal_lit.metrics.relaxed import RelaxedAccuracyMetric

# ---- ChartQA: relaxed accuracy (pix2struct) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("104", "100", 1.0),  # 4 % of the target
        ("106", "100", 0.0),  # 6 %
        ("95", "100", 1.0),  # exactly 5 % below is accepted (<=)
        ("19.5%", "0.2", 1.0),  # a trailing % divides by 100: 0.195 is 2.5 % of 0.2 away
        ("19.5", "0.2", 0.0),  # without it 19.5 is far from 0.2
        ("12%", "12", 0.0),  # ... and "12%" is 0.12, not 12
        ("0.0", "0", 0.0),  # a target of 0 falls back to the string comparison
        ("0", "0", 1.0),
        ("Yes", "yes", 1.0),  # strings: case-insensitive exact
        ("yes ", "yes", 0.0),  # nothing is stripped
        ("12 %", "12%", 1.0),  # float() accepts the space left by stripping the %
        ("% 12", "12", 0.0),  # the % must be last
    ],
)
def test_relaxed_accuracy_follows_pix2struct(prediction, target, expected):
    assert relaxed_accuracy(prediction, target) == expected


def test_relaxed_accuracy_relative_to_the_prediction_is_the_swapped_call():
    # 100 vs target 95: 5.26 % of the target (wrong), 5 % of the prediction (right)
    assert relaxed_accuracy("100", "95") == 0.0
    assert relaxed_accuracy("100", "95", relative_to="prediction") == 1.0
    assert relaxed_accuracy("0", "0.0", relative_to="prediction") == 0.0  # now a 0 *prediction* compares strings
    with pytest.raises(ValueError, match="relative_to"):
        relaxed_accuracy("1", "1", relative_to="both")


def test_relaxed_metric_reports_both_variants():
    metric = RelaxedAccuracyMetric()
    metric.update(["a", "b"], ["100", "cat"], ["95", ["dog", "Cat"]])
    assert metric.compute() == {"relaxed_accuracy": 0.5, "relaxed_accuracy_swapped": 1.0}


# ---- MMMU ----------------------------------------------------------------------------------------------------------

OPTIONS = {"A": "red car", "B": "blue car", "C": "green bus", "D": "yellow taxi"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("(B)", "B"),
        ("The answer is (C).", "C"),
        ("(A) looks plausible but (C) is right", "C"),  # several bracketed letters: the last one
        ("B", "B"),  # bare letter (spaces added around the response)
        ("B.", "B"),  # edge punctuation stripped first
        ("A or D? I pick A", "A"),  # bare letters: the last " X " occurrence ("D?" does not count)
        ("(B) and not D", "B"),  # a bracketed letter beats any bare one
        ("I believe the vehicle shown is a blue car parked outside", "B"),  # > 5 words: option text
        ("not the red car, the image shows a green bus clearly", "C"),  # several texts: the last one wins
    ],
)
def test_mmmu_multiple_choice_parsing(response, expected):
    assert parse_multi_choice_response(response, OPTIONS) == (expected, False)


def test_mmmu_short_answers_never_match_option_text_and_fall_back_to_the_seeded_draw():
    # "blue car" is 2 words (<= 5): no option-text matching, so the parser draws at random
    rng = random.Random(42)
    assert parse_multi_choice_response("blue car", OPTIONS, rng) == ("A", True)
    records = [
        {"prediction": p, "answer": "C", "question_type": "multiple-choice", "options": OPTIONS}
        for p in ("blue car", "no idea", "(C)", "hmm", "?")
    ]
    scores = mmmu_scores(records)
    # the official module seeds random with 42 once: its 4 draws over A-D are A, A, C, B -> one lucky C
    assert scores["random_fallback"] == 4
    assert scores["accuracy"] == pytest.approx(2 / 5)
    drawn = [{**r, "answer": a} for r, a in zip(records[:2] + records[3:], "AACB")]
    assert mmmu_scores(drawn)["accuracy"] == 1.0  # exactly that sequence, in record order


@pytest.mark.parametrize(
    ("response", "gold", "right"),
    [
        ("The total is 1,234 dollars.", "1234", True),  # commas in numbers; indicator "is "
        ("So the answer is 3.14159", "3.14", True),  # numbers rounded to 2 decimals
        ("x = 2.5", "2.5", True),  # "=" counts in the last sentence
        ("It is 12.\nTherefore the length is 7", "12", True),  # every sentence's tail is a candidate
        ("The answer is Paris, the capital", "paris", True),  # gold string inside a candidate string
        ("The answer is cat", "a", False),  # a one-character gold is padded (" a" / "a "): no match inside "cat"
        ("The answer is 7", "70", False),
    ],
)
def test_mmmu_open_questions(response, gold, right):
    record = {"prediction": response, "answer": gold, "question_type": "open", "options": {}}
    assert mmmu_scores([record])["accuracy"] == float(right)


def test_mmmu_open_parsing_keeps_numbers_and_strings():
    parsed = parse_open_response("Thus the mass is 5,000 kg")
    assert 5000.0 in parsed and "5,000 kg" in parsed


def test_mmmu_per_subject_accuracy():
    records = [
        {"prediction": "(A)", "answer": "A", "question_type": "multiple-choice", "options": OPTIONS, "subject": "Art"},
        {"prediction": "(B)", "answer": "A", "question_type": "multiple-choice", "options": OPTIONS, "subject": "Art"},
        {"prediction": "is 4", "answer": ["4", "four"], "question_type": "open", "options": {}, "subject": "Math"},
    ]
    scores = mmmu_scores(records)
    assert scores["accuracy/Art"] == 0.5 and scores["accuracy/Math"] == 1.0 and scores["random_fallback"] == 0


# ---- MathVista ------------------------------------------------------------------------------------------------------

CHOICES = ["3", "5", "7", "11"]


def _mv(prediction, answer, qtype="free_form", atype="integer", choices=None, precision=None, **extra):
    return {"prediction": prediction, "answer": answer, "question_type": qtype, "answer_type": atype,
            "choices": choices, "precision": precision, **extra}  # fmt: skip


def test_mathvista_official_quick_rules_and_normalisation():
    assert levenshtein("kitten", "sitting") == 3
    assert normalize_extracted_answer("(C) 7", CHOICES, "multi_choice", "text", None) == "7"  # letter in brackets
    assert normalize_extracted_answer("B", CHOICES, "multi_choice", "text", None) == "5"  # letter indexes options
    words = ["five", "seven", "nine"]
    assert normalize_extracted_answer("fiev", words, "multi_choice", "text", None) == "five"  # nearest (edit distance)
    assert normalize_extracted_answer("six", CHOICES, "multi_choice", "text", None) == "3"  # a tie: the first option
    assert normalize_extracted_answer("", CHOICES, "multi_choice", "text", None) == "3"  # empty: the shortest first
    assert normalize_extracted_answer("3.0", [], "free_form", "integer", None) == "3"
    assert normalize_extracted_answer("1.456", [], "free_form", "float", 2) == "1.46"
    assert normalize_extracted_answer("about 3", [], "free_form", "integer", None) is None


def test_mathvista_reports_the_rules_and_the_path_without_its_llm():
    records = [
        _mv("7", "7", "multi_choice", "text", CHOICES, category="geometry"),  # equal to an option: both right
        _mv("14", "14"),  # int(response): both right
        _mv('The answer is "2.50".', "2.5", atype="float", precision=1),  # quick rule: both right
        _mv("Counting them, there are 14 apples.", "14"),  # needs the LLM upstream: only the kit's rules
        _mv("The answer is (D).", "11", "multi_choice", "text", CHOICES, category="geometry"),  # likewise
        _mv("The Answer: C", "7", "multi_choice", "text", CHOICES),  # likewise
    ]
    scores = mathvista_scores(records)
    assert scores["accuracy"] == 1.0
    assert scores["accuracy_no_llm"] == pytest.approx(3 / 6)
    assert scores["needs_llm"] == pytest.approx(3 / 6)
    assert scores["accuracy/geometry"] == 1.0
    # "is a" is an article, not option A: the text goes to the nearest option instead
    words = ["a triangle", "a square", "a circle"]
    assert (
        mathvista_scores([_mv("The answer is a square.", "a square", "multi_choice", "text", words)])["accuracy"] == 1
    )


# ---- Multiple choice per category (AI2D, EgoSchema, MVBench) --------------------------------------------------------


def test_multiple_choice_accuracy_per_task():
    options = {"A": "left", "B": "right", "C": "up"}
    records = [
        {"prediction": "(A) left", "answer": "A", "options": options, "category": "action_sequence"},
        {"prediction": "B", "answer": "A", "options": options, "category": "action_sequence"},
        {"prediction": "The answer is C", "answer": "C", "options": options, "category": "object_shuffle"},
    ]
    scores = multiple_choice_accuracy(records)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["accuracy/action_sequence"] == 0.5 and scores["accuracy/object_shuffle"] == 1.0


# ---- Hateful Memes: AUROC from p(yes) --------------------------------------------------------------------------------


def test_yes_probability_and_auroc():
    assert float(yes_probability(-1.0, -1.0)) == pytest.approx(0.5)
    assert float(yes_probability(0.0, -100.0)) == pytest.approx(1.0)
    # 3 positives, 3 negatives; of the 9 (positive, negative) pairs, 7 are ranked right and one is a tie (1/2)
    probs = [0.9, 0.8, 0.4, 0.7, 0.4, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    assert auroc(probs, labels) == pytest.approx(7.5 / 9)
    assert binary_scores(probs, labels)["accuracy"] == pytest.approx(4 / 6)
    assert math.isnan(auroc([0.2, 0.3], [1, 1]))  # one class: undefined, not a crash of the evaluation


# ---- TextVQA / OKVQA / VizWiz: vqa_accuracy ------------------------------------------------------------------------


def test_vizwiz_unanswerable_is_an_answer_like_any_other():
    answers = ["unanswerable"] * 2 + ["blue"] * 8
    # leave-one-out: 8 subsets keep both "unanswerable" (2/3), 2 keep one (1/3)
    assert vqa_accuracy("unanswerable", answers) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    assert vqa_accuracy("Unanswerable.", ["unanswerable"] * 7 + ["blue"] * 3) == 1.0  # normalised (answers differ)


def test_textvqa_normalises_every_answer_okvqa_follows_vqaeval():
    same = ["coca cola"] * 10
    # vqaEval (OKVQA) normalises only when the human answers differ; TextVQA's evaluator always does
    assert vqa_accuracy("Coca Cola", same) == 0.0
    assert vqa_accuracy("Coca Cola", same, normalize="always") == 1.0
    okvqa = ["race", "racing", "race", "race", "racing", "racing", "race", "race", "race", "race"]
    # 3 of 10 say "racing": the 3 subsets without one of them keep 2 (2/3), the 7 others keep 3 (1)
    assert vqa_accuracy("Racing", okvqa) == pytest.approx((3 * 2 / 3 + 7) / 10)
