"""``anymal-lit toyworld --out runs/toyworld``: generate the toy world (scenes, media of every modality, benchmark
files) and its tiny pretrained encoders; an identical world already there is kept."""

from __future__ import annotations

import argparse

HELP = "generate the toy world and its tiny pretrained models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/toyworld", help="folder of the world")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical world exists")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.toyworld import WorldSpec, build_world

    build_world(args.out, WorldSpec(seed=args.seed), force=args.force)
