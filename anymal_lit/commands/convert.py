"""``anymal-lit convert <format> ... --out FILE``: turn a benchmark's own release files into the kit's JSONL
conversation records (which the evaluation callbacks and ``predict`` read), or JSONL records and their media into
WebDataset tar shards (``convert webdataset``). Bad rows stop the conversion with the file and row named, or are
skipped and counted with ``--skip-bad``."""

from __future__ import annotations

import argparse
import importlib
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


def _reader(module: str, name: str) -> Callable[..., list[dict[str, Any]]]:
    """A reader of ``anymal_lit.data.<module>``, imported when the format runs (``--help`` stays light)."""
    return getattr(importlib.import_module(f"anymal_lit.data.{module}"), name)


def _given(a: argparse.Namespace, **options: str) -> dict[str, Any]:
    """Reader keyword arguments for the options the user gave (the readers own the defaults)."""
    return {key: getattr(a, dest) for key, dest in options.items() if getattr(a, dest) is not None}


def _one(a: argparse.Namespace) -> str:
    if len(a.data) != 1:
        raise ValueError(f"convert {a.format} reads one --data file, got {len(a.data)}")
    return a.data[0]


def _each(a: argparse.Namespace, read: Callable[[str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [record for path in a.data for record in read(path)]


FORMATS: dict[str, Format] = {
    "coco-captions": Format(
        ("captions", "images"),
        lambda a: _benchmarks().coco_caption_records(a.captions, a.images, skip_bad=a.skip_bad),
    ),
    "vqav2": Format(
        ("questions", "annotations", "images"),
        lambda a: _benchmarks().vqa_records(
            a.questions, a.annotations, a.images, skip_bad=a.skip_bad, **_given(a, image_pattern="image_pattern")
        ),
    ),
    "mmbench": Format(("tsv", "images"), lambda a: _benchmarks().mmbench_records(a.tsv, a.images, skip_bad=a.skip_bad)),
    "audiocaps": Format(
        ("csv", "audio"),
        lambda a: _benchmarks().audiocaps_records(a.csv, a.audio, a.audio_pattern, skip_bad=a.skip_bad),
    ),
    "textvqa": Format(
        ("questions", "images"),
        lambda a: _reader("vqa_readers", "textvqa_records")(
            a.questions, a.images, skip_bad=a.skip_bad, **_given(a, image_pattern="image_pattern")
        ),
    ),
    "okvqa": Format(
        ("questions", "annotations", "images"),
        lambda a: _reader("vqa_readers", "okvqa_records")(
            a.questions, a.annotations, a.images, skip_bad=a.skip_bad, **_given(a, image_pattern="image_pattern")
        ),
    ),
    "vizwiz": Format(
        ("annotations", "images"),
        lambda a: _reader("vqa_readers", "vizwiz_records")(a.annotations, a.images, skip_bad=a.skip_bad),
    ),
    "chartqa": Format(
        ("data",),
        lambda a: _each(
            a,
            lambda path: _reader("vqa_readers", "chartqa_records")(
                path, skip_bad=a.skip_bad, **_given(a, image_dir="images", split="split")
            ),
        ),
    ),
    "hateful-memes": Format(
        ("data",),
        lambda a: _reader("vqa_readers", "hateful_memes_records")(
            _one(a), skip_bad=a.skip_bad, **_given(a, image_root="images")
        ),
    ),
    "vlmeval-tsv": Format(
        ("tsv", "images"),
        lambda a: _reader("vlmeval_tsv", "vlmeval_tsv_records")(
            a.tsv, a.images, skip_bad=a.skip_bad, **_given(a, image_root="image_root")
        ),
    ),
    "mmmu": Format(
        ("data", "images"),
        lambda a: _reader("mmmu_release", "mmmu_records")(a.data, a.images, skip_bad=a.skip_bad),
    ),
    "egoschema": Format(
        ("questions", "videos"),
        lambda a: _reader("video_qa_readers", "egoschema_records")(
            a.questions,
            a.annotations,
            a.videos,
            skip_bad=a.skip_bad,
            **_given(a, video_pattern="video_pattern", unanswered="unanswered"),
        ),
    ),
    "mvbench": Format(
        ("data", "videos"),
        lambda a: _reader("video_qa_readers", "mvbench_records")(
            _one(a), a.videos, skip_bad=a.skip_bad, **_given(a, tasks="tasks")
        ),
    ),
}
"""Benchmark formats: name -> what it needs and its reader (in :mod:`anymal_lit.data.benchmarks` and its siblings
``vqa_readers``, ``vlmeval_tsv``, ``mmmu_release``, ``video_qa_readers``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=[*FORMATS, "webdataset"], help="the input's format")
    parser.add_argument("--out", required=True, help="JSONL to write (webdataset: a shard pattern, s/train-%%06d.tar)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    parser.add_argument("--records", help="webdataset: the JSONL records (and their media) to pack")
    parser.add_argument("--maxcount", type=int, default=1000, help="webdataset: samples per shard")
    parser.add_argument(
        "--images",
        help="image folder (TSVs, MMMU: where decoded images go; ChartQA: the charts, default png/ beside the JSON; "
        "Hateful Memes: the folder its img/ paths start in, default the JSONL's)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        help="ChartQA: test_human.json / test_augmented.json; Hateful Memes: dev_seen.jsonl; MMMU: its rows "
        "(<Subject>/validation-*.parquet, or JSON/JSONL); MVBench: the json/ folder of the task files",
    )
    parser.add_argument("--videos", help="EgoSchema: the videos folder; MVBench: the video/ folder of the task folders")
    parser.add_argument("--csv", help="AudioCaps CSV")
    parser.add_argument("--audio", help="AudioCaps: folder of downloaded clips")
    parser.add_argument("--audio-pattern", default="{youtube_id}_{start_time}.wav", help="AudioCaps clip file names")
    parser.add_argument("--captions", help="COCO captions JSON")
    parser.add_argument(
        "--questions", help="questions JSON (VQAv2, OK-VQA; TextVQA_0.5.1_val.json; EgoSchema questions.json)"
    )
    parser.add_argument(
        "--annotations",
        help="annotations JSON (VQAv2, OK-VQA; VizWiz val.json; EgoSchema subset_answers.json, without it: no answers)",
    )
    parser.add_argument(
        "--image-pattern",
        help="image file names from the row's fields (default: the format's own, COCO_val2014_{image_id:012d}.jpg for "
        "VQAv2 / OK-VQA, {image_id}.jpg for TextVQA)",
    )
    parser.add_argument("--tsv", help="MMBench TSV, or a VLMEvalKit TSV (MMMU_DEV_VAL.tsv, AI2D_TEST.tsv, ...)")
    parser.add_argument("--image-root", help="VLMEvalKit TSV: the folder image_path entries are relative to")
    parser.add_argument("--split", help="ChartQA: split name recorded (default: from the file name)")
    parser.add_argument("--video-pattern", help="EgoSchema: video file names (default: {q_uid}.mp4)")
    parser.add_argument(
        "--unanswered",
        choices=["skip", "keep"],
        help="EgoSchema: questions without a public answer are skipped and counted (default) or kept for prediction",
    )
    parser.add_argument("--tasks", nargs="+", help="MVBench: the tasks to read (default: all 20)")


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
