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


def launch(tmp_path, processes: int, jobs: dict[str, dict]) -> dict[str, dict]:
    """The jobs (name -> job) one after another in one launch of ``processes`` (one start-up for all); results by
    name."""
    specs = [{"out": str(tmp_path / f"{name}.json"), **job} for name, job in jobs.items()]
    jobs_file = tmp_path / f"jobs_{processes}.json"
    jobs_file.write_text(json.dumps(specs))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*(launcher if processes > 1 else [sys.executable]), SCRIPT, str(jobs_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600 + 120 * (len(jobs) - 1))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in jobs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Every run of this module, in three launches (1, 2 and 4 processes); the SFT run on 1 x 2 is also killed
    after step 2 and resumed from its checkpoint."""
    tmp = tmp_path_factory.mktemp("tp")
    ckpt = str(tmp / "ckpt")
    pair = {
        "tp_align": {"stage": "align", "tp": 2},
        "tp_sft": {"stage": "sft", "tp": 2},
        "cut": {"stage": "sft", "tp": 2, "ckpt_dir": ckpt, "stop_at": 2},
        "again": {"stage": "sft", "tp": 2, "ckpt_dir": ckpt, "resume": f"{ckpt}/last.ckpt"},
        "dp": {"stage": "sft", "tp": 1},
    }
    one = {"one_align": {"stage": "align"}, "one_sft": {"stage": "sft"}}
    return {**launch(tmp, 1, one), **launch(tmp, 2, pair), **launch(tmp, 4, {"2x2": {"stage": "sft", "tp": 2}})}


@pytest.mark.parametrize("stage", ["align", "sft"])
def test_one_by_two_matches_one_process(runs, stage: str) -> None:
    one, tp = runs[f"one_{stage}"], runs[f"tp_{stage}"]
    assert tp["ids"] == one["ids"]  # both ranks of the group read every batch
    assert sorted(tp["losses"]) == ["1", "2", "3"]
    for step, loss in one["losses"].items():
        assert tp["losses"][step] == pytest.approx(loss, rel=1e-4), step
    # the layers' linears and the vocabulary are split in two; norms (and LoRA's replicated halves) are not
    assert 0.5 <= tp["llm_bytes"] / tp["llm_bytes_full"] < 0.53
    assert tp["llm_bytes_planned"] == pytest.approx(tp["llm_bytes"], rel=0.01)  # `anymal-lit plan`'s fsdp_tp row
    assert tp["trainable_shapes"] == one["trainable_shapes"]  # projectors and LoRA gathered whole for the export
    if stage == "sft":  # killed after step 2 and resumed from its checkpoint: the uninterrupted run's losses
        again = runs["again"]
        assert sorted(again["losses"]) == ["2", "3"]
        for step, loss in again["losses"].items():
            assert again["ids"][step] == tp["ids"][step]
            assert loss == pytest.approx(tp["losses"][step], rel=1e-6), step


def test_two_by_two_matches_data_parallel_with_a_quarter_per_rank(runs) -> None:
    dp, both = runs["dp"], runs["2x2"]
    assert both["ids"] == dp["ids"]
    for step, loss in dp["losses"].items():
        assert both["losses"][step] == pytest.approx(loss, rel=1e-4), step
    assert 0.25 <= both["llm_bytes"] / both["llm_bytes_full"] < 0.27
    assert both["llm_bytes_planned"] == pytest.approx(both["llm_bytes"], rel=0.01)
