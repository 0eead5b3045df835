"""Evaluation scores are identical on 2 processes (gloo, CPU) and on 1; the collectives they use gather and sum."""

import json
import os
import subprocess
import sys

import pytest

from anymal_lit.metrics import CaptionMetric, ChoiceMetric, VQAMetric, circular_variants
from tests.conftest import REPO
from tests.unit.test_caption_metric import coco_example

pytestmark = pytest.mark.integration


def eval_sets() -> dict:
    predictions, references = coco_example()
    ids = sorted(predictions)[:150]
    vqa_pred = {str(i): ["red", "2", "two", "blue", "the red"][i % 5] for i in range(41)}
    vqa_answers = {str(i): (["red"] * 7 + ["2"] * 3) if i % 2 else ["two"] * 10 for i in range(41)}
    options = {"A": "red", "B": "blue", "C": "green", "D": "white"}
    records = [
        r for q in range(9) for r in circular_variants({"index": q, "options": options, "answer": "ABCD"[q % 4]})
    ]
    choice_pred = {str(r["index"]): (r["answer"] if r["index"] % 7 else "B") for r in records}
    return {
        "caption": {"predictions": {k: predictions[k] for k in ids}, "targets": {k: references[k] for k in ids}},
        "vqa": {"predictions": vqa_pred, "targets": vqa_answers},
        "choice": {"predictions": choice_pred, "targets": {str(r["index"]): r for r in records}},
    }


def test_scores_on_two_processes_equal_one(tmp_path):
    data = eval_sets()
    (tmp_path / "in.json").write_text(json.dumps(data))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests/integration/scripts/metrics_ddp.py"), str(tmp_path / "in.json"), str(tmp_path / "out.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    for name, metric in (
        ("caption", CaptionMetric(with_meteor=False)),
        ("vqa", VQAMetric()),
        ("choice", ChoiceMetric()),
    ):
        ids = sorted(data[name]["predictions"])
        metric.update(ids, [data[name]["predictions"][k] for k in ids], [data[name]["targets"][k] for k in ids])
        one = metric.compute()
        assert two[name] == pytest.approx(one, abs=1e-12), name
    assert 0 < two["choice"]["circular"] < two["choice"]["vanilla"] < 1
    assert two["collectives"] == {
        "device": "cpu",  # gloo reduces CPU tensors
        "objects": ["r0a", "r1a", "r1b"],
        "dicts": {"k0": 0, "k1": 1, "shared": 1},
        "sum": [2.0, 2.0],
        "max": 11,
    }
