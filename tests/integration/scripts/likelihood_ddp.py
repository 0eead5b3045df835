"""Run under `torchrun --nproc_per_node 2`: LikelihoodEvalCallback on a tiny random model, each rank scoring its share
(one rank's last batch holds only a broken image, so it runs the placeholder forward); rank 0 writes the scores."""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from anymal_lit.callbacks.likelihood_eval import LikelihoodEvalCallback
from tests.unit.test_likelihood_eval import _evaluate, build_tiny

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
folder = Path(sys.argv[1]) / f"rank{rank}"
folder.mkdir(parents=True)
tiny = build_tiny(folder)
(folder / "broken.png").write_bytes(b"not a png")
lines = json.loads(Path(sys.argv[2]).read_text())
callback = LikelihoodEvalCallback("", name="memes", prompt="hateful_memes", batch_size=1)
scores, _ = _evaluate(tiny, folder, callback, lines, rank=rank, world=world, skip_bad_records=True)
if rank == 0:
    Path(sys.argv[3]).write_text(json.dumps(scores))
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
