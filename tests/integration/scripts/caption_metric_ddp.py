"""Run under `torchrun --nproc_per_node 2`: each rank scores its share; writes the gathered scores as JSON."""

import json
import os
import sys

import torch.distributed as dist

from anymal_lit.metrics import CaptionMetric

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
data = json.loads(open(sys.argv[1]).read())
ids = sorted(data["predictions"])
mine = ids[rank::world]
metric = CaptionMetric(with_meteor=False)
metric.update(mine, [data["predictions"][k] for k in mine], [data["references"][k] for k in mine])
scores = metric.compute()
if rank == 0:
    with open(sys.argv[2], "w") as f:
        json.dump(scores, f)
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
