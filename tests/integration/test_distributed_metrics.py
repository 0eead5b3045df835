"""Metrics give the same numbers on 2 processes (gloo, CPU) as on 1."""

import json
import os
import subprocess
import sys

import pytest

from anymal_lit.metrics import caption_scores
from tests.conftest import REPO
from tests.unit.test_caption_metric import coco_example

pytestmark = pytest.mark.integration


def test_caption_metric_on_two_processes_equals_one(tmp_path):
    predictions, references = coco_example()
    ids = sorted(predictions)[:150]
    data = {"predictions": {k: predictions[k] for k in ids}, "references": {k: references[k] for k in ids}}
    (tmp_path / "in.json").write_text(json.dumps(data))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests/integration/scripts/caption_metric_ddp.py"), str(tmp_path / "in.json"), str(tmp_path / "out.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    one = caption_scores(data["predictions"], data["references"], with_meteor=False)
    assert two == pytest.approx(one, abs=1e-12)
