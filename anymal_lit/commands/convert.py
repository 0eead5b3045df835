"""``anymal-lit convert <format> ... --out FILE``: turn a benchmark's own release files into the kit's JSONL
conversation records (which the evaluation callbacks and ``predict`` read), or JSONL records and their media into
WebDataset tar shards (``convert webdataset``). Bad rows stop the conversion with the file and row named, or are
skipped and counted with ``--skip-bad``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELP = "a benchmark's own files -> the kit's JSONL records (or JSONL records -> WebDataset tar shards)"


@dataclass(frozen=True)
class Format:
    """One ``convert`` format: the options it needs and how it reads them into records."""

    needs: tuple[str, ...]
    """Option names (argparse ``dest``) that must be given."""
    read: Callable[[argparse.Namespace], list[dict[str, Any]]]


def _benchmarks() -> Any:
    from anymal_lit.data import benchmarks

    return benchmarks


FORMATS: dict[str, Format] = {
    "coco-captions": Format(
        ("captions", "images"),
        lambda a: _benchmarks().coco_caption_records(a.captions, a.images, skip_bad=a.skip_bad),
    ),
    "vqav2": Format(
        ("questions", "annotations", "images"),
        lambda a: _benchmarks().vqa_records(a.questions, a.annotations, a.images, a.image_pattern, skip_bad=a.skip_bad),
    ),
    "mmbench": Format(("tsv", "images"), lambda a: _benchmarks().mmbench_records(a.tsv, a.images, skip_bad=a.skip_bad)),
    "audiocaps": Format(
        ("csv", "audio"),
        lambda a: _benchmarks().audiocaps_records(a.csv, a.audio, a.audio_pattern, skip_bad=a.skip_bad),
    ),
}
"""Benchmark formats: name -> what it needs and its reader (in :mod:`anymal_lit.data.benchmarks`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=[*FORMATS, "webdataset"], help="the input's format")
    parser.add_argument("--out", required=True, help="JSONL to write (webdataset: a shard pattern, s/train-%%06d.tar)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    parser.add_argument("--records", help="webdataset: the JSONL records (and their media) to pack")
    parser.add_argument("--maxcount", type=int, default=1000, help="webdataset: samples per shard")
    parser.add_argument("--images", help="image folder (MMBench and other TSVs: where decoded images go)")
    parser.add_argument("--csv", help="AudioCaps CSV")
    parser.add_argument("--audio", help="AudioCaps: folder of downloaded clips")
    parser.add_argument("--audio-pattern", default="{youtube_id}_{start_time}.wav", help="AudioCaps clip file names")
    parser.add_argument("--captions", help="COCO captions JSON")
    parser.add_argument("--questions", help="VQAv2 questions JSON")
    parser.add_argument("--annotations", help="VQAv2 annotations JSON")
    parser.add_argument("--image-pattern", default="COCO_val2014_{image_id:012d}.jpg", help="VQAv2 image file names")
    parser.add_argument("--tsv", help="MMBench TSV")


def run(args: argparse.Namespace) -> None:
    if args.format == "webdataset":
        _require(args, ("records",))
        from anymal_lit.data.webdataset import write_shards

        shards = write_shards(args.records, args.out, args.maxcount, skip_bad_records=args.skip_bad)
        print(f"wrote {len(shards)} shard(s): {shards[0]} ... {shards[-1]}")
        return
    fmt = FORMATS[args.format]
    _require(args, fmt.needs)
    records = fmt.read(args)
    print(f"wrote {len(records)} records to {_benchmarks().write_jsonl(records, args.out)}")


def _require(args: argparse.Namespace, needs: tuple[str, ...]) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in needs if getattr(args, name) is None]
    if missing:
        raise ValueError(f"convert {args.format} needs {' '.join(missing)}")
