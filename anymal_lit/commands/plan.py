"""``anymal-lit plan -c EXPERIMENT --devices N``: per-GPU memory of an experiment under every sharding preset.

Builds the experiment's model on the meta device (no weights are read; a hub LLM name needs a cached config or one
of the architectures the kit states, e.g. the Llama-2 chat models) and prints, per preset in ``conf/strategy``, the
GiB each rank holds for parameters, gradients, optimizer state, gathered (unsharded) units and activations of the
configured per-GPU batch, with and without activation checkpointing, and whether the total fits ``--gpu-memory``.
"""

from __future__ import annotations

import argparse

HELP = "per-GPU memory of an experiment under each sharding preset (meta device: no weights read)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="the experiment YAML (e.g. experiments/.../align.yaml)")
    parser.add_argument("--devices", type=int, required=True, help="GPUs per node")
    parser.add_argument("--nodes", type=int, default=1, help="nodes")
    parser.add_argument("--gpu-memory", default="80GiB", help="memory of one GPU (80GiB, 141GB, 24GiB ...)")
    parser.add_argument("--strategies", default="conf/strategy", help="folder of strategy presets")
    parser.add_argument("--llm", help="an LLM preset (conf/llms/*.yaml) replacing the experiment's; the projectors "
                        "are resized to its hidden size")  # fmt: skip
    parser.add_argument("--batch-size", type=int, help="rows per GPU (default: the data module's batch_size)")
    parser.add_argument("--text-tokens", type=int, help="text tokens per row (default: data max_length, else 256)")
    parser.add_argument("--seq-len", type=int, help="tokens per row after media expansion (default: text tokens + "
                        "the longest media item at the encoders' piece limits)")  # fmt: skip


def parse_size(text: str) -> int:
    """``80GiB`` / ``141GB`` / ``24g`` -> bytes."""
    units = {"gib": 1 << 30, "gb": 10**9, "g": 1 << 30, "mib": 1 << 20, "mb": 10**6, "tib": 1 << 40, "tb": 10**12}
    low = text.strip().lower()
    for unit in sorted(units, key=len, reverse=True):
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * units[unit])
    raise ValueError(f"--gpu-memory {text!r}: give a size such as 80GiB or 141GB")


def run(args: argparse.Namespace) -> None:
    from anymal_lit.memory_plan import plan

    print(
        plan(
            args.config, args.devices, args.nodes, parse_size(args.gpu_memory), args.strategies,
            batch_size=args.batch_size, text_tokens=args.text_tokens, seq_len=args.seq_len, llm=args.llm,
        )
    )  # fmt: skip
