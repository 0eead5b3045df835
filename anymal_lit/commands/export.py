"""``anymal-lit export --from <stage export> --out <bundle>``: a trained model as one self-contained folder (LLM,
tokenizer, encoders, projectors, model card) that ``load_model``, ``chat`` and ``serve`` take from anywhere."""

from __future__ import annotations

import argparse

HELP = "a trained model as one self-contained folder (LLM, tokenizer, encoders, projectors, card)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, help="a stage export (checkpoints/export)")
    parser.add_argument("--out", required=True, help="the bundle folder to create")
    parser.add_argument("--merge-lora", action="store_true", help="merge the LoRA adapters into the LLM's weights")
    parser.add_argument("--scorecard", help="scorecard.json for the model card (default: the nearest above --from)")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.inference.bundle import export_bundle

    out = export_bundle(args.source, args.out, merge_lora=args.merge_lora, scorecard=args.scorecard)
    print(f"wrote {out}; chat with it: anymal-lit chat --model {out}")
