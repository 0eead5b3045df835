"""FSDP2 x tensor parallelism on CPU processes (gloo): the losses of one process, 1/(dp x tp) of the LLM per rank,
LoRA and projectors gathered whole, kill and resume exact (tests/integration/scripts/train_tp.py, a tiny random
Llama)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCRIPT = str(REPO / "tests/integration/scripts/train_tp.py")


def run(tmp_path, name: str, processes: int, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*(launcher if processes > 1 else [sys.executable]), SCRIPT, str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("stage", ["align", "sft"])
def test_one_by_two_matches_one_process(tmp_path, stage: str) -> None:
    one = run(tmp_path, "one", 1, "--stage", stage)
    tp = run(tmp_path, "tp", 2, "--stage", stage, "--tp", "2")
    assert tp["ids"] == one["ids"]  # both ranks of the group read every batch
    assert sorted(tp["losses"]) == ["1", "2", "3"]
    for step, loss in one["losses"].items():
        assert tp["losses"][step] == pytest.approx(loss, rel=1e-4), step
    # the layers' linears and the vocabulary are split in two; norms (and LoRA's replicated halves) are not
    assert 0.5 <= tp["llm_bytes"] / tp["llm_bytes_full"] < 0.53
    assert tp["llm_bytes_planned"] == pytest.approx(tp["llm_bytes"], rel=0.01)  # `anymal-lit plan`'s fsdp_tp row
    assert tp["trainable_shapes"] == one["trainable_shapes"]  # projectors and LoRA gathered whole for the export
    if stage == "sft":  # killed after step 2 and resumed from its checkpoint: the uninterrupted run's losses
        ckpt = str(tmp_path / "ckpt")
        cut = run(tmp_path, "cut", 2, "--stage", stage, "--tp", "2", "--ckpt-dir", ckpt, "--stop-at", "2")
        again = run(tmp_path, "again", 2, "--stage", stage, "--tp", "2", "--ckpt-dir", ckpt, "--resume", cut["last"])
        assert sorted(again["losses"]) == ["2", "3"]
        for step, loss in again["losses"].items():
            assert again["ids"][step] == tp["ids"][step]
            assert loss == pytest.approx(tp["losses"][step], rel=1e-6), step


def test_two_by_two_matches_data_parallel_with_a_quarter_per_rank(tmp_path) -> None:
    dp = run(tmp_path, "dp", 2, "--stage", "sft", "--tp", "1")
    both = run(tmp_path, "2x2", 4, "--stage", "sft", "--tp", "2")
    assert both["ids"] == dp["ids"]
    for step, loss in dp["losses"].items():
        assert both["losses"][step] == pytest.approx(loss, rel=1e-4), step
    assert 0.25 <= both["llm_bytes"] / both["llm_bytes_full"] < 0.27
    assert both["llm_bytes_planned"] == pytest.approx(both["llm_bytes"], rel=0.01)
