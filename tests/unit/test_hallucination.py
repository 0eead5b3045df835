"""Object hallucination (CHAIR-style) of toy-world captions, against hand-written captions of known scenes."""

from __future__ import annotations

import pytest

from anymal_lit.toyworld.hallucination import hallucination_rates
from anymal_lit.toyworld.shapes import Scene, ShapeObject

TWO = Scene((ShapeObject("circle", "blue", "large", "left"), ShapeObject("square", "red", "small", "right")))
ONE = Scene((ShapeObject("triangle", "purple", "small", "top"),))


@pytest.mark.parametrize(
    ("caption", "scene", "object_rate"),
    [
        ("a big blue circle on the left and a small red square on the right", TWO, 0.0),  # all true
        ("there is a circle and a square", TWO, 0.0),  # names fewer attributes: nothing false
        ("a little purple triangle near the top", ONE, 0.0),  # paraphrased size and position words
        ("a red circle on the left and a small red square", TWO, 0.5),  # colour bound to the wrong object
        ("a small purple triangle at the top and a green cross at the bottom", ONE, 0.5),  # an extra object
        ("a large purple triangle at the top", ONE, 1.0),  # wrong size
        ("a small purple triangle at the bottom", ONE, 1.0),  # wrong position
        ("a purple circle", ONE, 1.0),  # wrong shape
    ],
)
def test_one_caption(caption, scene, object_rate):
    rates = hallucination_rates({"0": caption}, {"0": scene})
    assert rates["hallucination_object"] == object_rate
    assert rates["hallucination_output"] == (object_rate > 0)


def test_rates_over_a_set():
    predictions = {
        "a": "a blue circle on the left and a red square on the right",  # 2 mentions, none false
        "b": "a purple triangle and a yellow circle",  # 2 mentions, 1 false
        "c": "a white cross",  # 1 mention, false
        # "d" has no prediction: mentions nothing, hallucinates nothing, still counts as an output
    }
    scenes = {"a": TWO, "b": ONE, "c": ONE, "d": ONE}
    rates = {"hallucination_object": 2 / 5, "hallucination_output": 2 / 4, "omission_output": 1 / 4}  # "d" names none
    assert hallucination_rates(predictions, scenes) == rates
    assert hallucination_rates({"a": "a blue circle on the left"}, {"a": TWO})["omission_output"] == 1.0
