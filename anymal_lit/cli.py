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

import argparse
import json
import sys
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from anymal_lit.callbacks.prediction_writer import PredictionWriter
from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.inference.model_config import absolute_paths
from anymal_lit.stages.base import AnyMALStage

KIT_COMMANDS = ("list", "toyworld", "tiny-lm", "demo", "convert", "consolidate", "export", "chat", "serve")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)
"""Errors a user's input causes (bad file, bad record, bad option): one line and exit code 2 without ``--debug``."""


class AnyMALCLI(LightningCLI):
    """LightningCLI over any :class:`AnyMALStage` and any :class:`ConversationDataModule` (``class_path`` in YAML)."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            AnyMALStage,
            ConversationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # `add_arguments_to_parser` cannot tell the subcommands apart: the writer's options belong to predict only
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_lightning_class_args(PredictionWriter, "predictions")
        return parser

    def after_predict(self) -> None:
        # here, after the progress bar has closed, so the path is the last line
        writer = self._get(self.config_init, "predictions")
        if writer.written is not None:  # rank 0
            counts = writer.counts
            skipped = f" ({counts['skipped']} records skipped as bad)" if counts["skipped"] else ""
            print(f"wrote {counts['written']} predictions to {writer.written}{skipped}", flush=True)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # the stage's exports record the model as configured, so `load_model` can rebuild it without this YAML
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.get("model.init_args.model")
        if model is not None and hasattr(self.model, "model_config"):
            self.model.model_config = absolute_paths(_as_dict(model))
            data = config.get("data")
            self.model.data_config = absolute_paths(_as_dict(data)) if data is not None else None


def _as_dict(namespace: Any) -> dict[str, Any]:
    """A parsed config node as plain JSON data (jsonargparse's ``__path__`` bookkeeping dropped)."""

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, (list, tuple)):
            return [plain(v) for v in node]
        return node if node is None or isinstance(node, (str, int, float, bool)) else str(node)

    return plain(namespace.as_dict() if hasattr(namespace, "as_dict") else dict(namespace))


def _kit_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="anymal-lit")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list encoders, projectors, stages, data modules, callbacks and presets")
    p_list.add_argument("--conf", default="conf", help="folder of YAML presets")
    p_world = sub.add_parser("toyworld", help="generate the toy world and its tiny pretrained models")
    p_world.add_argument("--out", default="runs/toyworld")
    p_world.add_argument("--seed", type=int, default=0)
    p_world.add_argument("--force", action="store_true", help="rebuild even if an identical world exists")
    p_lm = sub.add_parser("tiny-lm", help="train the toy world's tiny LM from scratch (the one the kit ships)")
    p_lm.add_argument("--out", required=True, help="folder for the LM, its tokenizer and recipe.json")
    p_lm.add_argument("--seed", type=int, default=0)
    p_demo = sub.add_parser("demo", help="toy world -> alignment -> scorecard (what `make demo` runs)")
    p_demo.add_argument("--world", default="runs/toyworld")
    p_demo.add_argument("--out", default="runs/demo")
    p_demo.add_argument("--experiments", default="experiments/demo")
    p_conv = sub.add_parser(
        "convert", help="turn a benchmark's own files into the kit's JSONL records, or JSONL records into tar shards"
    )
    p_conv.add_argument("format", choices=["coco-captions", "vqav2", "mmbench", "audiocaps", "webdataset"])
    p_conv.add_argument("--out", required=True, help="JSONL to write (webdataset: a shard pattern, s/train-%%06d.tar)")
    p_conv.add_argument("--records", help="webdataset: the JSONL records (and their media) to pack")
    p_conv.add_argument("--maxcount", type=int, default=1000, help="webdataset: samples per shard")
    p_conv.add_argument("--images", help="image folder (MMBench: where decoded images go)")
    p_conv.add_argument("--csv", help="AudioCaps CSV")
    p_conv.add_argument("--audio", help="AudioCaps: folder of downloaded clips")
    p_conv.add_argument("--audio-pattern", default="{youtube_id}_{start_time}.wav")
    p_conv.add_argument("--captions", help="COCO captions JSON")
    p_conv.add_argument("--questions", help="VQAv2 questions JSON")
    p_conv.add_argument("--annotations", help="VQAv2 annotations JSON")
    p_conv.add_argument("--image-pattern", default="COCO_val2014_{image_id:012d}.jpg")
    p_conv.add_argument("--tsv", help="MMBench TSV")
    p_conv.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    p_cons = sub.add_parser("consolidate", help="merge a sharded (FSDP) checkpoint folder into one torch.save file")
    p_cons.add_argument("checkpoint", help="the distributed checkpoint folder (e.g. checkpoints/last.ckpt/)")
    p_cons.add_argument("out", help="single-file checkpoint to write")
    p_export = sub.add_parser(
        "export", help="a trained model as one self-contained folder (LLM, tokenizer, encoders, projectors, card)"
    )
    p_export.add_argument("--from", dest="source", required=True, help="a stage export (checkpoints/export)")
    p_export.add_argument("--out", required=True, help="the bundle folder to create")
    p_export.add_argument("--merge-lora", action="store_true", help="merge the LoRA adapters into the LLM's weights")
    p_export.add_argument("--scorecard", help="scorecard.json for the model card (default: the nearest above --from)")
    from anymal_lit.inference import terminal

    terminal.add_arguments(sub.add_parser("chat", help="chat with a trained model in the terminal"))
    p_serve = sub.add_parser("serve", help="an OpenAI-compatible HTTP server for a trained model (LitServe)")
    if argv[:1] == ["serve"]:  # its options import the serving stack: only when serving
        from anymal_lit.inference.server import add_arguments

        add_arguments(p_serve)
    args = parser.parse_args(argv)
    if args.command == "convert" and args.format not in ("audiocaps", "webdataset") and not args.images:
        parser.error(f"convert {args.format} needs --images")
    if args.command == "convert" and args.format == "webdataset" and not args.records:
        parser.error("convert webdataset needs --records")
    if args.command == "chat":
        terminal.main(args)
    elif args.command == "serve":
        from anymal_lit.inference.server import serve

        serve(args)
    elif args.command == "export":
        from anymal_lit.inference.bundle import export_bundle

        out = export_bundle(args.source, args.out, merge_lora=args.merge_lora, scorecard=args.scorecard)
        print(f"wrote {out}; chat with it: anymal-lit chat --model {out}")
    elif args.command == "consolidate":
        from anymal_lit.strategies import consolidate

        print(f"wrote {consolidate(args.checkpoint, args.out)}")
    elif args.command == "convert" and args.format == "webdataset":
        from anymal_lit.data.webdataset import write_shards

        shards = write_shards(args.records, args.out, args.maxcount, skip_bad_records=args.skip_bad)
        print(f"wrote {len(shards)} shard(s): {shards[0]} ... {shards[-1]}")
    elif args.command == "convert":
        from anymal_lit.data import benchmarks

        if args.format == "audiocaps":
            records = benchmarks.audiocaps_records(args.csv, args.audio, args.audio_pattern, skip_bad=args.skip_bad)
        elif args.format == "coco-captions":
            records = benchmarks.coco_caption_records(args.captions, args.images, skip_bad=args.skip_bad)
        elif args.format == "vqav2":
            records = benchmarks.vqa_records(
                args.questions, args.annotations, args.images, args.image_pattern, skip_bad=args.skip_bad
            )
        else:
            records = benchmarks.mmbench_records(args.tsv, args.images, skip_bad=args.skip_bad)
        print(f"wrote {len(records)} records to {benchmarks.write_jsonl(records, args.out)}")
    elif args.command == "list":
        from anymal_lit.catalog import render

        print(render(args.conf))
    elif args.command == "toyworld":
        from anymal_lit.toyworld import WorldSpec, build_world

        build_world(args.out, WorldSpec(seed=args.seed), force=args.force)
    elif args.command == "tiny-lm":
        from anymal_lit.toyworld import WorldSpec
        from anymal_lit.toyworld.world import build_tiny_lm

        recipe = build_tiny_lm(args.out, WorldSpec(seed=args.seed, tiny_lm="train"))
        print(json.dumps(recipe, indent=2))
    else:
        from anymal_lit.demo import run_demo

        run_demo(args.world, args.out, args.experiments)


def cache_features(args: list[str]) -> dict[str, dict]:
    """``anymal-lit cache-features -c <experiment>.yaml``: encode every media file the experiment's data module
    reads (train/val/test files, every dataset of a mixture) with the frozen encoders, into its ``feature_cache``."""
    from anymal_lit.data.feature_cache import FeatureCache
    from anymal_lit.data.mixture import MixtureDataModule

    cli = AnyMALCLI(args=args, run=False)
    model, data = cli.model.model, cli.datamodule
    modules = list(data.datasets.values()) if isinstance(data, MixtureDataModule) else [data]
    root = next((m.feature_cache for m in [data, *modules] if m.feature_cache), None)
    if root is None:
        raise SystemExit("cache-features: set data.init_args.feature_cache (a folder) in the config")
    data.bind(model.llm.tokenizer, model.media_processors(), cli.model._placeholders())
    paths: dict[str, list[str]] = {}
    for module in modules:
        for path in filter(None, module.files.values()):
            for record in module.records(path, require_response=False):
                for modality, media in record.media:
                    paths.setdefault(modality, []).append(media)
    cache = FeatureCache(root)
    return {m: cache.fill(m, model.encoders[m], files) for m, files in paths.items() if m in model.encoders}


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
    if args and args[0] == "cache-features":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        print(json.dumps(cache_features(args[1:]), indent=2))
    elif args and args[0] in KIT_COMMANDS:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        _kit_command(args)
    else:
        AnyMALCLI(args=args)


if __name__ == "__main__":
    main()
