"""`anymal-lit merge`: merge trained stage exports (or bundles) of one model (same LLM, encoders, projector shapes,
LoRA rank and targets) into a new export: weighted average or task arithmetic (linear; exact on LoRA updates, the
adapters are stacked, so the merged rank and alpha are the parents' times their number), TIES or DARE (against
--base, the export the parents were trained from; LoRA updates re-factored by a truncated SVD). The output is an
ordinary export (init_from, load_model, validate and chat take it); its export.json records the parents and weights.
With --sweep t1 t2 ... and -c EXPERIMENT.yaml it merges two exports with weights (1 - t, t) for each t, scores every
mix with the experiment's evaluation callbacks and writes one table (sweep.md, sweep.json, TensorBoard scalars
against 100 t) to --out."""

from __future__ import annotations

import argparse

HELP = "merge trained exports (interpolation, task arithmetic, TIES, DARE), or sweep and score an interpolation"
METHODS = ("linear", "ties", "dare_linear", "dare_ties")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exports", nargs="+", required=True, metavar="EXPORT",
                        help="stage exports (checkpoints/export) or bundles to merge; two with --sweep")  # fmt: skip
    parser.add_argument("--weights", nargs="+", type=float, metavar="W",
                        help="one weight per export, used as given (default: equal weights summing to 1)")  # fmt: skip
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=METHODS[0],
        help="linear: weighted sum (task arithmetic given --base); ties, dare_*: need --base",
    )
    parser.add_argument("--base", help="the export the parents were trained from (task vectors = parent - base)")
    parser.add_argument("--density", type=float, help="fraction of each task vector TIES / DARE keep (default 0.5)")
    parser.add_argument("--out", required=True, help="the merged export's folder (with --sweep: the sweep's folder)")
    parser.add_argument("--sweep", nargs="+", type=float, metavar="T",
                        help="weights t of the second export to score, e.g. 0 0.25 0.5 0.75 1")  # fmt: skip
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        help="with --sweep: the experiment YAML whose evaluation callbacks score each mix (repeatable)",
    )
    parser.add_argument(
        "--cli-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --sweep: an extra LightningCLI argument, e.g. --cli-arg=--trainer.limit_val_batches=2",
    )


def run(args: argparse.Namespace) -> None:
    extra = {"density": args.density} if args.density is not None else {}
    if args.sweep is not None:
        if args.weights:
            raise ValueError("--sweep sets the weights (1 - t, t); leave out --weights")
        from anymal_lit.inference.interpolation_sweep import sweep

        sweep(args.exports, args.sweep, args.config, args.out, args.method, args.base, cli_args=args.cli_arg, **extra)
        return
    if args.config:
        raise ValueError("-c is for --sweep (the merge itself needs no experiment)")
    from anymal_lit.inference.merging import write_merged_export

    weights = args.weights or [1.0 / len(args.exports)] * len(args.exports)
    out = write_merged_export(args.exports, weights, args.out, args.method, args.base, **extra)
    print(f"wrote the merged export {out}")
