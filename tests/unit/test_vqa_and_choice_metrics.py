import pytest

from anymal_lit.metrics import (
    circular_variants,
    extract_choice,
    mmbench_circular,
    multiple_choice_accuracy,
    normalize_answer,
    vqa_accuracy,
)
from anymal_lit.metrics.vqa import process_punctuation


def test_leave_one_out_min_matches_over_three():
    answers = ["yes"] * 2 + ["no"] * 8
    # leaving out a "yes": 1 match -> 1/3; leaving out a "no": 2 matches -> 2/3
    assert vqa_accuracy("yes", answers) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("no", answers) == 1.0
    assert vqa_accuracy("maybe", answers) == 0.0


def test_official_rule_normalises_only_when_answers_disagree():
    same = ["yes"] * 10
    assert vqa_accuracy("Yes", same) == 0.0  # identical answers: no normalisation in vqaEval.py
    assert vqa_accuracy("Yes", same, normalize="always") == 1.0  # lmms-eval
    mixed = ["two"] * 4 + ["2"] * 6
    assert vqa_accuracy("2", mixed) == 1.0  # number words become digits
    assert vqa_accuracy("Two!", mixed) == 1.0
    assert vqa_accuracy("2", mixed, normalize="never") == 1.0
    assert vqa_accuracy("two", mixed, normalize="never") == pytest.approx((4 * 1.0 + 6 * 1.0) / 10)
    with pytest.raises(ValueError, match="normalize"):
        vqa_accuracy("a", ["a"], normalize="sometimes")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The dog.", "dog"),
        ("an apple", "apple"),
        ("Two dogs!", "2 dogs"),
        ("3.5", "3.5"),
        ("3,000", "3000"),  # a digit,digit comma makes every mark in the text vanish instead of becoming a space
        ("black/white", "black white"),
        ("black / white", "black white"),
        ("dont", "don't"),
        ("none", "0"),
        ("e.g", "eg"),
    ],
)
def test_normalisation_matches_the_official_functions(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_punctuation_is_context_dependent():
    assert process_punctuation("yes-no") == "yes no"
    assert process_punctuation("yes - no") == "yes  no"


def test_newlines_and_tabs_are_spaces():
    assert vqa_accuracy(" red\n", ["red"] * 10) == 1.0


OPTS = {"A": "red circle", "B": "blue square", "C": "green cross", "D": "white triangle"}


@pytest.mark.parametrize(
    ("output", "choice"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is B.", "B"),
        ("**D**", "D"),
        ("A. red circle", "A"),
        ("It must be the blue square", "B"),  # text match
        ("A or B", None),  # two letters
        ("AB", None),  # not a letter token
        ("", None),
        ("Cannot determine the answer", "Z"),
        ("Z", "Z"),
        ("B is what I would have said at first, but looking again the picture shows something else entirely", None),
        ("I am not sure, but the correct answer is C", "C"),
    ],
)
def test_choice_extraction(output, choice):
    assert extract_choice(output, dict(OPTS)) == choice


def test_long_outputs_do_not_match_option_texts():
    rambling = "the red circle " * 20
    assert extract_choice(rambling, dict(OPTS)) is None


def test_circular_eval_needs_every_rotation_right():
    q1 = circular_variants({"index": 7, "answer": "A", "options": dict(OPTS), "category": "colour"})
    q2 = circular_variants({"index": 8, "answer": "B", "options": dict(OPTS), "category": "shape"})
    assert [r["index"] for r in q1] == [7, 1_000_007, 2_000_007, 3_000_007]
    assert {r["options"][r["answer"]] for r in q1} == {"red circle"}
    records = [{**r, "prediction": r["answer"]} for r in q1]
    records += [{**r, "prediction": r["answer"]} for r in q2[:3]] + [{**q2[3], "prediction": "A or B"}]
    scores = mmbench_circular(records)
    assert scores["circular"] == 0.5 and scores["vanilla"] == 7 / 8
    assert scores["circular/colour"] == 1.0 and scores["circular/shape"] == 0.0
    assert scores["num_questions"] == 2


def test_multiple_choice_accuracy_counts_unresolved_as_wrong():
    recs = [
        {"prediction": "A", "answer": "A", "options": OPTS},
        {"prediction": "", "answer": "B", "options": OPTS},
        {"prediction": "B C", "answer": "B", "options": OPTS},
    ]
    assert multiple_choice_accuracy(recs) == {"accuracy": 1 / 3, "unresolved": 2 / 3}
