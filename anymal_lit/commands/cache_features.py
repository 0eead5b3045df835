"""``anymal-lit cache-features -c <experiment>.yaml``: encode every media file the experiment's data module reads
(train / val / test files, every dataset of a mixture) with the frozen encoders, into its ``feature_cache`` folder;
training then reads the features instead of decoding and encoding media. Takes the options of ``anymal-lit fit``."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "encode the media an experiment reads with its frozen encoders, into data.feature_cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "anymal-lit cache-features -c <experiment>.yaml [any option of anymal-lit fit]"


def run(args: argparse.Namespace) -> None:
    run_argv(args.argv)


def run_argv(argv: list[str]) -> None:
    """The command takes ``anymal-lit fit``'s options unparsed (LightningCLI parses them)."""
    print(json.dumps(cache_features(argv), indent=2))


def cache_features(argv: list[str]) -> dict[str, dict]:
    """Fill the feature cache of the experiment ``argv`` configures; per modality, what was encoded and reused."""
    from anymal_lit.data.feature_cache import FeatureCache
    from anymal_lit.data.mixture import MixtureDataModule
    from anymal_lit.lightning_cli import AnyMALCLI

    cli = AnyMALCLI(args=argv, run=False)
    model, data = cli.model.model, cli.datamodule
    modules = list(data.datasets.values()) if isinstance(data, MixtureDataModule) else [data]
    root = next((m.feature_cache for m in [data, *modules] if m.feature_cache), None)
    if root is None:
        print("anymal-lit cache-features: set data.init_args.feature_cache (a folder) in the config", file=sys.stderr)
        raise SystemExit(2)
    data.bind(model.llm.tokenizer, model.media_processors(), cli.model._placeholders())
    paths: dict[str, list[str]] = {}
    for module in modules:
        for path in filter(None, module.files.values()):
            for record in module.records(path, require_response=False):
                for modality, media in record.media:
                    paths.setdefault(modality, []).append(media)
    cache = FeatureCache(root)
    return {m: cache.fill(m, model.encoders[m], files) for m, files in paths.items() if m in model.encoders}
