"""Token-budget batches vs fixed-size batches at equal peak memory, on the toy world's four-modality mixture.

    python benchmarks/token_budget.py [--world runs/toyworld] [--batch-size 16] [--steps 12]     (make bench)

Fixed-size batches of ``--batch-size`` rows are drawn from the alignment mixture (image, audio, video, IMU captions);
their largest padded batch (rows x longest row, tokens after media expansion) sets the memory peak. Token-budget
batches (``MixtureDataModule(max_tokens=...)``) get that peak as their budget (lowered until their own largest
padded batch, measured on the real rows, is no larger), so both peak at the same activation size. Both then train
(alignment steps: projectors train) over the same number of rows. Reported: padding fraction (padded tokens that are
not real), samples/s, the largest padded batch and the largest saved-activation bytes of a step of each.

Adds ``token_budget_*`` keys to ``runs/bench/results.json`` (written by ``train_throughput.py`` first) and writes
``runs/bench/token_budget.md``. Needs the toy world (``anymal-lit toyworld``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

from anymal_lit.memory_plan import saved_tensor_bytes  # noqa: E402


def row_lengths(batch: dict, tokens_per_piece: dict[str, int], placeholder_ids: dict[str, int]) -> list[int]:
    """Tokens of each row after media expansion, from the batch alone (no encoding)."""
    counts = {m: iter(item["counts"].tolist()) for m, item in batch.get("media", {}).items()}
    by_id = {tok: m for m, tok in placeholder_ids.items()}
    out = []
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        n = 0
        for tok, keep in zip(ids, mask):
            if keep:
                n += tokens_per_piece[by_id[tok]] * next(counts[by_id[tok]]) if tok in by_id else 1
        out.append(n)
    return out


def padding(batches: list[dict], tpp: dict[str, int], placeholders: dict[str, int]) -> tuple[float, int, int]:
    """(padding fraction, largest padded batch, rows) of ``batches``."""
    real = padded = peak = rows = 0
    for batch in batches:
        lengths = row_lengths(batch, tpp, placeholders)
        real, rows = real + sum(lengths), rows + len(lengths)
        padded += len(lengths) * max(lengths)
        peak = max(peak, len(lengths) * max(lengths))
    return 1 - real / padded, peak, rows


def train(model, batches: list[dict]) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    peak_saved = 0

    def step(batch: dict) -> None:
        nonlocal peak_saved
        loss, saved = saved_tensor_bytes(lambda: model(batch)["loss"], model.parameters())
        peak_saved = max(peak_saved, saved)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = time.perf_counter() - start
    rows = sum(len(b["ids"]) for b in batches)
    return {"samples_per_s": rows / seconds, "seconds": seconds, "rows": rows, "peak_saved_bytes": peak_saved}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="fixed-size batches trained (budget: as many rows)")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    world, start = Path(args.world), time.time()
    model = tt.build_model(world, packing_length=None)
    model.requires_grad_(False)
    model.projectors.requires_grad_(True)
    placeholders = model.llm.placeholder_ids

    fixed = list(tt.mixture(world, model, None, args.batch_size, args.steps).train_dataloader())
    with torch.no_grad():  # LLM tokens per media piece, per modality (what `media_tokens` should say)
        tpp = {}
        for batch in fixed:
            for m, tokens in model.project_media(batch.get("media", {})).items():
                pieces = batch["media"][m]["counts"].tolist()
                tpp.setdefault(m, tokens[0].shape[0] // pieces[0])
    fixed_padding, fixed_peak, rows = padding(fixed, tpp, placeholders)

    def budget_batches(max_tokens: int) -> list[dict]:
        data = tt.mixture(world, model, None, args.batch_size, args.steps)
        data.max_tokens = max_tokens
        for child in data.datasets.values():
            child.media_tokens = {m: t for m, t in tpp.items()}  # x1 piece: the typical item
        return list(data.train_dataloader())

    max_tokens = fixed_peak
    for _ in range(5):  # the budget works on length estimates; lower it until the real peak is no higher
        budget = budget_batches(max_tokens)
        budget_padding, budget_peak, _ = padding(budget, tpp, placeholders)
        if budget_peak <= fixed_peak:
            break
        max_tokens = int(max_tokens * fixed_peak / budget_peak) - 1
    fixed_run, budget_run = train(model, fixed), train(model, budget)
    results = {
        "token_budget_padding_fraction": budget_padding,
        "token_budget_fixed_padding_fraction": fixed_padding,
        "token_budget_samples_per_s": budget_run["samples_per_s"],
        "token_budget_fixed_samples_per_s": fixed_run["samples_per_s"],
        "token_budget_speedup_vs_fixed": budget_run["samples_per_s"] / fixed_run["samples_per_s"],
        "token_budget_peak_padded_tokens": budget_peak,
        "token_budget_fixed_peak_padded_tokens": fixed_peak,
        "token_budget_peak_saved_bytes": budget_run["peak_saved_bytes"],
        "token_budget_fixed_peak_saved_bytes": fixed_run["peak_saved_bytes"],
        "token_budget_max_tokens": max_tokens,
        "token_budget_batches": len(budget),
        "token_budget_fixed_batches": len(fixed),
        "token_budget_rows": {"fixed": fixed_run["rows"], "budget": budget_run["rows"]},
        "token_budget_wall_s": time.time() - start,
    }
    table = [
        f"four-modality mixture, fixed batches of {args.batch_size} vs max_tokens={max_tokens} (equal peak)",
        "",
        "| batching | batches | rows | padding fraction | samples/s | peak padded tokens | peak saved MB |",
        "|---|---|---|---|---|---|---|",
        f"| fixed {args.batch_size} | {len(fixed)} | {fixed_run['rows']} | {fixed_padding:.3f} | "
        f"{fixed_run['samples_per_s']:.1f} | {fixed_peak} | {fixed_run['peak_saved_bytes'] / 2**20:.0f} |",
        f"| token budget | {len(budget)} | {budget_run['rows']} | {budget_padding:.3f} | "
        f"{budget_run['samples_per_s']:.1f} | {budget_peak} | {budget_run['peak_saved_bytes'] / 2**20:.0f} |",
    ]
    tt.add_results(args.out, results, "token_budget.md", table)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
