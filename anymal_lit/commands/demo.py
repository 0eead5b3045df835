"""``anymal-lit demo``: what ``make demo`` runs. Builds the toy world (once), then trains alignment, instruction
tuning (SFT), samples the SFT model's captions for on-policy preference pairs and trains preference tuning (DPO) with
the YAMLs in ``--experiments``, scoring every benchmark before and after each stage into ``<out>/scorecard.json``.
``--seeds 0 1 2`` reruns the stages per seed and reports each figure's mean and range."""

from __future__ import annotations

import argparse

HELP = "toy world -> alignment -> SFT -> DPO -> scorecard (what `make demo` runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", default="runs/toyworld", help="the toy world's folder (built if missing)")
    parser.add_argument("--out", default="runs/demo", help="folder for the stages' runs and the scorecard")
    parser.add_argument("--experiments", default="experiments/demo", help="folder of the stage YAMLs")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="training seeds: the world is built once, the three stages rerun per seed (runs in <out>/seed-<n>/) and "
        "every scorecard figure becomes {mean, min, max, per_seed} (default: 0)",
    )
    parser.add_argument(
        "--from-stage",
        choices=("align", "sft", "dpo"),
        default="align",
        help="keep an earlier demo's runs of the stages before this one (per seed) and rerun from it on (dpo: the "
        "on-policy sampling and DPO)",
    )
    parser.add_argument(
        "--precision",
        help="the stages' trainer.precision instead of the YAMLs' (e.g. bf16-mixed: autocast to bfloat16 on CPUs "
        "and GPUs that support it)",
    )


def run(args: argparse.Namespace) -> None:
    from anymal_lit.demo import run_demo

    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds repeats a seed: {args.seeds}")
    run_demo(args.world, args.out, args.experiments, args.seeds, args.precision, args.from_stage)
