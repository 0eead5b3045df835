"""The kit's own ``anymal-lit`` commands, one module each, beside LightningCLI's fit / validate / test / predict.

A command module holds a module docstring (its ``--help`` description), ``HELP`` (its line in ``anymal-lit --help``),
``add_arguments(parser)`` and ``run(args)`` (or ``run_argv(argv)`` for a command whose options another parser reads).
Modules import their heavy dependencies inside ``run`` so that ``anymal-lit --help`` and argument errors stay fast.
To add a command, write the module and add it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

COMMANDS = {
    "list": "anymal_lit.commands.list_components",
    "toyworld": "anymal_lit.commands.toyworld",
    "tiny-lm": "anymal_lit.commands.tiny_lm",
    "demo": "anymal_lit.commands.demo",
    "convert": "anymal_lit.commands.convert",
    "cache-features": "anymal_lit.commands.cache_features",
    "consolidate": "anymal_lit.commands.consolidate",
    "export": "anymal_lit.commands.export",
    "chat": "anymal_lit.commands.chat",
    "sample": "anymal_lit.commands.sample",
    "serve": "anymal_lit.commands.serve",
    "merge": "anymal_lit.commands.merge",
    "plan": "anymal_lit.commands.plan",
}
"""Command name -> the module that implements it."""

LIGHTNING_COMMANDS = {
    "fit": "train a stage: anymal-lit fit -c experiments/demo/align_image.yaml",
    "validate": "run the evaluation callbacks on a trained model (--ckpt_path or the stage's init_from)",
    "test": "like validate, on the data module's test file",
    "predict": "generate for a JSONL of questions into predictions.jsonl (--data.init_args.predict_file)",
}
"""LightningCLI's subcommands with the line ``anymal-lit --help`` gives them."""


def command_module(name: str) -> ModuleType:
    """The module implementing the kit command ``name``."""
    return importlib.import_module(COMMANDS[name])


def overview() -> str:
    """``anymal-lit --help``: every command with its line."""
    width = max(map(len, [*COMMANDS, *LIGHTNING_COMMANDS])) + 2
    lines = ["usage: anymal-lit <command> [options]   (anymal-lit <command> --help for its options)", ""]
    lines += ["training and evaluation (LightningCLI; -c <experiment>.yaml):"]
    lines += [f"  {name:<{width}}{text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "kit commands:"]
    lines += [f"  {name:<{width}}{command_module(name).HELP}" for name in COMMANDS]
    lines += ["", "--debug (any command) shows the traceback of a user error instead of its one-line message."]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> None:
    """Parse ``argv`` with the command's own parser and run it."""
    module = command_module(name)
    if hasattr(module, "run_argv") and not {"-h", "--help"} & set(argv):
        module.run_argv(argv)  # options parsed by LightningCLI, not here
        return
    parser = argparse.ArgumentParser(
        prog=f"anymal-lit {name}", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    module.run(parser.parse_args(argv))
