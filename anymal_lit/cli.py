"""The ``anymal-lit`` command: LightningCLI (fit / validate / test / predict) plus the kit's own subcommands.

::

    anymal-lit fit -c experiments/demo/align_image.yaml [-c conf/...yaml] [--trainer.max_steps 100]
    anymal-lit validate -c experiments/demo/align_image.yaml --ckpt_path runs/.../last.ckpt
    anymal-lit predict -c experiments/demo/align_image.yaml --ckpt_path runs/.../last.ckpt \
        --data.init_args.predict_file questions.jsonl [--predictions.path out.jsonl] [--predictions.max_new_tokens 64]
    anymal-lit list                      # encoders, projectors, stages, data modules, callbacks, presets
    anymal-lit toyworld --out runs/toyworld
    anymal-lit tiny-lm --out anymal_lit/toyworld/assets/tiny-lm   # retrain the tiny LM the toy world ships
    anymal-lit demo                      # toy world -> align -> SFT -> DPO -> scorecard
    anymal-lit convert vqav2 --questions q.json --annotations a.json --images val2014/ --out vqav2_val.jsonl
    anymal-lit convert webdataset --records train.jsonl --out shards/train-%06d.tar   # JSONL + media -> tar shards
    anymal-lit consolidate runs/.../checkpoints/last.ckpt merged.ckpt   # FSDP sharded checkpoint -> one file
    anymal-lit chat --model runs/demo/dpo/checkpoints/export            # talk to a trained model in the terminal
    anymal-lit cache-features -c experiments/demo/align.yaml            # frozen-encoder features to data.feature_cache
    anymal-lit serve --model runs/demo/bundle --port 8000               # OpenAI-compatible server
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from anymal_lit.commands import COMMANDS, overview, run_command

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)
"""Errors a user's input causes (bad file, bad record, bad option): one line and exit code 2 without ``--debug``."""


def __getattr__(name: str) -> Any:
    if name == "AnyMALCLI":  # lazily: `anymal-lit --help` and the kit commands do not import Lightning
        from anymal_lit.lightning_cli import AnyMALCLI

        return AnyMALCLI
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        _run(args)
    except USER_ERRORS as err:
        if debug:
            raise
        command = args[0] if args else ""
        print(f"anymal-lit {command}: error: {err} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(overview())
    elif args[0] in COMMANDS:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        run_command(args[0], args[1:])
    else:
        from anymal_lit.lightning_cli import AnyMALCLI

        AnyMALCLI(args=args)


if __name__ == "__main__":
    main()
