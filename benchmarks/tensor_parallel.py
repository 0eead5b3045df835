"""FSDP2 x tensor parallelism on CPU processes (gloo): per-rank LLM bytes, loss agreement and step time.

    python benchmarks/tensor_parallel.py [--steps 6] [--hidden 512] [--layers 4] [--seq-len 128]     (make bench)

Runs ``tests/integration/scripts/train_tp.py`` (SFT steps with LoRA on a random Llama, an IMU encoder and a
resampler on synthetic batches) on a larger LLM than the tests use: one process without a strategy, then 1 x 2
(tensor parallel only) and 2 x 2 (data x tensor parallel, its reference 2-way data parallel in the same launch).
Reports the LLM bytes each rank holds as a share of the whole LLM (1/(dp x tp) for the split layers; norms and
LoRA's replicated halves stay whole), the largest relative loss difference to the reference, and the median step
time. On CPU over gloo every split layer's all-reduce is a socket round trip, so the step time measures the cost of
the collectives, not a speed-up: tensor parallelism is for an LLM too large for one GPU's memory.

Adds ``tp_*`` keys to ``runs/bench/results.json`` and writes ``runs/bench/tensor_parallel.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import REPO, add_results  # noqa: E402

SCRIPT = REPO / "tests/integration/scripts/train_tp.py"


def launch(processes: int, jobs: dict[str, dict], tmp: Path) -> dict[str, dict]:
    specs = [{"out": str(tmp / f"{name}.json"), **job} for name, job in jobs.items()]
    jobs_file = tmp / f"jobs_{processes}.json"
    jobs_file.write_text(json.dumps(specs))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*(launcher if processes > 1 else [sys.executable]), str(SCRIPT), str(jobs_file)]
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in jobs}


def max_rel_diff(run: dict, reference: dict) -> float:
    return max(abs(run["losses"][s] - loss) / abs(loss) for s, loss in reference["losses"].items())


def median_step(run: dict) -> float:
    return statistics.median(run["step_s"][1:])  # the first step pays the warm-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    lm = {
        "hidden_size": args.hidden, "intermediate_size": 3 * args.hidden, "num_hidden_layers": args.layers,
        "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": max(256, args.seq_len + 8),
    }  # fmt: skip
    job = {"stage": "sft", "steps": args.steps, "lm": lm, "seq_len": args.seq_len}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {
            **launch(1, {"one": job}, tmp),
            **launch(2, {"tp_1x2": {**job, "tp": 2}, "dp_2": {**job, "tp": 1}}, tmp),
            **launch(4, {"tp_2x2": {**job, "tp": 2}}, tmp),
        }
    # 1 x 2 reads every batch, as one process does; 2 x 2 splits them in two data-parallel replicas, as FSDP on 2 does
    one, tp12, dp2, tp22 = runs["one"], runs["tp_1x2"], runs["dp_2"], runs["tp_2x2"]
    results = {
        "tp_llm": lm,
        "tp_llm_bytes_full": one["llm_bytes_full"],
        "tp_llm_bytes_per_rank_fraction_1x2": tp12["llm_bytes"] / tp12["llm_bytes_full"],
        "tp_llm_bytes_per_rank_fraction_2x2": tp22["llm_bytes"] / tp22["llm_bytes_full"],
        "tp_llm_bytes_planned_vs_actual_2x2": tp22["llm_bytes_planned"] / tp22["llm_bytes"],
        "tp_loss_max_rel_diff_1x2_vs_one_process": max_rel_diff(tp12, one),
        "tp_loss_max_rel_diff_2x2_vs_fsdp_2": max_rel_diff(tp22, dp2),
        "tp_step_s_one_process": median_step(one),
        "tp_step_s_1x2": median_step(tp12),
        "tp_step_s_fsdp_2": median_step(dp2),
        "tp_step_s_2x2": median_step(tp22),
        "tp_steps": args.steps,
        "tp_seq_len": args.seq_len,
        "tp_wall_s": time.time() - start,
    }
    rows = [
        f"LLM: {lm} ({one['llm_bytes_full'] / 2**20:.1f} MiB), SFT with LoRA, batch 2 x {args.seq_len} tokens",
        "",
        "| layout | processes | LLM bytes per rank / whole LLM | median step s | max rel. loss diff |",
        "|---|---|---|---|---|",
        f"| one process | 1 | 1.000 | {results['tp_step_s_one_process']:.3f} | reference |",
        f"| 1 x 2 (TP) | 2 | {results['tp_llm_bytes_per_rank_fraction_1x2']:.3f} | {results['tp_step_s_1x2']:.3f} | "
        f"{results['tp_loss_max_rel_diff_1x2_vs_one_process']:.1e} |",
        f"| 2 x 1 (FSDP) | 2 | {dp2['llm_bytes'] / dp2['llm_bytes_full']:.3f} | {results['tp_step_s_fsdp_2']:.3f} | "
        "reference of 2 x 2 |",
        f"| 2 x 2 (FSDP x TP) | 4 | {results['tp_llm_bytes_per_rank_fraction_2x2']:.3f} | "
        f"{results['tp_step_s_2x2']:.3f} | {results['tp_loss_max_rel_diff_2x2_vs_fsdp_2']:.1e} |",
    ]
    add_results(args.out, results, "tensor_parallel.md", rows)


if __name__ == "__main__":
    main()
