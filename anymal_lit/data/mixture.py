"""Per-modality data modules and a mixture that samples several datasets with weights (balanced by default).

UnIVAL (Shukor et al., 2023) found that balancing tasks within a batch beats sampling in proportion to dataset
size, so :class:`MixtureDataModule` gives every dataset the same share unless told otherwise. Each batch draws
its rows from the datasets independently, so batches mix modalities (and rows without media). Datasets streamed
from WebDataset shards (:class:`~anymal_lit.data.webdataset.WebDataModule`) mix the same way
(:mod:`anymal_lit.data.streamed_mixture`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import ConcatDataset, DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from anymal_lit.data.datamodule import DEFAULT_BATCH_SIZE, ConversationDataModule
from anymal_lit.data.streamed_mixture import IndexedSource, ShardSource, StreamedMixture
from anymal_lit.data.webdataset import WebDataModule, data_parallel_replica
from anymal_lit.encoders.base import MediaProcessor, ModalityEncoder

log = logging.getLogger(__name__)


class AudioTextDataModule(ConversationDataModule):
    """Conversations about sounds (AudioCaps-style captions, audio QA). Arguments as :class:`ConversationDataModule`."""

    modalities = ("audio",)


class VideoTextDataModule(ConversationDataModule):
    """Conversations about videos (video files or frame folders). Arguments as :class:`ConversationDataModule`."""

    modalities = ("video",)


class IMUTextDataModule(ConversationDataModule):
    """Conversations about IMU motion traces (CSV/NPY). Arguments as :class:`ConversationDataModule`."""

    modalities = ("imu",)


class MixtureSampler(Sampler[int]):
    """Draws ``num_samples`` indices into a ``ConcatDataset``: a dataset by weight, then its next unused example.

    Within a dataset, examples follow a fresh permutation each pass (every example before any repeats). Only the
    datasets active at the current epoch (``starts``) are drawn; their weights are renormalised. The order depends
    only on ``seed`` and the epoch (Lightning calls :meth:`set_epoch`), so runs repeat exactly.
    """

    def __init__(
        self, sizes: list[int], weights: list[float], starts: list[int], num_samples: int, seed: int = 0
    ) -> None:
        self.sizes, self.weights, self.starts = sizes, weights, starts
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def active(self) -> list[int]:
        return [i for i, start in enumerate(self.starts) if start <= self.epoch]

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        active = self.active()
        p = np.array([self.weights[i] for i in active], dtype=float)
        choices = rng.choice(len(active), size=self.num_samples, p=p / p.sum())
        orders = {i: rng.permutation(self.sizes[i]) for i in active}
        used = dict.fromkeys(active, 0)
        for c in choices:
            d = active[int(c)]
            if used[d] == self.sizes[d]:
                orders[d], used[d] = rng.permutation(self.sizes[d]), 0
            yield int(self.offsets[d] + orders[d][used[d]])
            used[d] += 1


class MixtureDataModule(ConversationDataModule):
    """Several data modules (any modalities) sampled together for training; validation runs over all of them.

    A dataset may be a :class:`~anymal_lit.data.webdataset.WebDataModule` (tar shards, local or in object storage):
    the mixture then streams (:class:`~anymal_lit.data.streamed_mixture.StreamedMixture`) with the same weights and
    curriculum, its map-style datasets included; deterministic for a seed, each data-parallel replica reading its
    own shards, and resumed mid-epoch exactly. For example::

        data:
          class_path: anymal_lit.data.MixtureDataModule
          init_args:
            samples_per_epoch: 100000
            datasets:
              image: {class_path: anymal_lit.data.WebDataModule,
                      init_args: {train_shards: "s3/laion-{000000..000999}.tar", samples_per_epoch: 80000}}
              audio: {class_path: anymal_lit.data.AudioTextDataModule, init_args: {train_file: audiocaps.jsonl}}

    Args:
        datasets: Name -> data module (e.g. ``image: ImageTextDataModule``, ``audio: AudioTextDataModule``,
            ``web: WebDataModule``). Each keeps its own files, shards and record settings; batching comes from this
            module (a WebDataModule's ``samples_per_epoch`` only sizes the default epoch).
        weights: Name -> sampling weight. Default: balanced (every dataset equally likely per row, whatever its
            size). Use the dataset sizes for size-proportional sampling.
        curriculum: Name -> first epoch the dataset is sampled (default 0 for all): adds modalities over training.
        samples_per_epoch: Rows per epoch (default: the total size of the datasets, a WebDataModule counting its
            ``samples_per_epoch``).
        seed: Seed of the sampling order.
        batch_size: Samples per batch (as :class:`ConversationDataModule`; files and record settings belong to each
            dataset).
        eval_batch_size: Samples per batch in val/test/predict and generation (default: ``batch_size``).
        num_workers: Data-loader worker processes.
        max_tokens: As :class:`ConversationDataModule`: token-budget batches over the mixture's order (lengths from
            each dataset's ``media_tokens``).
        feature_cache: Frozen-feature cache folder (``anymal-lit cache-features``) for every dataset that names none
            of its own, and for the evaluation callbacks that read through the mixture.
        require_cached_features: With ``feature_cache``, a file missing from the cache is an error (for the datasets
            that take the mixture's cache).
    """

    def __init__(
        self,
        datasets: dict[str, ConversationDataModule],
        weights: dict[str, float] | None = None,
        curriculum: dict[str, int] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_tokens: int | None = None,
        feature_cache: str | None = None,
        require_cached_features: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            max_tokens=max_tokens,
            feature_cache=feature_cache,
            require_cached_features=require_cached_features,
        )
        if not datasets:
            raise ValueError("MixtureDataModule needs at least one dataset")
        for label, mapping in (("weights", weights), ("curriculum", curriculum)):
            unknown = sorted(set(mapping or {}) - set(datasets))
            if unknown:
                raise ValueError(f"{label} name unknown datasets {unknown}; datasets are {sorted(datasets)}")
        if weights and any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0, got {weights}")
        self.datasets = datasets
        for module in datasets.values():
            if feature_cache and not module.feature_cache:
                module.feature_cache, module.require_cached_features = feature_cache, require_cached_features
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in datasets}
        self.curriculum = {name: int((curriculum or {}).get(name, 0)) for name in datasets}
        if not any(w > 0 and self.curriculum[n] == 0 for n, w in self.weights.items()):
            raise ValueError("no dataset has a positive weight from epoch 0")
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed

    def bind(
        self,
        tokenizer: PreTrainedTokenizerBase,
        processors: dict[str, MediaProcessor],
        placeholders: dict[str, str],
        encoders: dict[str, ModalityEncoder] | None = None,
    ) -> None:
        super().bind(tokenizer, processors, placeholders, encoders)
        for module in self.datasets.values():
            module.bind(tokenizer, processors, placeholders, encoders)

    def _concat(self, split: str, names: list[str]) -> ConcatDataset:
        parts = []
        for name in names:
            path = self.datasets[name].files[split]
            if path is None:
                raise ValueError(f"dataset {name!r} has no {split}_file")
            parts.append(self.datasets[name].dataset(path))
        return ConcatDataset(parts)

    def train_dataloader(self) -> DataLoader:
        if any(isinstance(module, WebDataModule) for module in self.datasets.values()):
            return self.streamed_dataloader()
        names = list(self.datasets)
        data = self._concat("train", names)
        sizes = [len(d) for d in data.datasets]
        total = self.samples_per_epoch or sum(sizes)
        sampler = MixtureSampler(
            sizes, [self.weights[n] for n in names], [self.curriculum[n] for n in names], total, self.seed
        )
        if self.max_tokens is not None:  # token-budget batches over the mixture's order (sharded by batch)
            estimates = [self.datasets[name].length_estimates(part) for name, part in zip(names, data.datasets)]
            lengths = [n for part in estimates for n in part]
            return self.token_budget_loader(data, lengths, order=sampler)
        shards = self.shard_count()
        if shards is not None:  # each rank takes every N-th row of the mixture's order; set_epoch reaches the mixture
            sampler = DistributedSamplerWrapper(sampler, num_replicas=shards[0], rank=shards[1], shuffle=False)
        # Lightning sets the epoch only after a resumed run rebuilt its iterator: set it first
        sampler.set_epoch(self.current_epoch())
        shares = {n: round(self.weights[n] / sum(self.weights.values()), 3) for n in names}
        log.info("mixture of %s: sizes %s, sampling shares %s, %d rows per epoch", names, sizes, shares, total)
        return StatefulDataLoader(  # resumable mid-epoch (see ConversationDataModule.dataloader)
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collator(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def streamed(self) -> StreamedMixture:
        """The training stream of this process's data-parallel replica (when a dataset is a WebDataModule)."""
        if self.max_tokens is not None:
            raise ValueError("max_tokens needs every row's length up front; a mixture with a WebDataModule streams")
        names, sources, sizes = list(self.datasets), [], []
        for i, name in enumerate(names):
            module = self.datasets[name]
            if isinstance(module, WebDataModule):
                sources.append(ShardSource(module.stream()))
                sizes.append(module.samples_per_epoch)
            elif module.files["train"] is None:
                raise ValueError(f"dataset {name!r} has no train_file")
            else:
                dataset = module.dataset(module.files["train"])
                sources.append(IndexedSource(dataset, self.seed, key=i))
                sizes.append(len(dataset))
        total = self.samples_per_epoch or sum(sizes)
        replicas, rank = data_parallel_replica(self.trainer)
        weights, starts = [self.weights[n] for n in names], [self.curriculum[n] for n in names]
        shares = {n: round(self.weights[n] / sum(self.weights.values()), 3) for n in names}
        log.info("streamed mixture of %s: sampling shares %s, %d rows per epoch", names, shares, total)
        return StreamedMixture(sources, weights, starts, total, self.seed, replicas, rank, self.current_epoch(), names)

    def streamed_dataloader(self) -> StatefulDataLoader:
        return StatefulDataLoader(  # the stream's (epoch, rows served) per worker go into checkpoints
            self.streamed(),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collator(),
        )

    def val_dataloader(self) -> DataLoader | list:
        names = [n for n, m in self.datasets.items() if m.files["val"]]
        if not names:
            return []
        return DataLoader(
            self._concat("val", names),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collator(),
        )
