import json
from pathlib import Path

import pytest

from anymal_lit.metrics import CaptionMetric, caption_scores, cider_score

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_fakecap"
# Scores of the COCO caption toolkit (pycocoevalcap 1.2) on its own example, from DATA/README.md.
COCO_EXPECTED = {
    "Bleu_1": 0.539169,
    "Bleu_2": 0.363135,
    "Bleu_3": 0.243765,
    "Bleu_4": 0.163251,
    "METEOR": 0.184120,
    "ROUGE_L": 0.374645,
    "CIDEr": 0.582229,
}


def coco_example() -> tuple[dict[str, str], dict[str, list[str]]]:
    results = json.loads((DATA / "captions_val2014_fakecap_results.json").read_text())
    refs = json.loads((DATA / "codalab_refs_val2014_fakecap1000.json").read_text())
    references: dict[str, list[str]] = {}
    for ann in refs["annotations"]:
        references.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    return {str(r["image_id"]): r["caption"] for r in results}, references


@pytest.mark.slow
def test_cider_score_reproduces_the_coco_toolkit_on_its_example():
    predictions, references = coco_example()
    scores = cider_score(predictions, references)
    for key, expected in COCO_EXPECTED.items():
        assert scores[key] == pytest.approx(expected, abs=5e-7), key


@pytest.mark.slow
def test_one_meteor_process_scores_every_evaluation_as_a_fresh_one_would():
    from pycocoevalcap.meteor.meteor import Meteor

    from anymal_lit.metrics import caption

    predictions, references = coco_example()
    ids = sorted(predictions)
    parts = [ids[:150], ids[150:300], ids[:150]]
    shared = []
    for part in parts:
        shared.append(caption_scores({k: predictions[k] for k in part}, {k: references[k] for k in part})["METEOR"])
        if part is parts[0]:
            process = caption.meteor_scorer().meteor_p
    assert caption.meteor_scorer().meteor_p is process and process.poll() is None  # started once, still running
    assert shared[2] == shared[0] != shared[1]
    tokens = caption.ptb_tokenize(
        {**{f"r{k}": references[k] for k in ids[150:300]}, **{f"p{k}": [predictions[k]] for k in ids[150:300]}}
    )
    fresh = Meteor().compute_score(
        {k: tokens[f"r{k}"] for k in ids[150:300]}, {k: tokens[f"p{k}"] for k in ids[150:300]}
    )[0]
    assert shared[1] == fresh
    process.kill()
    process.wait()
    assert (
        caption_scores({k: predictions[k] for k in parts[0]}, {k: references[k] for k in parts[0]})["METEOR"]
        == shared[0]
    )
    assert caption.meteor_scorer().meteor_p is not process  # an exited scorer is replaced


def test_cider_is_corpus_level_not_a_mean_of_batches():
    predictions, references = coco_example()
    ids = sorted(predictions)[:200]
    preds = {k: predictions[k] for k in ids}
    refs = {k: references[k] for k in ids}
    whole = caption_scores(preds, refs, with_meteor=False)["CIDEr"]
    metric = CaptionMetric(with_meteor=False)
    halves = [ids[:100], ids[100:]]
    for part in halves:
        metric.update(part, [preds[k] for k in part], [refs[k] for k in part])
    assert metric.compute()["CIDEr"] == pytest.approx(whole, abs=1e-12)
    per_batch = [caption_scores({k: preds[k] for k in p}, {k: refs[k] for k in p}, with_meteor=False) for p in halves]
    mean_of_batches = sum(s["CIDEr"] for s in per_batch) / 2
    assert abs(mean_of_batches - whole) > 1e-3  # document frequencies depend on the whole set


def test_duplicate_ids_from_padded_samplers_are_scored_once():
    refs = {"1": ["a red circle on the left"], "2": ["a big blue square"]}
    metric = CaptionMetric(with_meteor=False)
    metric.update(["1", "2"], ["a red circle on the left", "a blue square"], [refs["1"], refs["2"]])
    metric.update(["1"], ["a red circle on the left"], [refs["1"]])
    assert metric.compute() == caption_scores({"1": "a red circle on the left", "2": "a blue square"}, refs, False)


def test_empty_prediction_scores_zero_and_keeps_alignment():
    refs = {"1": ["a red circle on the left"], "2": ["a big blue square at the top"], "3": ["two green crosses"]}
    good = {"1": "a red circle on the left", "2": "a big blue square at the top", "3": "two green crosses"}
    with_empty = {**good, "2": ""}
    full = caption_scores(good, refs, with_meteor=False)
    partial = caption_scores(with_empty, refs, with_meteor=False)
    assert partial["CIDEr"] < full["CIDEr"]
    # the empty caption must not shift image 3's caption onto image 2 (one PTB line per caption)
    assert caption_scores({"1": "", "2": "", "3": "two green crosses"}, refs, False)["CIDEr"] > 0


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        cider_score({"1": "a cat"}, {"1": ["a cat"], "2": ["a dog"]})


def test_constant_caption_baseline_equals_the_toolkit_cider_of_that_caption():
    """The fast constant-caption scorer must give exactly pycocoevalcap's CIDEr of predicting it for every image."""
    from pycocoevalcap.cider.cider import Cider

    from anymal_lit.metrics.caption import ptb_tokenize
    from anymal_lit.toyworld.constant_caption import best_constant_cider, constant_cider_scorer

    predictions, references = coco_example()
    ids = sorted(references)[:60]
    refs = {i: references[i] for i in ids}
    candidates = [predictions[i] for i in ids[:8]]
    tokens = ptb_tokenize({**{f"r{k}": v for k, v in refs.items()}, "candidates": candidates})
    gts = {k: tokens[f"r{k}"] for k in ids}
    score = constant_cider_scorer([gts[k] for k in ids])
    toolkit = [float(Cider().compute_score(gts, {k: [tok] for k in ids})[0]) for tok in tokens["candidates"]]
    assert [score(tok) for tok in tokens["candidates"]] == toolkit
    assert len(set(toolkit)) > 1  # the candidates really differ
    best, caption = best_constant_cider(candidates, refs)
    assert best == max(toolkit)
    assert caption == candidates[toolkit.index(best)]
