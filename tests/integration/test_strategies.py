"""DDP, FSDP2 and DeepSpeed ZeRO-3 on 2 CPU processes (gloo): same losses, half the parameters per rank, runs killed
mid-epoch that resume exactly where the uninterrupted run was, sharded checkpoints that consolidate into one file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anymal_lit.strategies import consolidate
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def job(tmp_path, name: str, strategy: str, steps: int = 12, ckpt: str | None = None, **options) -> dict:
    """One run of scripts/train_strategy.py: results to ``<name>.json``, checkpoints to ``<ckpt or name>_ckpt``."""
    ckpt_dir = tmp_path / f"{ckpt or name}_ckpt"
    return {"name": name, "strategy": strategy, "steps": steps, "out": str(tmp_path / f"{name}.json"),
            "ckpt_dir": str(ckpt_dir), **options}  # fmt: skip


def train(world, tmp_path, jobs: list[dict]) -> dict[str, dict]:
    """The jobs one after another in one ``torchrun`` of 2 processes (one start-up for all); results by name."""
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests/integration/scripts/train_strategy.py"), str(world), str(tmp_path / "jobs.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = {}
    for spec in jobs:
        result = json.loads(Path(spec["out"]).read_text())
        result["losses"] = {int(k): v for k, v in result["losses"].items()}
        results[spec["name"]] = result
    return results


@pytest.fixture(scope="module")
def shared(tiny_world, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """(folder, results by name) of the runs that need no DeepSpeed, all in one launch: the first test's and the
    DeepSpeed test's DDP reference (in file order)."""
    tmp_path = tmp_path_factory.mktemp("strategies")
    # killed mid-epoch and resumed from the last checkpoint (8 steps per epoch): FSDP during step 6 of epoch 0, DDP
    # during step 10 of epoch 1; a weighted mixture (4 steps per epoch) killed during step 7 (epoch 1)
    last = lambda name: str(tmp_path / f"{name}_ckpt" / "last.ckpt")  # noqa: E731
    return tmp_path, train(tiny_world, tmp_path, [
        job(tmp_path, "ddp", "ddp"),
        job(tmp_path, "fsdp", "fsdp"),
        job(tmp_path, "cut_fsdp", "fsdp", stop_at=6),
        job(tmp_path, "resumed_fsdp", "fsdp", ckpt="cut_fsdp", resume=last("cut_fsdp")),
        job(tmp_path, "cut_ddp", "ddp", stop_at=10),
        job(tmp_path, "resumed_ddp", "ddp", ckpt="cut_ddp", resume=last("cut_ddp")),
        job(tmp_path, "mix", "ddp", steps=9, mixture=True),
        job(tmp_path, "cut_mix", "ddp", steps=9, mixture=True, stop_at=7),
        job(tmp_path, "resumed_mix", "ddp", steps=9, mixture=True, ckpt="cut_mix", resume=last("cut_mix")),
        job(tmp_path, "ddp_fixed", "ddp", no_shuffle=True),
    ])  # fmt: skip


def test_fsdp_matches_ddp_halves_memory_and_checkpoints_round_trip(shared):
    tmp_path, runs = shared
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    assert sorted(ddp["losses"]) == sorted(fsdp["losses"]) == list(range(1, 13))
    for step, loss in ddp["losses"].items():
        assert fsdp["losses"][step] == pytest.approx(loss, rel=1e-4), step
    ratio = fsdp["bytes"]["params"] / ddp["bytes"]["params"]
    assert 0.45 < ratio < 0.6, ratio  # each rank holds about half of every sharded tensor
    assert fsdp["bytes"]["optimizer"] < 0.6 * ddp["bytes"]["optimizer"]

    # both continue with the uninterrupted run's batches and losses
    for strategy, stop, reference in (("fsdp", 6, fsdp), ("ddp", 10, ddp)):
        cut, resumed = runs[f"cut_{strategy}"], runs[f"resumed_{strategy}"]
        assert max(cut["losses"]) == stop
        assert sorted(resumed["losses"]) == list(range(stop, 13))
        for step, loss in resumed["losses"].items():
            assert resumed["ids"][str(step)] == ddp["ids"][str(step)], (strategy, step)
            assert loss == pytest.approx(reference["losses"][step], rel=1e-6), (strategy, step)

    mix, again = runs["mix"], runs["resumed_mix"]
    assert max(runs["cut_mix"]["losses"]) == 7 and sorted(again["losses"]) == [7, 8, 9]
    for step, loss in again["losses"].items():
        assert again["ids"][str(step)] == mix["ids"][str(step)], step
        assert loss == pytest.approx(mix["losses"][step], rel=1e-6), step

    merged = consolidate(runs["resumed_fsdp"]["last"], tmp_path / "merged.ckpt")
    state = torch.load(merged, weights_only=False)
    assert state["global_step"] == 12
    assert state["state_dict"] and all(k.startswith("model.projectors.") for k in state["state_dict"])


def test_deepspeed_zero3_matches_ddp_and_resumes(tiny_world, shared):
    """DeepSpeed ZeRO-3 on CPU (the CPU-only subclass): DDP's losses on the same batches, half the bytes per rank;
    killed in epoch 1 and resumed from its DeepSpeed checkpoint (trainable tensors + optimizer partitions)."""
    tmp_path, ddp_runs = shared  # DDP on the same batches in file order: "ddp_fixed"
    last = str(tmp_path / "cut_zero3_ckpt" / "last.ckpt")
    jobs = [
        job(tmp_path, "zero3", "zero3", no_shuffle=True),
        job(tmp_path, "cut_zero3", "zero3", no_shuffle=True, stop_at=10),
        job(tmp_path, "resumed_zero3", "zero3", no_shuffle=True, ckpt="cut_zero3", resume=last),
    ]
    # one launch each: DeepSpeed runs sharing a process group with another run hung (>15 min) where alone they pass
    runs = {name: result for spec in jobs for name, result in train(tiny_world, tmp_path, [spec]).items()}
    ddp_fixed, zero3, again = ddp_runs["ddp_fixed"], runs["zero3"], runs["resumed_zero3"]
    for step, loss in ddp_fixed["losses"].items():
        assert zero3["losses"][step] == pytest.approx(loss, rel=1e-4), step
    assert max(runs["cut_zero3"]["losses"]) == 10 and sorted(again["losses"]) == [10, 11, 12]
    for step, loss in again["losses"].items():
        assert loss == pytest.approx(zero3["losses"][step], rel=1e-6), step
    assert 0.45 < zero3["bytes"]["params"] / ddp_fixed["bytes"]["params"] < 0.6
    assert zero3["bytes"]["optimizer"] < 0.6 * ddp_fixed["bytes"]["optimizer"]
    export = load_file(str(tmp_path / "zero3_ckpt" / "export" / "trainable.safetensors"))
    ddp_export = load_file(str(tmp_path / "ddp_fixed_ckpt" / "export" / "trainable.safetensors"))
    assert export.keys() == ddp_export.keys()
    for name, tensor in ddp_export.items():  # gathered from the partitions: whole tensors (never empty shards)
        assert export[name].shape == tensor.shape, name
        # Adam steps of ~lr on near-zero gradients amplify float noise, so values agree closely but not bitwise
        assert (export[name] - tensor).norm() <= 0.05 * tensor.norm() + 1e-6, name
