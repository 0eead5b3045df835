"""``anymal-lit consolidate CKPT OUT``: merge a sharded (FSDP) checkpoint folder into one ``torch.save`` file."""

from __future__ import annotations

import argparse

HELP = "merge a sharded (FSDP) checkpoint folder into one torch.save file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the distributed checkpoint folder (e.g. checkpoints/last.ckpt/)")
    parser.add_argument("out", help="single-file checkpoint to write")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.strategies import consolidate

    print(f"wrote {consolidate(args.checkpoint, args.out)}")
