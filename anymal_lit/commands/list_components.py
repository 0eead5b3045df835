"""``anymal-lit list``: every encoder, projector, stage, data module and callback the kit has, with their arguments,
and the YAML presets under ``--conf``."""

from __future__ import annotations

import argparse

HELP = "list encoders, projectors, stages, data modules, callbacks and YAML presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default="conf", help="folder of YAML presets")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.catalog import render

    print(render(args.conf))
