"""Model merging on the toy world (UnIVAL): two SFT adapters trained apart, their interpolation scored.

    python benchmarks/merge_sweep.py [--steps 300] [--out runs/merge]      (make bench-merge; needs make demo)

From the demo's alignment export, trains one SFT adapter on short-answer questions only and one on captions only
(`experiments/demo/merge_sft.yaml`), then `anymal-lit merge --sweep 0 0.25 0.5 0.75 1` scores each mix (weights
``1 - t`` for the QA adapter, ``t`` for the caption adapter) with VQA accuracy and caption CIDEr. Writes
``<out>/sweep/sweep.md`` and ``sweep.json`` (with, per weight, the smallest share kept of the better parent's
score: UnIVAL's claim is a mix keeping >= 90 % of each) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from anymal_lit.cli import main as anymal_lit  # noqa: E402

EXPERIMENT = "experiments/demo/merge_sft.yaml"
SHORT_ANSWER_KINDS = "qv"
"""First letter of the id suffix of the world's short-answer SFT rows (``<picture>-q<n>``, ``-v<n>``)."""


def qa_only(world: Path, out: Path) -> Path:
    """The world's SFT rows that ask a short-answer question (no captions, no multiple choice)."""
    rows = [json.loads(line) for line in (world / "image_sft_train.jsonl").open()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"].rsplit("-", 1)[1][:1] in SHORT_ANSWER_KINDS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--out", default="runs/merge")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    world, out = Path(args.world), Path(args.out)
    tasks = {"qa": qa_only(world, out / "qa_train.jsonl"), "caption": world / "image_caption_train.jsonl"}
    seconds = {}
    for task, train_file in tasks.items():
        start = time.time()
        anymal_lit(["fit", "-c", EXPERIMENT, "--data.init_args.train_file", str(train_file),
                    "--trainer.max_steps", str(args.steps), "--trainer.limit_val_batches", "0",
                    "--trainer.default_root_dir", str(out / f"sft_{task}")])  # fmt: skip
        seconds[f"sft_{task}"] = time.time() - start
    exports = [str(next((out / f"sft_{task}").rglob("export/export.json")).parent) for task in tasks]
    start = time.time()
    anymal_lit(["merge", "--sweep", "0", "0.25", "0.5", "0.75", "1", "-c", EXPERIMENT, "--exports", *exports,
                "--out", str(out / "sweep")])  # fmt: skip
    seconds["sweep"] = time.time() - start
    print((out / "sweep" / "sweep.md").read_text())
    print("seconds:", {k: round(v) for k, v in seconds.items()})


if __name__ == "__main__":
    main()
