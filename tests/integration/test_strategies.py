"""DDP, FSDP2 and DeepSpeed ZeRO-3 on 2 CPU processes (gloo): same losses, half the parameters per rank, runs killed
mid-epoch that resume exactly where the uninterrupted run was, sharded checkpoints that consolidate into one file."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from anymal_lit.strategies import consolidate
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def train(world, strategy: str, tmp_path, name: str, *extra: str) -> dict:
    out, ckpt = tmp_path / f"{name}.json", tmp_path / f"{name}_ckpt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests/integration/scripts/train_strategy.py"), str(world), strategy, str(out), str(ckpt),
        "--steps", "12", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["losses"] = {int(k): v for k, v in result["losses"].items()}
    return result


def test_fsdp_matches_ddp_halves_memory_and_checkpoints_round_trip(tiny_world, tmp_path):
    ddp = train(tiny_world, "ddp", tmp_path, "ddp")
    fsdp = train(tiny_world, "fsdp", tmp_path, "fsdp")
    assert sorted(ddp["losses"]) == sorted(fsdp["losses"]) == list(range(1, 13))
    for step, loss in ddp["losses"].items():
        assert fsdp["losses"][step] == pytest.approx(loss, rel=1e-4), step
    ratio = fsdp["bytes"]["params"] / ddp["bytes"]["params"]
    assert 0.45 < ratio < 0.6, ratio  # each rank holds about half of every sharded tensor
    assert fsdp["bytes"]["optimizer"] < 0.6 * ddp["bytes"]["optimizer"]

    # killed mid-epoch and resumed from the last checkpoint (8 steps per epoch): FSDP during step 6 of epoch 0, DDP
    # during step 10 of epoch 1; both continue with the uninterrupted run's batches and losses
    resumed = {}
    for strategy, stop, reference in (("fsdp", 6, fsdp), ("ddp", 10, ddp)):
        cut = train(tiny_world, strategy, tmp_path, f"cut_{strategy}", "--stop-at", str(stop))
        assert max(cut["losses"]) == stop
        resumed[strategy] = train(tiny_world, strategy, tmp_path, f"cut_{strategy}", "--resume", cut["last"])
        assert sorted(resumed[strategy]["losses"]) == list(range(stop, 13))
        for step, loss in resumed[strategy]["losses"].items():
            assert resumed[strategy]["ids"][str(step)] == ddp["ids"][str(step)], (strategy, step)
            assert loss == pytest.approx(reference["losses"][step], rel=1e-6), (strategy, step)

    # a weighted mixture (4 steps per epoch) killed during step 7 (epoch 1) resumes with the same rows
    mix = train(tiny_world, "ddp", tmp_path, "mix", "--mixture", "--steps", "9")
    cut = train(tiny_world, "ddp", tmp_path, "cut_mix", "--mixture", "--steps", "9", "--stop-at", "7")
    again = train(tiny_world, "ddp", tmp_path, "cut_mix", "--mixture", "--steps", "9", "--resume", cut["last"])
    assert sorted(again["losses"]) == [7, 8, 9]
    for step, loss in again["losses"].items():
        assert again["ids"][str(step)] == mix["ids"][str(step)], step
        assert loss == pytest.approx(mix["losses"][step], rel=1e-6), step

    # DeepSpeed ZeRO-3 on CPU (the CPU-only subclass): DDP's losses on the same batches, half the bytes per rank
    ddp_fixed = train(tiny_world, "ddp", tmp_path, "ddp_fixed", "--no-shuffle")
    zero3 = train(tiny_world, "zero3", tmp_path, "zero3", "--no-shuffle")
    for step, loss in ddp_fixed["losses"].items():
        assert zero3["losses"][step] == pytest.approx(loss, rel=1e-4), step
    # killed in epoch 1 and resumed from its DeepSpeed checkpoint (trainable tensors + optimizer partitions)
    cut = train(tiny_world, "zero3", tmp_path, "cut_zero3", "--no-shuffle", "--stop-at", "10")
    again = train(tiny_world, "zero3", tmp_path, "cut_zero3", "--no-shuffle", "--resume", cut["last"])
    assert sorted(again["losses"]) == [10, 11, 12]
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

    merged = consolidate(resumed["fsdp"]["last"], tmp_path / "merged.ckpt")
    state = torch.load(merged, weights_only=False)
    assert state["global_step"] == 12
    assert state["state_dict"] and all(k.startswith("model.projectors.") for k in state["state_dict"])
