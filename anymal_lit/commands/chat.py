"""``anymal-lit chat --model <bundle or export>``: talk to a trained model in the terminal; media are attached with
``/image PATH`` (also ``/audio``, ``/video``, ``/imu``) and ``/help`` lists the commands."""

from __future__ import annotations

import argparse

HELP = "chat with a trained model in the terminal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from anymal_lit.inference import terminal

    terminal.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from anymal_lit.inference import terminal

    terminal.main(args)
