"""``anymal-lit demo``: the whole recipe on the toy world, through the same CLI and YAMLs a user runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from anymal_lit.callbacks.scorecard import combine_scorecards, update_scorecard
from anymal_lit.toyworld import WorldSpec, build_world
from anymal_lit.toyworld.preferences import caption_prompts, onpolicy_preferences
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


ONPOLICY_PROMPTS = 800
"""Training pictures whose captions the SFT model samples for DPO's pairs (with their QA pairs: 1600 pairs, one
pass of the demo's 200 DPO steps of 8)."""
ONPOLICY_SAMPLES = 4
"""Sampled captions per picture (temperature 1)."""
CHAIN_OUTPUTS = ("align", "sft", "dpo", "predictions", "scorecard.json", "preference_prompts.jsonl",
                 "sft_samples.jsonl", "preference_train.jsonl")  # fmt: skip
"""What one seed's chain writes into the demo folder (moved to ``seed-<n>/`` when several seeds run)."""


def run_demo(
    world: str = "runs/toyworld",
    out: str = "runs/demo",
    experiments: str = "experiments/demo",
    seeds: list[int] | tuple[int, ...] = (0,),
    precision: str | None = None,
    from_stage: str = STEPS[0][0],
) -> dict:
    """Build the world (if needed), run every stage for each seed, add the toy-world baselines and print the
    scorecard. With several seeds each seed's runs move to ``<out>/seed-<n>/`` and ``<out>/scorecard.json`` holds
    every figure as ``{"mean", "min", "max", "per_seed"}``; with one, the layout is a single run's. ``precision``
    (e.g. ``bf16-mixed``) overrides the YAMLs' ``trainer.precision``. ``from_stage`` (``sft`` or ``dpo``) keeps
    the earlier stages' runs of an earlier demo in ``out`` (per seed) and reruns from that stage on."""
    stages = [stage for stage, _ in STEPS]
    if from_stage not in stages:
        raise ValueError(f"from_stage must be one of {stages}, got {from_stage!r}")
    start = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the stages' loader workers fork after tokenizing
    out_dir = Path(out)
    if from_stage == stages[0] or len(seeds) > 1:
        for name in CHAIN_OUTPUTS:
            _remove(out_dir / name)
    build_world(world, WorldSpec())
    world_seconds = time.time() - start
    cache_seconds = fill_feature_cache(experiments)
    cards = []
    for seed in seeds:
        folder = out_dir / f"seed-{seed}"
        if len(seeds) > 1 and from_stage != stages[0]:  # this seed's earlier stages, back where its chain wants them
            _move_outputs(folder, out_dir)
        _check_earlier_stages(out_dir, experiments, stages[: stages.index(from_stage)], seed)
        for stage in stages[stages.index(from_stage) :]:  # an earlier run of the stages to redo goes
            _remove(out_dir / stage)
        card = run_chain(world, out_dir, experiments, seed, precision, from_stage)
        if len(seeds) > 1:
            _remove(folder)
            _move_outputs(out_dir, folder)
        cards.append(card)
    card = cards[0] if len(cards) == 1 else combine_scorecards(cards, list(seeds))
    if len(cards) > 1:
        card["stage_seconds"] = [c["stage_seconds"] for c in cards]
    card["wall_seconds"] = time.time() - start
    card["world_seconds"] = world_seconds
    card["feature_cache_seconds"] = cache_seconds
    scorecard = out_dir / "scorecard.json"
    scorecard.write_text(json.dumps(card, indent=2, sort_keys=True))
    print(write_summary(card, out_dir))
    print(f"full figures: {scorecard}; table and picture: {out_dir / 'summary.md'}, {out_dir / 'summary.png'}")
    export = stage_export(Path(experiments) / STEPS[-1][1], out_dir / STEPS[-1][0])
    if len(seeds) > 1 and export.is_relative_to(out_dir):  # moved with its seed's runs
        export = out_dir / f"seed-{seeds[-1]}" / export.relative_to(out_dir)
    print(next_steps(export, out_dir, world))
    return card


def fill_feature_cache(experiments: str | Path) -> float:
    """Encode the media of the stages' data with the frozen encoders once (``anymal-lit cache-features``, into the
    YAMLs' ``feature_cache``), so that no stage or seed encodes a picture again: the frozen CLIP's forward passes were
    most of an alignment step. The DPO pairs (written later) show the SFT set's pictures. Returns the seconds spent."""
    start = time.time()
    for stage, yaml in STEPS:
        if stage != "dpo":  # the frozen encoders do not depend on the previous stage's export (not written yet)
            run_cli("cache-features", "-c", str(Path(experiments) / yaml), "--model.init_args.init_from=null")
    return time.time() - start


def run_chain(
    world: str | Path,
    out_dir: Path,
    experiments: str | Path,
    seed: int,
    precision: str | None = None,
    from_stage: str = STEPS[0][0],
) -> dict:
    """One seed's alignment -> SFT -> on-policy preference pairs -> DPO (from ``from_stage`` on), with the toy
    world's reports added to the scorecard; returns the scorecard."""
    stage_seconds, stats = {}, {}
    steps = STEPS[[stage for stage, _ in STEPS].index(from_stage) :]
    for stage, yaml in steps:
        t0 = time.time()
        if stage == "dpo":
            stats = onpolicy_data(world, out_dir, stage_export(Path(experiments) / "sft.yaml", out_dir / "sft"), seed)
            log.info("on-policy preference pairs: %s", stats)
        overrides = [f"--seed_everything={seed}"] + ([f"--trainer.precision={precision}"] if precision else [])
        run_cli("fit", "-c", str(Path(experiments) / yaml), *overrides)
        stage_seconds[stage] = time.time() - t0
    scorecard = out_dir / "scorecard.json"
    if stats:
        update_scorecard(scorecard, "dpo", "preference_data", stats)
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
    card["stage_seconds"] = {**card.get("stage_seconds", {}), **stage_seconds}
    card["seed"] = seed
    card["precision"] = precision or "as in the YAMLs"
    scorecard.write_text(json.dumps(card, indent=2, sort_keys=True))
    return card


def onpolicy_data(
    world: str | Path,
    out_dir: Path,
    sft_export: Path,
    seed: int,
    prompts: int = ONPOLICY_PROMPTS,
    samples: int = ONPOLICY_SAMPLES,
) -> dict[str, float]:
    """DPO's training pairs from the SFT model's own captions: ``anymal-lit sample`` on ``prompts`` training
    pictures, labelled against their scenes (:mod:`anymal_lit.toyworld.preferences`, with omission pairs) into
    ``<out>/preference_train.jsonl``; returns the labeller's counts."""
    prompt_file = caption_prompts(world, out_dir / "preference_prompts.jsonl", limit=prompts)
    sampled = out_dir / "sft_samples.jsonl"
    run_cli("sample", "--model", str(sft_export), "--data", str(prompt_file), "--media-root", str(world),
            "--out", str(sampled), "--num-samples", str(samples), "--seed", str(seed),
            "--max-new-tokens", "48")  # fmt: skip
    return onpolicy_preferences(world, sampled, out_dir / "preference_train.jsonl", omissions=True)


def _move_outputs(source: Path, target: Path) -> None:
    """Move one seed's chain outputs (:data:`CHAIN_OUTPUTS`) from ``source`` to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in CHAIN_OUTPUTS:
        if (source / name).exists():
            _remove(target / name)
            shutil.move(source / name, target / name)


def _check_earlier_stages(out_dir: Path, experiments: str | Path, stages: list[str], seed: int) -> None:
    """Before rerunning from a later stage: the exports of the stages kept must be there."""
    for stage in stages:
        export = stage_export(Path(experiments) / dict(STEPS)[stage], out_dir / stage)
        if not (export / "export.json").is_file():
            raise FileNotFoundError(f"seed {seed}: no {stage} export at {export} to rerun the later stages from")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


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
