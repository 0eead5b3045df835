"""`anymal-lit sample`: sampled replies of a trained model (export or bundle) to every prompt of a JSONL file,
written back row by row with a "samples" list: the on-policy raw material of preference data (label the samples
with a judge, then pair a good reply with a bad one for `anymal-lit fit` with a DPO stage)."""

from __future__ import annotations

import argparse

HELP = "sample several replies per prompt from a trained model (on-policy data for preference tuning)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a stage export (checkpoints/export) or a bundle")
    parser.add_argument("--data", required=True, help="JSONL of records (a final answer, if any, is ignored)")
    parser.add_argument("--out", required=True, help="JSONL to write: each row plus its samples")
    parser.add_argument("--media-root", help="folder media paths are relative to (default: the data file's)")
    parser.add_argument("--limit", type=int, help="sample the first N rows only")
    parser.add_argument("--num-samples", type=int, default=4, help="replies per prompt (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest reply (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per generate call (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.inference.sampling import write_samples

    out = write_samples(
        args.model,
        args.data,
        args.out,
        media_root=args.media_root,
        limit=args.limit,
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(out)
