"""``anymal-lit demo``: the whole recipe on the toy world, through the same CLI and YAMLs a user runs."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from anymal_lit.callbacks.scorecard import update_scorecard
from anymal_lit.toyworld import WorldSpec, build_world
from anymal_lit.toyworld.report import (
    caption_report,
    hallucination_report,
    interleaved_report,
    object_count_report,
    qa_blind_baseline,
)
from anymal_lit.toyworld.summary import write_summary

log = logging.getLogger(__name__)

STEPS = (("align", "align.yaml"), ("sft", "sft.yaml"), ("dpo", "dpo.yaml"))
"""(stage, experiment YAML) in the order the demo runs them."""
MODALITIES = ("image", "audio", "video", "imu")


def run_cli(*args: str) -> None:
    """Run ``anymal-lit <args>`` through the command's own entry point, in this process: a fresh process per stage
    paid ~10 s of imports each (the stages seed themselves and share no state but the files they write)."""
    from anymal_lit.cli import main

    log.info("running: anymal-lit %s", " ".join(args))
    main(list(args))


def run_demo(world: str = "runs/toyworld", out: str = "runs/demo", experiments: str = "experiments/demo") -> dict:
    """Build the world (if needed), run every stage, add the toy-world baselines and print the scorecard."""
    start = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the stages' loader workers fork after tokenizing
    out_dir = Path(out)
    scorecard = out_dir / "scorecard.json"
    if scorecard.exists():
        scorecard.unlink()
    build_world(world, WorldSpec())
    world_seconds = time.time() - start
    stage_seconds = {}
    for stage, yaml in STEPS:
        t0 = time.time()
        run_cli("fit", "-c", str(Path(experiments) / yaml))
        stage_seconds[stage] = time.time() - t0
    predictions = out_dir / "predictions"
    for modality in MODALITIES:
        name = f"{modality}_caption"
        extras = caption_report(
            world, modality, predictions / f"align_{name}.json", predictions / f"align_{name}_before.json"
        )
        update_scorecard(scorecard, "align", name, extras)
    extras = interleaved_report(
        world, predictions / "sft_image_imu_qa.json", predictions / "sft_image_imu_qa_before.json"
    )
    update_scorecard(scorecard, "sft", "image_imu_qa", extras)
    blind = qa_blind_baseline(world)
    for stage in ("sft", "dpo"):  # alignment's image captions got theirs from caption_report
        before, after = (predictions / f"{stage}_image_caption{s}.json" for s in ("_before", ""))
        if after.exists():
            update_scorecard(scorecard, stage, "image_caption", hallucination_report(world, after, before))
    for stage in ("sft", "dpo"):
        for bench in ("vqa", "mmbench"):
            extras = object_count_report(
                world, bench, predictions / f"{stage}_{bench}.json", predictions / f"{stage}_{bench}_before.json"
            )
            card = update_scorecard(scorecard, stage, bench, extras)
        card = update_scorecard(scorecard, stage, "vqa", blind)
    card["wall_seconds"] = time.time() - start
    card["world_seconds"] = world_seconds
    card["stage_seconds"] = stage_seconds
    scorecard.write_text(json.dumps(card, indent=2, sort_keys=True))
    print(write_summary(card, out_dir))
    print(f"full figures: {scorecard}; table and picture: {out_dir / 'summary.md'}, {out_dir / 'summary.png'}")
    print(next_steps(stage_export(Path(experiments) / STEPS[-1][1], out_dir / STEPS[-1][0]), out_dir, world))
    return card


def stage_export(yaml: str | Path, fallback_root: str | Path) -> Path:
    """Where the stage of an experiment YAML writes its export (:meth:`AnyMALStage.export_dir`): its
    ModelCheckpoint's ``dirpath`` + ``export``. Without one Lightning picks a versioned log folder at run time; the
    guess is then ``trainer.default_root_dir`` (or ``fallback_root``) + ``checkpoints/export``."""
    import yaml as pyyaml

    trainer = (pyyaml.safe_load(Path(yaml).read_text()) or {}).get("trainer") or {}
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            dirpath = (callback.get("init_args") or {}).get("dirpath")
            if dirpath:
                return Path(dirpath) / "export"
    return Path(trainer.get("default_root_dir") or fallback_root) / "checkpoints" / "export"


def next_steps(export: str | Path, out: str | Path, world: str | Path) -> str:
    """The demo's closing lines: how to use the model it just trained."""
    image = Path(world) / "images" / "val" / "000000.png"
    bundle = Path(out) / "bundle"
    return "\n".join([
        "",
        f"Use the model you just trained ({export}):",
        f"  anymal-lit chat --model {export}     # then /image {image} and ask: How many shapes are there?",
        f"  anymal-lit serve --model {export}    # OpenAI-compatible API on http://127.0.0.1:8000/v1",
        f"  anymal-lit export --from {export} --out {bundle}   # one self-contained folder to hand on",
    ])  # fmt: skip
