"""Streamed mixtures: WebDataModule children of MixtureDataModule follow the mixture's weights and curriculum,
repeat exactly for a seed, split by data-parallel replica (not by process) and resume mid-epoch exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit.data import ConversationDataModule, MixtureDataModule, WebDataModule, write_shards
from anymal_lit.data.streamed_mixture import StreamedMixture


def source_of(record_id: str) -> str:
    """Which child a row came from: caption ids are numbers, instruction ids ``N-qK``, ``N-c``..., interleaved ones
    ``mix-N``."""
    return "mix" if record_id.startswith("mix-") else "sft" if "-" in record_id else "caption"


@pytest.fixture(scope="module")
def shard_sets(tiny_world: Path, tmp_path_factory) -> dict[str, str]:
    """Captions (64 records) and instructions (284) in 8 shards each."""
    out = tmp_path_factory.mktemp("mixture_shards")
    sets = {}
    for name, file, per_shard in (("caption", "image_caption_train.jsonl", 8), ("sft", "image_sft_train.jsonl", 36)):
        written = write_shards(tiny_world / file, str(out / f"{name}-%06d.tar"), maxcount=per_shard)
        assert len(written) == 8
        sets[name] = str(out / f"{name}-{{000000..000007}}.tar")
    return sets


def mixture(tiny_world, processors, shard_sets, **kw) -> MixtureDataModule:
    """Two streamed children and a map-style one (64 interleaved image+IMU records), 24 rows per epoch."""
    datasets = {
        "caption": WebDataModule(train_shards=shard_sets["caption"], samples_per_epoch=64, shuffle_buffer=8),
        "sft": WebDataModule(train_shards=shard_sets["sft"], samples_per_epoch=64, shuffle_buffer=8, seed=5),
        "mix": ConversationDataModule(train_file=str(tiny_world / "interleaved_train.jsonl")),
    }
    kw = {"samples_per_epoch": 24, "batch_size": 4, **kw}
    module = MixtureDataModule(datasets, **kw)
    tok = ConversationDataModule(tokenizer=str(tiny_world / "models" / "tiny-lm")).tokenizer
    module.bind(tok, processors, {"image": "<image>", "imu": "<imu>"})
    return module


def rows(loader) -> list[str]:
    return [i for batch in loader for i in batch["ids"]]


def shares(picks: list[int], n: int) -> list[float]:
    counts = Counter(picks)
    return [counts[i] / len(picks) for i in range(n)]


def test_picks_follow_weights_balance_and_curriculum():
    mix = StreamedMixture([None] * 3, [2.0, 1.0, 1.0], [0, 0, 1], samples_per_epoch=8000, seed=0)
    assert shares(mix.picks(0), 3) == pytest.approx([2 / 3, 1 / 3, 0], abs=0.02)  # the third starts at epoch 1
    assert shares(mix.picks(1), 3) == pytest.approx([0.5, 0.25, 0.25], abs=0.02)
    balanced = StreamedMixture([None] * 3, [1.0, 1.0, 1.0], [0, 0, 0], samples_per_epoch=8000)
    assert shares(balanced.picks(0), 3) == pytest.approx([1 / 3] * 3, abs=0.02)
    assert mix.picks(1) == StreamedMixture([None] * 3, [2.0, 1.0, 1.0], [0, 0, 1], 8000, seed=0).picks(1)
    assert mix.picks(1) != mix.picks(2)
    assert mix.picks(1) != StreamedMixture([None] * 3, [2.0, 1.0, 1.0], [0, 0, 1], 8000, seed=1).picks(1)
    other_replica = StreamedMixture([None] * 3, [2.0, 1.0, 1.0], [0, 0, 1], 8000, seed=0, replicas=2, rank=1)
    assert len(other_replica.picks(1)) == 4000 and other_replica.picks(1) != mix.picks(1)[:4000]


def test_rows_follow_the_picks_and_repeat_exactly_per_seed(tiny_world, processors, shard_sets):
    data = mixture(tiny_world, processors, shard_sets, weights={"caption": 2, "sft": 1, "mix": 1})
    loader = data.train_dataloader()
    assert isinstance(loader, StatefulDataLoader) and isinstance(loader.dataset, StreamedMixture)
    first = rows(loader)
    names = list(data.datasets)
    assert [source_of(i) for i in first] == [names[p] for p in loader.dataset.picks(0)]
    assert len(first) == 24 and len(set(source_of(i) for i in first)) == 3
    mix_rows = [i for i in first if source_of(i) == "mix"]
    assert len(mix_rows) == len(set(mix_rows))  # a map-style child: every record once before any repeats
    again = mixture(tiny_world, processors, shard_sets, weights={"caption": 2, "sft": 1, "mix": 1})
    assert rows(again.train_dataloader()) == first
    assert rows(loader) != first  # the next epoch draws afresh
    other = mixture(tiny_world, processors, shard_sets, weights={"caption": 2, "sft": 1, "mix": 1}, seed=1)
    assert rows(other.train_dataloader()) != first


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_mid_epoch_continues_exactly(tiny_world, processors, shard_sets, workers):
    full = rows(mixture(tiny_world, processors, shard_sets, num_workers=workers).train_dataloader())
    loader = mixture(tiny_world, processors, shard_sets, num_workers=workers).train_dataloader()
    it = iter(loader)
    head = [i for _ in range(2) for i in next(it)["ids"]]
    state = loader.state_dict()
    del it, loader
    resumed = mixture(tiny_world, processors, shard_sets, num_workers=workers).train_dataloader()
    resumed.load_state_dict(state)
    assert head + rows(resumed) == full


def test_resume_in_a_later_epoch_keeps_its_curriculum_and_order(tiny_world, processors, shard_sets):
    reference = mixture(tiny_world, processors, shard_sets, curriculum={"sft": 1}).train_dataloader()
    epoch0, epoch1 = rows(reference), rows(reference)
    assert "sft" not in {source_of(i) for i in epoch0} and "sft" in {source_of(i) for i in epoch1}
    loader = mixture(tiny_world, processors, shard_sets, curriculum={"sft": 1}).train_dataloader()
    assert rows(loader) == epoch0
    it = iter(loader)
    head = [i for _ in range(3) for i in next(it)["ids"]]
    state = loader.state_dict()
    resumed = mixture(tiny_world, processors, shard_sets, curriculum={"sft": 1}).train_dataloader()
    resumed.load_state_dict(state)
    assert head + rows(resumed) == epoch1


def fake_trainer(world_size: int, global_rank: int, replicas: int, replica: int, epoch: int = 0) -> SimpleNamespace:
    """What the data modules read of a trainer: the strategy's data-parallel split and the epoch about to run."""
    return SimpleNamespace(
        world_size=world_size,
        global_rank=global_rank,
        strategy=SimpleNamespace(distributed_sampler_kwargs={"num_replicas": replicas, "rank": replica}),
        fit_loop=SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch))),
    )


def test_tensor_parallel_ranks_read_the_same_rows_and_replicas_disjoint_ones(tiny_world, processors, shard_sets):
    # 4 processes as 2 data-parallel replicas x 2 tensor-parallel ranks (fsdp_tp): processes 0, 1 are replica 0
    seen = {}
    for process, replica in ((0, 0), (1, 0), (2, 1)):
        data = mixture(tiny_world, processors, shard_sets, samples_per_epoch=16)
        data.trainer = fake_trainer(4, process, 2, replica)
        loader = data.train_dataloader()
        assert len(loader.dataset) == 8  # the epoch's rows are split over the 2 replicas, not the 4 processes
        seen[process] = rows(loader)
    assert seen[0] == seen[1] and len(seen[0]) == 8
    assert not set(seen[0]) & set(seen[2])


def test_a_streamed_mixture_starts_at_the_trainers_epoch(tiny_world, processors, shard_sets):
    # a run resumed at an epoch boundary rebuilds its loader there: the curriculum and the order are that epoch's
    reference = mixture(tiny_world, processors, shard_sets, curriculum={"sft": 1}).train_dataloader()
    rows(reference)
    data = mixture(tiny_world, processors, shard_sets, curriculum={"sft": 1})
    data.trainer = fake_trainer(1, 0, 1, 0, epoch=1)
    assert rows(data.train_dataloader()) == rows(reference)


def test_streamed_mixture_refuses_token_budgets(tiny_world, processors, shard_sets):
    with pytest.raises(ValueError, match="max_tokens.*WebDataModule"):
        mixture(tiny_world, processors, shard_sets, max_tokens=256).train_dataloader()
