"""A mixture that streams: WebDataset children (and map-style ones) drawn row by row by weight, resumable exactly.

:class:`~anymal_lit.data.mixture.MixtureDataModule` builds a :class:`StreamedMixture` when any of its datasets is a
:class:`~anymal_lit.data.webdataset.WebDataModule`. The policy is the map-style mixture's: each row picks a dataset
by weight among those whose curriculum epoch has come (balanced by default), then takes that dataset's next sample.

Everything a process reads is a function of (seed, epoch, data-parallel replica, loader worker):

* the dataset picks, from a generator seeded by those four;
* a streamed child's samples, from its :class:`~anymal_lit.data.webdataset.ShardStream` for that epoch, replica and
  worker (each replica resamples its own part of the shard list: replicas read disjoint shards);
* a map-style child's samples, from one permutation per pass over it shared by every process, of which each
  (replica, worker) takes every ``replicas x workers``-th index (disjoint within a pass).

The loader's state is the epoch and the number of rows served, saved in checkpoints by the ``StatefulDataLoader``
(per worker). A restored worker regenerates the picks, counts how many rows each child gave and fast-forwards each
child's stream by that many *raw* samples (tar members read, no media decoded; map-style indices only), so the
resumed run continues with exactly the rows the uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset

from anymal_lit.data.collate import Sample
from anymal_lit.data.webdataset import ReplicaStream, worker_info


class Source(Protocol):
    """One child of a streamed mixture: an endless raw stream per (epoch, replica, worker) and its decoder."""

    def mixture_stream(self, epoch: int, replicas: int, rank: int) -> Iterator[Any]: ...

    def mixture_decode(self, raw: Any, scratch: Path, index: int) -> Sample | None: ...


class IndexedSource:
    """A map-style dataset as a mixture source: passes of fresh permutations, each split over replicas x workers.

    Args:
        dataset: The samples (``dataset[i]``; ``None`` for a skipped bad record).
        seed: Seed of the permutations (the same on every process, so the splits are disjoint).
        key: Tells this source's permutations from those of the mixture's other sources.
    """

    def __init__(self, dataset: Dataset, seed: int, key: int = 0) -> None:
        self.dataset, self.seed, self.key = dataset, seed, key

    def mixture_stream(self, epoch: int, replicas: int, rank: int) -> Iterator[int]:
        worker, workers = worker_info()
        slots, slot = replicas * workers, rank * workers + worker
        size = len(self.dataset)
        for cycle in itertools.count():
            if size >= slots:
                order = np.random.default_rng([self.seed, self.key, epoch, cycle]).permutation(size)
                yield from order[slot::slots].tolist()
            else:  # fewer rows than readers: each reads them all, in its own order
                yield from np.random.default_rng([self.seed, self.key, epoch, cycle, slot]).permutation(size).tolist()

    def mixture_decode(self, raw: int, scratch: Path, index: int) -> Sample | None:
        return self.dataset[raw]


class ShardSource:
    """A :class:`~anymal_lit.data.webdataset.ShardStream` as a mixture source (its raw stream of pass ``epoch + 1``)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def mixture_stream(self, epoch: int, replicas: int, rank: int) -> Iterator[dict[str, Any]]:
        self.stream.replicas, self.stream.rank = replicas, rank  # the mixture's replica (the same trainer's)
        return self.stream.raw_samples(passes=epoch + 1)

    def mixture_decode(self, raw: dict[str, Any], scratch: Path, index: int) -> Sample | None:
        return self.stream.decode(raw, scratch, index)


class StreamedMixture(ReplicaStream):
    """Rows drawn from several sources by weight, ``samples_per_epoch`` per epoch over all replicas and workers;
    see the module docstring.

    Args:
        sources: The children (:class:`ShardSource`, :class:`IndexedSource`).
        weights: Sampling weight per source.
        starts: First epoch each source is drawn (curriculum); the active sources' weights are renormalised.
        samples_per_epoch: Rows per epoch over all data-parallel replicas and loader workers together.
        seed: Seed of the picks.
        replicas: Data-parallel replicas (a tensor-parallel group is one replica and reads the same rows).
        rank: This process's replica.
        first_epoch: The epoch the first pass trains (the restored one when a run resumes).
        names: Source names, for messages.
    """

    def __init__(
        self,
        sources: list[Source],
        weights: list[float],
        starts: list[int],
        samples_per_epoch: int,
        seed: int = 0,
        replicas: int = 1,
        rank: int = 0,
        first_epoch: int = 0,
        names: list[str] | None = None,
    ) -> None:
        self.sources, self.weights, self.starts = sources, weights, starts
        self.samples_per_epoch, self.seed, self.replicas, self.rank = samples_per_epoch, seed, replicas, rank
        self.names = names or [str(i) for i in range(len(sources))]
        self.epoch, self.served, self._resume = first_epoch - 1, 0, False

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.served, self._resume = state["epoch"], state["served"], True

    def picks(self, epoch: int) -> list[int]:
        """The source of each row this replica's worker serves in ``epoch``."""
        active = [i for i, start in enumerate(self.starts) if start <= epoch and self.weights[i] > 0]
        p = np.array([self.weights[i] for i in active], dtype=float)
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker_info()[0]])
        return [active[int(c)] for c in rng.choice(len(active), size=self.per_worker(), p=p / p.sum())]

    def __iter__(self) -> Iterator[Sample | None]:
        if not self._resume:
            self.epoch, self.served = self.epoch + 1, 0
        self._resume = False
        picks = self.picks(self.epoch)
        streams: dict[int, Iterator[Any]] = {}
        for i in sorted(set(picks)):
            streams[i] = self.sources[i].mixture_stream(self.epoch, self.replicas, self.rank)
            used = picks[: self.served].count(i)
            deque(itertools.islice(streams[i], used), maxlen=0)  # replay to the restored position, nothing decoded
        with tempfile.TemporaryDirectory(prefix="anymal-mix-") as scratch:
            for i in picks[self.served :]:
                raw = next(streams[i])
                self.served += 1
                yield self.sources[i].mixture_decode(raw, Path(scratch), self.served - 1)
