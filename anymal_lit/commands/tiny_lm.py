"""``anymal-lit tiny-lm --out DIR``: train a tiny chat LM from scratch by the recipe of the one the toy world ships
(~16 CPU minutes; other weights than the shipped ones, whose ``recipe.json`` says how they were made) and write it
with its tokenizer and ``recipe.json``."""

from __future__ import annotations

import argparse
import json

HELP = "train a tiny chat LM from scratch by the shipped one's recipe (~16 CPU min)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the LM, its tokenizer and recipe.json")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed the LM is trained on")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.toyworld import WorldSpec
    from anymal_lit.toyworld.world import build_tiny_lm

    recipe = build_tiny_lm(args.out, WorldSpec(seed=args.seed, tiny_lm="train"))
    print(json.dumps(recipe, indent=2))
