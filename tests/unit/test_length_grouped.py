"""Length-aware batching: similar lengths per batch, every item once per epoch, sharded evenly, repeatable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anymal_lit.data import ImageTextDataModule, LengthGroupedSampler
from tests.conftest import SHIPPED_LM


def batches(sampler: LengthGroupedSampler, batch_size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding(lengths: np.ndarray, batch_list: list[list[int]]) -> float:
    """Fraction of a padded batch's tokens that are padding."""
    padded = sum(len(b) * lengths[b].max() for b in batch_list)
    return 1 - sum(lengths[b].sum() for b in batch_list) / padded


def test_batches_hold_similar_lengths_and_every_item_once():
    lengths = np.random.default_rng(0).integers(10, 500, size=1000)
    sampler = LengthGroupedSampler(lengths, batch_size=8, mega_batches=20)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    grouped = padding(lengths, batches(sampler, 8))
    shuffled = padding(lengths, [list(b) for b in np.random.default_rng(1).permutation(1000).reshape(-1, 8)])
    assert grouped < 0.1 < 0.3 < shuffled  # ~5 % vs ~40 % padding
    # the batch order is random: not sorted by length across the epoch
    maxima = [lengths[b].max() for b in batches(sampler, 8)]
    assert maxima != sorted(maxima, reverse=True)


def test_order_depends_on_seed_and_epoch_only():
    lengths = list(range(100))
    a, b = LengthGroupedSampler(lengths, 4), LengthGroupedSampler(lengths, 4)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(LengthGroupedSampler(lengths, 4, seed=1)) != list(LengthGroupedSampler(lengths, 4))


@pytest.mark.parametrize("n", [96, 101])
def test_ranks_get_disjoint_equal_shares_of_alike_batches(n):
    lengths = np.random.default_rng(2).integers(10, 500, size=n)
    ranks = [LengthGroupedSampler(lengths, 4, num_replicas=2, rank=r, mega_batches=4) for r in (0, 1)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == -(-n // 2)
    assert set(shares[0]) | set(shares[1]) == set(range(n))
    if n % 8 == 0:
        assert not set(shares[0]) & set(shares[1])
    # step k of rank 0 and of rank 1 come from the same sorted global batch: their lengths overlap closely
    for b0, b1 in zip(batches(ranks[0], 4), batches(ranks[1], 4)):
        assert abs(int(lengths[b0].max()) - int(lengths[b1].max())) < 200


def test_data_module_groups_training_batches(image_data):
    def module(**kw) -> ImageTextDataModule:
        data = ImageTextDataModule(
            train_file=str(image_data / "image_sft_train.jsonl"),
            batch_size=8,
            tokenizer=str(SHIPPED_LM),
            **kw,
        )
        data.bind(data.tokenizer, {"image": lambda path: torch.zeros(1, 3, 4, 4)}, {"image": "<image>"})
        return data

    def text_padding(data: ImageTextDataModule) -> float:
        masks = [b["attention_mask"] for b in data.train_dataloader()]
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    grouped = module(group_by_length=True, media_tokens={"image": 16})
    assert isinstance(grouped.train_dataloader().sampler, LengthGroupedSampler)
    assert text_padding(grouped) < 0.5 * text_padding(module())
