"""Run under `torchrun --nproc_per_node 2`: a streamed mixture (two WebDataset children and a JSONL one) on 2
data-parallel processes, without a trainer (the replica is the process's rank).

Usage: streamed_mixture_ddp.py WORLD CAPTION_SHARDS SFT_SHARDS OUT.json
Rank 0 writes to OUT.json, for every rank: the replica it read as, its rows of epoch 0, and its rows of epoch 0 when
its loader is rebuilt from the state saved after 2 batches (a resumed run).
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from anymal_lit.collectives import all_gather_objects
from anymal_lit.data import ConversationDataModule, MixtureDataModule, WebDataModule
from anymal_lit.encoders import IMUEncoder, OpenCLIPImageEncoder

dist.init_process_group("gloo")
world, caption, sft, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
models = world / "models"
processors = {
    "image": OpenCLIPImageEncoder(model_name=f"local-dir:{models / 'tiny-clip'}").media_processor(),
    "imu": IMUEncoder(pretrained=str(models / "tiny-imu")).media_processor(),
}
tokenizer = ConversationDataModule(tokenizer=str(models / "tiny-lm")).tokenizer


def loader():
    datasets = {
        "caption": WebDataModule(train_shards=caption, samples_per_epoch=64, shuffle_buffer=8),
        "sft": WebDataModule(train_shards=sft, samples_per_epoch=64, shuffle_buffer=8, seed=5),
        "mix": ConversationDataModule(train_file=str(world / "interleaved_train.jsonl")),
    }
    data = MixtureDataModule(datasets, weights={"caption": 2, "sft": 1, "mix": 1}, samples_per_epoch=48, batch_size=4)
    data.bind(tokenizer, processors, {"image": "<image>", "imu": "<imu>"})
    return data.train_dataloader()


full_loader = loader()
full = [i for batch in full_loader for i in batch["ids"]]
cut = loader()
it = iter(cut)
head = [i for _ in range(2) for i in next(it)["ids"]]
state = cut.state_dict()
del it, cut
resumed = loader()
resumed.load_state_dict(state)
rest = [i for batch in resumed for i in batch["ids"]]
mine = {"rank": dist.get_rank(), "replica": full_loader.dataset.rank, "full": full, "resumed": head + rest}
everyone = all_gather_objects(mine)
if dist.get_rank() == 0:
    out.write_text(json.dumps(everyone))
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
