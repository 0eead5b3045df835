"""WebDataset tar shards: write them from JSONL records, stream them into training from any URL webdataset opens.

A shard is a plain tar file; each sample is a group of members sharing a key::

    000000042.json      {"id": "coco-391895", "messages": [...], "image": ["m0.png"], ...}
    000000042.m0.png    the bytes of the record's first media file (any modality, its own file format)

The JSON is the record in the kit's JSONL format (``anymal_lit.data.records``) whose media paths name members of
the same sample, so every loader, placeholder rule and error message of the JSONL path applies unchanged. URLs are
anything ``webdataset`` opens: local paths with brace ranges (``shards/train-{000000..000127}.tar``), ``http(s)://``
or ``pipe:aws s3 cp s3://bucket/train-000001.tar -`` -- a dataset larger than one disk streams from object storage.

Training streams shards *with resampling* (webdataset's ``ResampledShards``): each data-parallel replica takes its
part of the shard list (every replicas-th shard, so replicas read disjoint shards; the processes of a
tensor-parallel group are one replica and read the same samples), and every loader worker of it draws shards at
random with replacement from that part, seeded by (seed, pass, replica, worker), reads them sequentially and
shuffles samples in a buffer. Nothing has to be split evenly across replicas and no replica runs dry, and a restart
never depends on which shards were already read. The stream is deterministic, so the loader's state (pass and
samples read, saved in checkpoints by the ``StatefulDataLoader``) resumes it exactly: the restored worker replays
its stream to the same position, skipping the already-used samples before decoding any media.

A :class:`WebDataModule` can be one of the datasets of a :class:`~anymal_lit.data.mixture.MixtureDataModule`
(with others streamed or read from JSONL): :mod:`anymal_lit.data.streamed_mixture`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.collate import Sample, load_sample
from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.data.records import RecordError, parse_record, read_records
from anymal_lit.encoders.base import MediaProcessor
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

log = logging.getLogger(__name__)

KEY_DIGITS = 9


def write_shards(
    records_file: str | Path,
    pattern: str,
    maxcount: int = 1000,
    maxsize: float = 1e9,
    placeholders: dict[str, str] | None = None,
    media_root: str | None = None,
    skip_bad_records: bool = False,
) -> list[str]:
    """Pack a JSONL dataset and its media files into tar shards (``pattern`` with ``%06d``, e.g.
    ``shards/train-%06d.tar``), at most ``maxcount`` samples or ``maxsize`` bytes per shard. Records are validated
    as for training (missing media -> :class:`RecordError` naming the record, or skipped with ``skip_bad_records``).
    Frame folders cannot go into a tar sample: encode them as a video file first. Returns the shard paths written.
    """
    records = read_records(
        records_file, placeholders or DEFAULT_PLACEHOLDERS, media_root, skip_bad_records, require_response=False
    )
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0) as sink:
        for i, record in enumerate(records):
            sample: dict[str, Any] = {"__key__": f"{i:0{KEY_DIGITS}d}"}
            names: dict[str, list[str]] = {}
            for j, (modality, path) in enumerate(record.media):
                if Path(path).is_dir():
                    raise RecordError(f"{record.where()}: {path} is a folder; shards hold files (encode it as a video)")
                member = f"m{j}{Path(path).suffix.lower()}"
                sample[member] = Path(path).read_bytes()
                names.setdefault(modality, []).append(member)
            raw = {"id": record.id, "messages": record.messages, **record.extra, **names}
            sample["json"] = json.dumps(raw).encode("utf-8")
            sink.write(sample)
            if sink.fname not in written:
                written.append(sink.fname)
    log.info("wrote %d records from %s into %d shard(s)", len(records), records_file, len(written))
    return written


class ReplicaStream(IterableDataset):
    """An epoch of ``samples_per_epoch`` samples split over ``replicas`` data-parallel replicas and their loader
    workers (the shared sizes of :class:`ShardStream` and the streamed mixture)."""

    samples_per_epoch: int
    replicas: int

    def per_worker(self) -> int:
        return math.ceil(self.samples_per_epoch / (self.replicas * worker_info()[1]))

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.replicas)


class ShardStream(ReplicaStream):
    """Training samples streamed from resampled tar shards; see the module docstring.

    The stream of one (pass, data-parallel replica, loader worker) is a function of those and ``seed`` alone
    (:meth:`raw_samples`), so a mixture (:class:`~anymal_lit.data.streamed_mixture.StreamedMixture`) can draw from
    it, count how far it got and replay it to that point on resume.

    Args:
        urls: Shard URLs (brace notation or a list).
        load: ``(record, index) -> sample`` (tokenize + load media; raises :class:`RecordError` for a bad record).
        placeholders: Modality -> placeholder token (records are validated as JSONL lines are).
        samples_per_epoch: Samples per epoch over all data-parallel replicas and loader workers together.
        shuffle_buffer: Samples held in the shuffle buffer of each worker.
        seed: Seed of the shard draws and the buffer shuffle.
        skip_bad_records: Count and skip unreadable shards and bad samples instead of raising.
        replicas: Data-parallel replicas (the processes of one tensor-parallel group are one replica and read the
            same samples).
        rank: This process's replica.
        first_epoch: The epoch the first pass over the stream trains (the restored one when a run resumes).
    """

    def __init__(
        self,
        urls: str | list[str],
        load: Callable[[Any, int], Sample | None],
        placeholders: dict[str, str],
        samples_per_epoch: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        skip_bad_records: bool = False,
        replicas: int = 1,
        rank: int = 0,
        first_epoch: int = 0,
    ) -> None:
        self.urls, self.load, self.placeholders = urls, load, placeholders
        self.samples_per_epoch, self.shuffle_buffer, self.seed = samples_per_epoch, shuffle_buffer, seed
        self.skip_bad_records, self.replicas, self.rank = skip_bad_records, replicas, rank
        # passes begun: pass p trains epoch p - 1 (the shard draws are seeded by the pass)
        self.passes, self.served, self._resume = first_epoch, 0, False

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes, "served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes, self.served, self._resume = state["passes"], state["served"], True

    def raw_samples(self, passes: int | None = None) -> Iterator[dict[str, Any]]:
        """This replica's and worker's deterministic, endless stream of raw tar samples for pass ``passes``
        (default: the current one): shards drawn with replacement from the replica's part of the shard list."""
        worker = worker_info()[0]
        seed = wds.utils.make_seed(self.seed, self.passes if passes is None else passes, self.rank, worker)
        handler = wds.warn_and_continue if self.skip_bad_records else wds.reraise_exception
        urls = replica_shards(self.urls, self.replicas, self.rank)
        shards = wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True)
        samples = wds.tarfile_to_samples(handler=handler)(iter(shards))
        return wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=random.Random(seed))(samples)

    def __iter__(self) -> Iterator[Sample | None]:
        if not self._resume:
            self.passes, self.served = self.passes + 1, 0
        self._resume = False
        stream = itertools.islice(self.raw_samples(), self.served, self.per_worker())
        with tempfile.TemporaryDirectory(prefix="anymal-wds-") as scratch:
            for raw in stream:
                self.served += 1
                yield self.decode(raw, Path(scratch), self.served - 1)

    def decode(self, raw: dict[str, Any], scratch: Path, index: int = 0) -> Sample | None:
        """A raw tar sample -> a training sample; media members go through a scratch file to the usual loaders."""
        where = f"{raw.get('__url__', '?')}:{raw['__key__']}"
        files = [scratch / f"{raw['__key__']}.{name}" for name in raw if not name.startswith("__") and name != "json"]
        try:
            if "json" not in raw:
                raise RecordError(f"{where}: sample has no .json member")
            for path in files:
                path.write_bytes(raw[path.name.split(".", 1)[1]])
            try:
                record_json = json.loads(raw["json"])
                if isinstance(record_json, dict):
                    record_json = {
                        k: _members(v, raw["__key__"]) if k in self.placeholders else v for k, v in record_json.items()
                    }
                record = parse_record(record_json, where, scratch, self.placeholders)
            except json.JSONDecodeError as err:
                raise RecordError(f"{where}: invalid JSON ({err})") from None
            return self.load(record, index)
        except RecordError as err:
            message = str(err).replace(f"{scratch}/", f"{raw.get('__url__', '?')}/")
            if not self.skip_bad_records:
                raise RecordError(message) from None
            log.warning("skipping %s", message)
            return None
        finally:
            for path in files:
                path.unlink(missing_ok=True)


def worker_info() -> tuple[int, int]:
    """(this loader worker, workers): (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def replica_shards(urls: str | list[str], replicas: int, rank: int) -> list[str]:
    """Replica ``rank``'s part of the shard list: every ``replicas``-th shard, so replicas read disjoint shards.
    With fewer shards than replicas every replica draws from all of them (its own seed; records may repeat across
    replicas within an epoch): write smaller shards (``--maxcount``) to avoid that."""
    expanded = [u for part in ([urls] if isinstance(urls, str) else urls) for u in wds.shardlists.expand_urls(part)]
    if replicas > 1 and len(expanded) < replicas:
        log.warning(
            "%d shard(s) for %d data-parallel replicas: every replica draws from all of them", len(expanded), replicas
        )
        return expanded
    return expanded[rank::replicas]


def data_parallel_replica(trainer: Any) -> tuple[int, int]:
    """(replicas, this process's replica): a tensor-parallel group is one replica. Without a trainer, every process
    of an initialised process group is one."""
    if trainer is not None:
        from anymal_lit.callbacks.schedule import data_parallel_rank  # the callbacks import the data modules

        return data_parallel_rank(trainer)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _members(value: Any, key: str) -> Any:
    """Media member names of a shard record (``m0.png``) -> the scratch file names (``<key>.m0.png``)."""
    if isinstance(value, str):
        return f"{key}.{value}"
    return [f"{key}.{v}" for v in value] if isinstance(value, list) else value


class WebDataModule(ConversationDataModule):
    """Training data streamed from WebDataset tar shards (see :func:`write_shards` and the module docstring);
    validation, test and predict read JSONL files as in :class:`ConversationDataModule`.

    Also a dataset of a :class:`~anymal_lit.data.mixture.MixtureDataModule`, streamed and mixed by its weights and
    curriculum (``datasets: {image: {class_path: anymal_lit.data.WebDataModule, init_args: {train_shards: ...,
    samples_per_epoch: ...}}, ...}``); the mixture's batching and loader workers apply then, this module's shards,
    shuffle buffer, seed and record settings.

    Args:
        train_shards: Shard URLs: a path or URL with brace ranges, or a list.
        samples_per_epoch: Samples per training epoch over all data-parallel replicas (a resampled stream has no
            natural end).
        shuffle_buffer: Shuffle buffer of each loader worker (samples).
        seed: Seed of the shard draws and shuffles.
        **kwargs: The validation/test/predict files, batching and record settings of
            :class:`ConversationDataModule` (its ``train_file`` does not apply: training reads ``train_shards``).
    """

    def __init__(
        self,
        train_shards: str | list[str],
        samples_per_epoch: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("train_file"):
            raise ValueError("WebDataModule trains from train_shards; train_file does not apply (convert it first)")
        super().__init__(**kwargs)
        self.train_shards, self.samples_per_epoch = train_shards, samples_per_epoch
        self.shuffle_buffer, self.seed = shuffle_buffer, seed

    def stream(self) -> ShardStream:
        """The training stream of this process's data-parallel replica, from the epoch the trainer is about to run."""
        load = _Loader(self.chat_tokenizer(), self.processors)
        replicas, rank = data_parallel_replica(self.trainer)
        return ShardStream(
            self.train_shards, load, self.placeholders, self.samples_per_epoch, self.shuffle_buffer, self.seed,
            self.skip_bad_records, replicas, rank, self.current_epoch(),
        )  # fmt: skip

    def train_dataloader(self) -> StatefulDataLoader:
        return StatefulDataLoader(
            self.stream(),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collator(),
        )


class _Loader:
    """Picklable ``(record, index) -> sample`` for loader workers (bad records raise; the stream skips them)."""

    def __init__(self, chat: ChatTokenizer, processors: dict[str, MediaProcessor]) -> None:
        self.chat, self.processors = chat, processors

    def __call__(self, record: Any, index: int) -> Sample | None:
        return load_sample(record, index, self.chat, self.processors)


def shard_record_json(path: str | Path) -> list[dict[str, Any]]:
    """The JSON members of a local shard, in order (for inspection and tests)."""
    out = []
    for sample in wds.tarfile_samples([{"url": str(path)}]):
        out.append(json.loads(sample["json"]))
    return out
