"""Length-aware batching: batches of similar-length samples, sharded across processes.

Padding wastes the tokens between a row and the longest row of its batch; packing (``AnyMALModel(packing_length)``)
removes it, and packs come out more even when the rows of a batch are alike. Like LLaVA's and Hugging Face's
length-grouped samplers, :class:`LengthGroupedSampler` shuffles, sorts each *mega-batch* (``mega_batches`` global
batches) by length and cuts it into batches, then shuffles the batch order, so the data stays random across
batches while rows within one batch have similar lengths.

It is a ``DistributedSampler``: on N processes every global batch of ``batch_size x N`` similar rows is dealt
round-robin, so each rank's batch is alike too, and Lightning uses it as is (it would otherwise wrap it and shuffle
the positions, undoing the grouping) and calls :meth:`set_epoch`. The order depends only on ``seed`` and the
epoch, so a resumed run continues it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Indices into a dataset whose items have ``lengths``, grouped so each batch holds similar lengths.

    Args:
        lengths: Length (tokens, or any estimate) of every item.
        batch_size: Items per batch on each process.
        num_replicas: Processes sharing the data (1: no sharding).
        rank: This process's index.
        seed: Seed of the shuffles (with the epoch).
        mega_batches: Global batches sorted together; larger groups lengths more tightly but randomises less.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        mega_batches: int = 50,
    ) -> None:
        if batch_size < 1 or mega_batches < 1:
            raise ValueError(f"batch_size and mega_batches must be >= 1, got {batch_size}, {mega_batches}")
        super().__init__(list(lengths), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = np.asarray(lengths)
        self.batch_size, self.mega_batches = batch_size, mega_batches

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        order = np.concatenate([order, order[: self.total_size - len(order)]])  # every rank gets num_samples
        step = self.batch_size * self.num_replicas  # one global batch
        mega = step * self.mega_batches
        groups = []
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            groups += [chunk[i : i + step] for i in range(0, len(chunk), step)]
        full = [g for g in groups if len(g) == step]
        # the one short batch (if any) goes last, so every process's loader batches stay aligned with the groups
        batches = [full[i] for i in rng.permutation(len(full))] + [g for g in groups if len(g) < step]
        return iter(int(i) for batch in batches for i in batch[self.rank :: self.num_replicas])
