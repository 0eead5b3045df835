"""``anymal-lit demo``: what ``make demo`` runs. Builds the toy world (once), then trains alignment, instruction
tuning (SFT) and preference tuning (DPO) with the YAMLs in ``--experiments``, scoring every benchmark before and after
each stage into ``<out>/scorecard.json``."""

from __future__ import annotations

import argparse

HELP = "toy world -> alignment -> SFT -> DPO -> scorecard (what `make demo` runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", default="runs/toyworld", help="the toy world's folder (built if missing)")
    parser.add_argument("--out", default="runs/demo", help="folder for the stages' runs and the scorecard")
    parser.add_argument("--experiments", default="experiments/demo", help="folder of the stage YAMLs")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.demo import run_demo

    run_demo(args.world, args.out, args.experiments)
