"""Run under `torchrun --nproc_per_node 2`: each rank scores its share; rank 0 writes the gathered scores and what
the collectives of ``anymal_lit.collectives`` returned on it."""

import json
import os
import sys

import torch
import torch.distributed as dist

from anymal_lit import collectives
from anymal_lit.metrics import CaptionMetric, ChoiceMetric, VQAMetric

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
data = json.loads(open(sys.argv[1]).read())
out = {}
for name, metric in (("caption", CaptionMetric(with_meteor=False)), ("vqa", VQAMetric()), ("choice", ChoiceMetric())):
    ids = sorted(data[name]["predictions"])
    mine = ids[rank::world]
    metric.update(mine, [data[name]["predictions"][k] for k in mine], [data[name]["targets"][k] for k in mine])
    out[name] = metric.compute()
out["collectives"] = {
    "device": str(collectives.collective_device()),
    "objects": collectives.gather_objects([f"r{rank}a", f"r{rank}b"][: rank + 1]),
    "dicts": collectives.gather_dicts({f"k{rank}": rank, "shared": rank}),
    "sum": collectives.all_reduce_sum(torch.tensor([1.0, rank + 0.5], dtype=torch.float64)).tolist(),
    "max": collectives.all_reduce_max(10 + rank),
}
if rank == 0:
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
