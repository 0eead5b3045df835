"""Token-budget batching: batches sized by tokens after media expansion, not by a number of samples.

A fixed batch size must be chosen for the longest rows a dataset may put together, so batches of short captions run
far below the memory they could use, and a mixture of short captions and long audio or video token runs either
wastes memory or runs out of it. Like Lhotse's ``DynamicBucketingSampler`` (used by EMMeTT for 2-D bucketing), this
sampler sorts the incoming rows into length buckets and closes a bucket's batch when one more row would take the
batch's padded size (rows x its longest row) past ``max_tokens``. Batches of short rows hold many rows, batches of
long rows few, and every batch pads at most to the longest row of its own bucket.

Rows arrive in a seeded random order (or in the order of another sampler, e.g. the weighted
:class:`~anymal_lit.data.mixture.MixtureSampler`), and batches leave in the order they fill up, so a mixture's shares
and curriculum hold over time. On N processes every rank computes the same list of batches and takes every N-th;
the list is padded with its first batches so every rank runs the same number of steps (collectives stay in step).
The batches depend only on ``seed`` and the epoch, so ``StatefulDataLoader``'s mid-epoch resume (which replays the
sampler and skips the batches already yielded) continues exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler, Sampler

log = logging.getLogger(__name__)


def bucket_boundaries(lengths: Sequence[int], num_buckets: int) -> list[int]:
    """Upper length bounds of ``num_buckets`` buckets holding about equally many rows (quantiles of ``lengths``)."""
    qs = np.quantile(np.asarray(lengths), np.linspace(0, 1, num_buckets + 1)[1:-1])
    return sorted({int(q) for q in qs})


class TokenBudgetBatchSampler(DistributedSampler):
    """Batches of indices whose padded size (rows x longest row, in tokens) stays within ``max_tokens``.

    It yields whole batches (lists of indices) as a loader's ``sampler`` with ``batch_size=None`` over a
    :class:`BatchedDataset`, as Lhotse's samplers do; being a ``DistributedSampler``, Lightning uses it as it is
    (it already shards) and calls :meth:`set_epoch`.

    Args:
        lengths: Tokens of every row after media expansion (an estimate: text tokens plus tokens per media item).
        max_tokens: Budget of one batch on one process, padding included. A row longer than the budget is a batch
            of its own (counted in ``oversized``).
        num_buckets: Length buckets (quantiles of ``lengths``); more buckets pad less but fill batches more slowly.
        num_replicas: Processes sharing the data (1: no sharding).
        rank: This process's index.
        seed: Seed of the order (with the epoch).
        order: Optional index sampler giving each epoch's rows in order (e.g. a mixture); default: a permutation of
            all rows.
        max_rows: Most rows per batch (None: only the budget limits).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        num_buckets: int = 8,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        order: Sampler[int] | None = None,
        max_rows: int | None = None,
    ) -> None:
        if max_tokens < 1 or num_buckets < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need max_tokens >= 1, num_buckets >= 1, 0 <= rank < num_replicas; got {max_tokens}, {num_buckets}, "
                f"rank {rank} of {num_replicas}"
            )
        if len(lengths) == 0:
            raise ValueError("TokenBudgetBatchSampler needs at least one row")
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.max_rows = max_tokens, max_rows
        self.boundaries = bucket_boundaries(self.lengths, num_buckets)
        self.num_replicas, self.rank, self.seed, self.order = num_replicas, rank, seed, order
        self.epoch = 0
        self.oversized = int((self.lengths > max_tokens).sum())
        if self.oversized:
            log.warning("%d rows are longer than max_tokens=%d: each is a batch of its own", self.oversized, max_tokens)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.order is not None and hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def _rows(self) -> Iterator[int]:
        if self.order is not None:
            return iter(self.order)
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths)).tolist())

    def batches(self) -> list[list[int]]:
        """Every batch of the epoch, all ranks' (cached per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        open_batches: dict[int, list[int]] = {}
        longest: dict[int, int] = {}
        out: list[list[int]] = []
        for index in self._rows():
            n = int(self.lengths[index])
            bucket = int(np.searchsorted(self.boundaries, n, side="left"))
            batch = open_batches.setdefault(bucket, [])
            top = max(longest.get(bucket, 0), n)
            full = self.max_rows is not None and len(batch) >= self.max_rows
            if batch and ((len(batch) + 1) * top > self.max_tokens or full):
                out.append(batch)
                batch, top = [], n
                open_batches[bucket] = batch
            batch.append(int(index))
            longest[bucket] = top
        out += [b for _, b in sorted(open_batches.items()) if b]  # the partial batches, shortest bucket first
        self._cache = (self.epoch, out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        per_rank = len(self)
        padded = [batches[i % len(batches)] for i in range(per_rank * self.num_replicas)]
        return iter(padded[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return -(-len(self.batches()) // self.num_replicas)

    def stats(self) -> dict[str, Any]:
        """Rows, batches and padding of this epoch's batches (all ranks) by the length estimates."""
        batches = self.batches()
        real = sum(int(self.lengths[b].sum()) for b in batches)
        padded = sum(len(b) * int(self.lengths[b].max()) for b in batches)
        return {"rows": sum(map(len, batches)), "batches": len(batches), "padding_fraction": 1 - real / padded}


class BatchedDataset(Dataset):
    """``dataset[list of indices]`` -> the list of samples (one batch for the collator)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> list[Any]:
        return [self.dataset[i] for i in indices]
