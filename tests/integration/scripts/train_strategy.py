"""Run under `torchrun --nproc_per_node 2`: short alignment runs on the tiny world, one after another in the same
process group (each run in its own process would pay the imports and the process-group start-up again).

Usage: train_strategy.py WORLD JOBS.json
JOBS.json lists runs: {"strategy": "ddp"|"fsdp"|"zero3", "out": OUT.json, "ckpt_dir": DIR, "steps": N,
"stop_at": N|null, "resume": CKPT|null, "no_shuffle": bool, "mixture": bool}. For each, rank 0 writes to OUT.json the
mean loss of every step across ranks, rank 0's record ids of every step, the per-rank parameter and optimizer-state
bytes and the checkpoint path.
"""

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DistributedSampler

from anymal_lit.data import ImageTextDataModule, MixtureDataModule
from anymal_lit.stages import AlignmentStage
from anymal_lit.stages.optimization import OptimizerSettings
from anymal_lit.strategies import CPUDeepSpeedStrategy, FSDP2Strategy, local_bytes
from tests.conftest import build_model


class Record(Callback):
    def __init__(self, stop_at: int | None) -> None:
        self.stop_at = stop_at
        self.losses: dict[int, float] = {}
        self.ids: dict[int, list[str]] = {}
        self.bytes: dict[str, int] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
        self.losses[trainer.global_step] = float(loss)
        self.ids[trainer.global_step] = list(batch["ids"])  # rank 0's records
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            raise KeyboardInterrupt  # the job is killed mid-epoch, before this step's checkpoint

    def on_train_end(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim > 0]
        params = [getattr(p, "ds_tensor", p) for p in pl_module.parameters()]  # ZeRO-3 keeps the shard in ds_tensor
        self.bytes = {"params": local_bytes(params), "optimizer": local_bytes(state)}


def run(world: Path, job: dict) -> None:
    L.seed_everything(0)
    stage = AlignmentStage(build_model(world), optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1))
    data = ImageTextDataModule(train_file=str(world / "image_caption_train.jsonl"), batch_size=4)
    if job.get("mixture"):  # 32 rows per epoch: 4 steps of 4 rows per rank
        files = {"caption": "image_caption_train.jsonl", "sft": "image_sft_train.jsonl"}
        parts = {name: ImageTextDataModule(train_file=str(world / f)) for name, f in files.items()}
        data = MixtureDataModule(parts, weights={"caption": 2, "sft": 1}, samples_per_epoch=32, batch_size=4)
    if job.get("no_shuffle"):  # Lightning's own injected sampler would shuffle any training loader
        in_order = lambda dataset: DistributedSampler(dataset, shuffle=False)  # noqa: E731
        data.train_dataloader = lambda: data.dataloader(data.files["train"], data.batch_size, sampler=in_order)
    record = Record(job.get("stop_at"))
    ckpt_dir = Path(job["ckpt_dir"])
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)
    strategy = {
        "ddp": lambda: "ddp",
        "fsdp": FSDP2Strategy,
        "zero3": lambda: CPUDeepSpeedStrategy(stage=3, process_group_backend="gloo", exclude_frozen_parameters=True),
    }[job["strategy"]]()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=job["steps"],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record, checkpoint],
    )
    try:
        trainer.fit(stage, datamodule=data, ckpt_path=job.get("resume"))
    except SystemExit:  # Lightning's graceful shutdown after the interrupt
        assert job.get("stop_at") is not None
    if trainer.is_global_zero:
        last = str(ckpt_dir / "last.ckpt")
        result = {"losses": record.losses, "ids": record.ids, "bytes": record.bytes, "last": last}
        Path(job["out"]).write_text(json.dumps(result))
    dist.barrier()


world, jobs = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
for job in jobs:
    run(world, job)
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
