"""Token-budget batching: batches sized by tokens, sharded in step, deterministic, exactly resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit.data import ImageTextDataModule, IMUTextDataModule, MixtureDataModule
from anymal_lit.data.token_budget import BatchedDataset, TokenBudgetBatchSampler

LENGTHS = np.random.default_rng(0).choice([20, 30, 45, 300, 600], size=500, p=[0.3, 0.3, 0.2, 0.15, 0.05]).tolist()


def padded(batch: list[int]) -> int:
    return len(batch) * max(LENGTHS[i] for i in batch)


def test_batches_keep_the_budget_and_hold_every_row_once() -> None:
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=1200, num_buckets=4)
    batches = list(sampler)
    assert all(padded(b) <= 1200 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    sizes = [len(b) for b in batches]
    assert max(sizes) >= 20 and min(sizes) <= 2  # short rows share a batch, long rows take it alone
    fixed = [list(range(i, i + 8)) for i in range(0, 496, 8)]  # 8 random rows (the lengths are shuffled)
    assert sampler.stats()["padding_fraction"] < 0.5 * (1 - sum(LENGTHS[:496]) / sum(map(padded, fixed)))


def test_a_row_over_the_budget_is_a_batch_of_its_own() -> None:
    sampler = TokenBudgetBatchSampler([10, 10, 500, 10], max_tokens=100, num_buckets=2)
    assert sampler.oversized == 1
    assert [2] in list(sampler)


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = TokenBudgetBatchSampler(LENGTHS, 1200, seed=1), TokenBudgetBatchSampler(LENGTHS, 1200, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_get_the_same_number_of_batches_covering_every_row(n: int) -> None:
    ranks = [TokenBudgetBatchSampler(LENGTHS, 1200, num_replicas=n, rank=r, seed=5) for r in range(n)]
    shares = [list(r) for r in ranks]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(ranks[0])
    assert {i for s in shares for b in s for i in b} == set(range(len(LENGTHS)))


def test_stateful_loader_resumes_mid_epoch_exactly() -> None:
    def loader() -> StatefulDataLoader:
        sampler = TokenBudgetBatchSampler(LENGTHS, 1200, num_replicas=2, rank=1, seed=3)
        sampler.set_epoch(2)
        return StatefulDataLoader(BatchedDataset(list(range(len(LENGTHS)))), batch_size=None, sampler=sampler,
                                  collate_fn=list)  # fmt: skip

    whole = list(loader())
    first = loader()
    it = iter(first)
    seen = [next(it) for _ in range(5)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + list(resumed) == whole


def fake_processors() -> dict:
    return {"image": lambda path: torch.zeros(1, 3, 4, 4), "imu": lambda path: torch.zeros(1, 6, 8)}


def test_data_modules_batch_by_tokens(tiny_world) -> None:
    tokenizer = str(tiny_world / "models" / "tiny-lm")
    single = ImageTextDataModule(train_file=str(tiny_world / "image_sft_train.jsonl"), tokenizer=tokenizer,
                                 max_tokens=400, media_tokens={"image": 16})  # fmt: skip
    single.bind(single.tokenizer, fake_processors(), {"image": "<image>", "imu": "<imu>"})
    batches = list(single.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == len(single.dataset(single.files["train"]))
    assert len({len(b["ids"]) for b in batches}) > 1  # sized by tokens, not a fixed count

    image, imu = str(tiny_world / "image_caption_train.jsonl"), str(tiny_world / "imu_caption_train.jsonl")
    children = {
        "image": ImageTextDataModule(train_file=image, media_tokens={"image": 16}),
        "imu": IMUTextDataModule(train_file=imu, media_tokens={"imu": 8}),
    }
    mixture = MixtureDataModule(children, max_tokens=300, samples_per_epoch=48)
    mixture.bind(single.tokenizer, fake_processors(), {"image": "<image>", "imu": "<imu>"})
    loader = mixture.train_dataloader()
    assert isinstance(loader.sampler, TokenBudgetBatchSampler)
    rows = [i for b in loader.sampler for i in b]
    assert len(rows) == 48 and sorted(rows) == sorted(loader.sampler.order)  # the mixture's draws, batched
    assert {m for b in loader for m in b["media"]} == {"image", "imu"}
