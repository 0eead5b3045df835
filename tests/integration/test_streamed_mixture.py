"""Streamed mixtures across processes and through Lightning checkpoints: 2 data-parallel processes read disjoint
rows and resume exactly; a run killed mid-epoch resumes from its checkpoint with the uninterrupted run's batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anymal_lit.data import ImageTextDataModule, MixtureDataModule, WebDataModule, write_shards
from tests.conftest import REPO
from tests.integration.test_resume import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shard_sets(tiny_world: Path, tmp_path_factory) -> dict[str, str]:
    """Captions (64 records) and instructions (284) in 8 shards each."""
    out = tmp_path_factory.mktemp("mixture_shards")
    sets = {}
    for name, file, per_shard in (("caption", "image_caption_train.jsonl", 8), ("sft", "image_sft_train.jsonl", 36)):
        write_shards(tiny_world / file, str(out / f"{name}-%06d.tar"), maxcount=per_shard)
        sets[name] = str(out / f"{name}-{{000000..000007}}.tar")
    return sets


def test_two_processes_read_disjoint_rows_and_resume_exactly(tiny_world, shard_sets, tmp_path):
    out = tmp_path / "ranks.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests/integration/scripts/streamed_mixture_ddp.py"), str(tiny_world), shard_sets["caption"],
        shard_sets["sft"], str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = json.loads(out.read_text())
    assert [r["replica"] for r in ranks] == [0, 1]
    assert len(ranks[0]["full"]) == len(ranks[1]["full"]) == 24  # 48 rows per epoch, half per replica
    assert not set(ranks[0]["full"]) & set(ranks[1]["full"])  # disjoint shards and JSONL shares
    for r in ranks:
        assert r["resumed"] == r["full"], r["rank"]


def streamed(world: Path, shard_sets: dict[str, str]) -> MixtureDataModule:
    """Two streamed children and a JSONL one added at epoch 1, 16 rows per epoch: 4 steps per epoch."""
    datasets = {
        "caption": WebDataModule(train_shards=shard_sets["caption"], samples_per_epoch=64, shuffle_buffer=8),
        "sft": WebDataModule(train_shards=shard_sets["sft"], samples_per_epoch=64, shuffle_buffer=8, seed=5),
        "jsonl": ImageTextDataModule(train_file=str(world / "image_sft_train.jsonl")),
    }
    return MixtureDataModule(datasets, curriculum={"jsonl": 1}, samples_per_epoch=16, batch_size=4, num_workers=1)


@pytest.mark.slow
def test_streamed_mixture_run_killed_mid_epoch_resumes_exactly(tiny_world, shard_sets, tmp_path):
    full = run(tiny_world, tmp_path / "full", steps=10, data=streamed(tiny_world, shard_sets))
    run(tiny_world, tmp_path / "cut", steps=10, stop_at=7, data=streamed(tiny_world, shard_sets))  # epoch 1, step 3
    last = str(tmp_path / "cut" / "last.ckpt")
    resumed = run(tiny_world, tmp_path / "cut", steps=10, resume=last, data=streamed(tiny_world, shard_sets))
    assert sorted(resumed) == [7, 8, 9, 10]
    for step, (loss, ids) in resumed.items():
        assert ids == full[step][1], f"step {step}: different batch after resume"
        assert loss == full[step][0], f"step {step}: loss {loss} != {full[step][0]}"
