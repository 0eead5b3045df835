"""Run under `torchrun --nproc_per_node 2`: `anymal-lit predict` (the real CLI class) on 2 CPU processes, twice.

Usage: predict_ddp.py CONFIG OUT_DIR
``sharded``: Lightning's predict sampler, uneven interleaved shards (rank 0 takes records 0, 2, 4, ...).
``everyone``: no distributed sampler, so each process generates every record (each arrives twice).
Rank 0 writes OUT_DIR/result.json: per run, the predictions file and the writer's counts.
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from anymal_lit.callbacks import PredictionWriter
from anymal_lit.lightning_cli import AnyMALCLI

config, out_dir = sys.argv[1], Path(sys.argv[2])
ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
result = {}
for name, extra in (("sharded", []), ("everyone", ["--trainer.use_distributed_sampler", "false"])):
    path = out_dir / f"{name}.jsonl"
    cli = AnyMALCLI(args=["predict", "-c", config, *ddp, *extra, "--predictions.path", str(path)])
    writer = next(c for c in cli.trainer.callbacks if isinstance(c, PredictionWriter))
    result[name] = {"path": str(writer.written), "counts": writer.counts, "world_size": dist.get_world_size()}
if dist.get_rank() == 0:
    (out_dir / "result.json").write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
