"""``anymal-lit serve --model <bundle or export>``: an OpenAI-compatible HTTP server (LitServe) with dynamic batching,
streaming and media by URL, data URI or (under ``--media-root``) local path."""

from __future__ import annotations

import argparse

HELP = "an OpenAI-compatible HTTP server for a trained model (LitServe)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from anymal_lit.inference.server import add_arguments as server_arguments

    server_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from anymal_lit.inference.server import serve

    serve(args)
