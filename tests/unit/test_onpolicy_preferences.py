"""On-policy preference pairs of the toy world: sampled captions labelled against their scenes."""

from __future__ import annotations

import json

from anymal_lit.toyworld.hallucination import hallucinated
from anymal_lit.toyworld.preferences import (
    binding_swap_pairs,
    caption_prompts,
    label_pair,
    label_pairs,
    onpolicy_preferences,
)
from anymal_lit.toyworld.shapes import Scene, ShapeObject, corrected_caption, parse_caption

SCENE = Scene((ShapeObject("circle", "blue", "large", "left"), ShapeObject("square", "red", "small", "right")))


def test_label_pair_rejects_a_hallucination_and_chooses_its_minimal_correction():
    samples = [
        "a blue circle",  # true but incomplete: neither
        "a big blue circle on the left and a green square at the top",  # green square, top: hallucinated
        "a large blue circle on the left and a little red square on the right",  # complete and true
        "a red circle",  # hallucinated too, but not the first
    ]
    # the rejected caption with only its wrong words changed ("big" and "on the left" were true, kept)
    assert label_pair(samples, SCENE) == ("a big blue circle on the left and a red square on the right", samples[1])
    assert label_pair(samples[:1], SCENE) == (None, None)
    assert label_pair(["a red circle"], SCENE) == ("a blue circle", "a red circle")
    # an invented third object is deleted with the words joining it on
    invented = "a blue circle, a red square and a white cross on the left"
    assert label_pair([invented, samples[2]], SCENE) == ("a blue circle, a red square", invented)


def test_label_pairs_gives_one_pair_per_distinct_hallucinated_sample():
    complete = "a large blue circle on the left and a little red square on the right"
    samples = ["a red circle", complete, "a red circle", "a blue circle and a green square", "a blue circle"]
    assert label_pairs(samples, SCENE) == [
        ("a blue circle", "a red circle"),  # the repeated sample gives one pair
        ("a blue circle and a red square", "a blue circle and a green square"),
    ]
    assert label_pairs([complete], SCENE) == []


def test_corrected_caption_keeps_every_word_that_was_true():
    assert corrected_caption("there is a little green circle near the top.", SCENE) == (
        "there is a large blue circle on the left."
    )
    assert corrected_caption("a circle and a cross", SCENE) == "a circle and a square"
    one = Scene(SCENE.objects[:1])  # the invented objects go, with the words joining them on
    assert corrected_caption("a picture of a big red circle on the left and a white cross at the top", one) == (
        "a picture of a big blue circle on the left"
    )
    three = "a red square and a red square and a red square."
    assert corrected_caption(three, SCENE) == "a blue circle and a red square."


def test_onpolicy_file_replaces_only_pairs_with_a_hallucinated_sample(image_data, tmp_path):
    prompts = caption_prompts(image_data, tmp_path / "prompts.jsonl", limit=3)
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0-pc", "1-pc", "2-pc"] and all("chosen" in r for r in rows)
    scenes = json.loads((image_data / "image_scenes_train.json").read_text())
    truth = rows[0]["chosen"]  # the world's caption of picture 0: true and complete
    wrong_colour = {"red": "green"}.get(scenes["0"]["objects"][0]["colour"], "red")
    lie = f"a {wrong_colour} {scenes['0']['objects'][0]['shape']}"
    samples = [
        {**rows[0], "samples": [truth, lie]},  # on-policy pair, chosen sampled too
        {**rows[1], "samples": [lie if scenes["1"]["objects"][0]["colour"] != wrong_colour else "a white cross"]},
        {**rows[2], "samples": [""]},  # nothing wrong said: the world's pair stays
    ]
    sampled = tmp_path / "samples.jsonl"
    sampled.write_text("".join(json.dumps(r) + "\n" for r in samples))
    stats = onpolicy_preferences(image_data, sampled, tmp_path / "pairs.jsonl")
    pairs = {r["id"]: r for r in map(json.loads, (tmp_path / "pairs.jsonl").read_text().splitlines())}
    assert set(pairs) == {"0-pc", "0-pq", "1-pc", "1-pq", "2-pc", "2-pq"}  # caption + question pair per picture
    assert pairs["0-pc"]["rejected"] == lie and pairs["0-pc"]["chosen"] == corrected_caption(
        lie, Scene.from_dict(scenes["0"])
    )
    assert pairs["0-pc"]["source"] == "sft_sample"
    assert pairs["2-pc"] == next(r for r in rows if r["id"] == "2-pc")
    assert stats["pairs"] == 6 and stats["onpolicy_pairs"] == 2 and stats["onpolicy_chosen"] == 2


def test_more_pairs_per_picture_keep_the_first_and_add_numbered_ones(image_data, tmp_path):
    prompts = caption_prompts(image_data, tmp_path / "prompts.jsonl", limit=1)
    row = json.loads(prompts.read_text())
    scene = Scene.from_dict(json.loads((image_data / "image_scenes_train.json").read_text())["0"])
    wrong = [c for c in ("red", "green", "blue", "white") if c not in {o.colour for o in scene.objects}]
    lies = [f"a {colour} {scene.objects[0].shape}" for colour in wrong[:3]]
    sampled = tmp_path / "samples.jsonl"
    sampled.write_text(json.dumps({**row, "samples": lies}) + "\n")
    one = onpolicy_preferences(image_data, sampled, tmp_path / "one.jsonl")
    two = onpolicy_preferences(image_data, sampled, tmp_path / "two.jsonl", pairs_per_picture=2)
    rows = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0-pc", "0-pc-2", "0-pq"]
    assert [r["rejected"] for r in rows[:2]] == lies[:2]
    assert (tmp_path / "one.jsonl").read_text().splitlines()[0] == json.dumps(rows[0])
    assert (one["onpolicy_pairs"], two["onpolicy_pairs"], two["pairs"]) == (1, 2, 3)


def test_binding_swaps_name_only_what_is_there_bound_to_the_wrong_object(image_data, tmp_path):
    scenes = {
        k: Scene.from_dict(v) for k, v in json.loads((image_data / "image_scenes_train.json").read_text()).items()
    }
    world_captions = {
        r["id"]: r["chosen"] for r in map(json.loads, (image_data / "image_preference_train.jsonl").open())
    }
    pairs = binding_swap_pairs(image_data, skip={"0", "1"}, limit=5)
    assert len(pairs) == 5 and all(p["source"] == "binding_swap" for p in pairs)
    for pair in pairs:
        picture = pair["id"].removesuffix("-pb")
        scene = scenes[picture]
        assert picture not in {"0", "1"} and len(scene.objects) == 2
        assert pair["chosen"] == world_captions[f"{picture}-pc"]
        rejected = parse_caption(pair["rejected"])
        assert len(rejected) == 2 and any(hallucinated(m, scene) for m in rejected)
        chosen = parse_caption(pair["chosen"])
        for attribute in ("shape", "colour"):  # the same words, each object's on the other: only the binding is wrong
            assert sorted(str(m[attribute]) for m in rejected) == sorted(str(m[attribute]) for m in chosen)
    prompts = caption_prompts(image_data, tmp_path / "prompts.jsonl", limit=2)
    sampled = tmp_path / "samples.jsonl"
    sampled.write_text("".join(json.dumps({**json.loads(line), "samples": [""]}) + "\n" for line in prompts.open()))
    stats = onpolicy_preferences(image_data, sampled, tmp_path / "pairs.jsonl", binding_swaps=5)
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert rows[4:] == pairs and stats["binding_swap_pairs"] == 5 and stats["pairs"] == 9


def test_omission_pairs_reject_a_two_object_caption_cut_after_its_first_object(image_data, tmp_path):
    """``omissions=True``: each two-object picture's chosen caption is also preferred to itself cut after the first
    object (the counterweight to rejecting invented objects); one-object pictures get none."""
    prompts = caption_prompts(image_data, tmp_path / "prompts.jsonl", limit=12)
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    truths = json.loads((image_data / "image_scenes_train.json").read_text())
    scenes = {k: Scene.from_dict(v) for k, v in truths.items()}
    counts = {rid: len(scenes[rid.removesuffix("-pc")].objects) for rid in (r["id"] for r in rows)}
    assert set(counts.values()) == {1, 2}, counts  # the fixture world has both kinds among these pictures
    sampled = tmp_path / "samples.jsonl"
    sampled.write_text("".join(json.dumps({**r, "samples": [r["chosen"]]}) + "\n" for r in rows))
    stats = onpolicy_preferences(image_data, sampled, tmp_path / "pairs.jsonl", omissions=True)
    pairs = {r["id"]: r for r in map(json.loads, (tmp_path / "pairs.jsonl").read_text().splitlines())}
    omitted = {rid.removesuffix("-po") for rid in pairs if rid.endswith("-po")}
    assert omitted == {rid.removesuffix("-pc") for rid, n in counts.items() if n == 2}
    assert stats["omission_pairs"] == len(omitted)
    for picture in omitted:
        pair, scene = pairs[f"{picture}-po"], scenes[picture]
        assert pair["chosen"] == pairs[f"{picture}-pc"]["chosen"]
        (mention,) = parse_caption(pair["rejected"])  # one object named, truly: left out, not invented
        assert not hallucinated(mention, scene)
        assert pair["chosen"].startswith(pair["rejected"])
    plain = onpolicy_preferences(image_data, sampled, tmp_path / "plain.jsonl")
    assert plain["omission_pairs"] == 0 and plain["pairs"] == stats["pairs"] - len(omitted)
