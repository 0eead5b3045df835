"""``anymal-lit toyworld --out runs/toyworld``: generate the toy world (scenes, media of every modality, benchmark
files) and its tiny pretrained encoders; an identical world already there is kept."""

from __future__ import annotations

import argparse

HELP = "generate the toy world and its tiny pretrained models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/toyworld", help="folder of the world")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical world exists")
    parser.add_argument(
        "--train-clip",
        action="store_true",
        help="train the tiny CLIP on this world's pictures (~11 CPU minutes) instead of copying the shipped one",
    )


def run(args: argparse.Namespace) -> None:
    from anymal_lit.toyworld import WorldSpec, build_world

    spec = WorldSpec(seed=args.seed, tiny_clip="train" if args.train_clip else "shipped")
    build_world(args.out, spec, force=args.force)
