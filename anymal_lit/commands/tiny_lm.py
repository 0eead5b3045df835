"""``anymal-lit tiny-lm --out DIR``: train the toy world's tiny chat LM from scratch and write it with its tokenizer
and ``recipe.json`` (how it was made)."""

from __future__ import annotations

import argparse
import json

HELP = "train the toy world's tiny chat LM from scratch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the LM, its tokenizer and recipe.json")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed the LM is trained on")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.toyworld import WorldSpec
    from anymal_lit.toyworld.world import build_tiny_lm

    recipe = build_tiny_lm(args.out, WorldSpec(seed=args.seed, tiny_lm="train"))
    print(json.dumps(recipe, indent=2))
