"""Run under `torchrun --nproc_per_node 2`: a few SFT steps, then a few DPO steps from its export, with each strategy
in turn (one start-up for all: a launch pays the imports and the process-group start-up again).

Usage: sft_dpo_strategy.py WORLD STRATEGIES SFT.jsonl PREFERENCE.jsonl PREFERENCE_VAL.jsonl WORKDIR
STRATEGIES is a comma-separated list of ddp, fsdp, zero3; each strategy's files go to WORKDIR/<strategy>.
Batches are in file order (the same on every strategy); the test puts records with a corrupt image where rank 1's
second batch of each stage reads, so that batch arrives all skipped. DPO's preference evaluation before training
(DDP, FSDP2) reads PREFERENCE_VAL (an odd count of pairs: the ranks' shares differ by a batch) and writes
WORKDIR/<strategy>/scorecard.json.
Each rank writes WORKDIR/<strategy>/rank<r>.json: its loss of every step per stage, the ``train/skipped_records`` it saw
logged, and the export folders.
"""

import argparse
import json
import os
from pathlib import Path

import lightning.pytorch as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DistributedSampler

from anymal_lit.callbacks import PreferenceEvalCallback
from anymal_lit.data import ImageTextDataModule, PreferenceDataModule
from anymal_lit.models.lora import LoRASettings
from anymal_lit.stages import DPOStage, SFTStage
from anymal_lit.stages.optimization import OptimizerSettings
from anymal_lit.strategies import CPUDeepSpeedStrategy, FSDP2Strategy
from tests.conftest import build_model

parser = argparse.ArgumentParser()
parser.add_argument("world", type=Path)
parser.add_argument("strategies", type=lambda names: names.split(","))
parser.add_argument("sft", type=Path)
parser.add_argument("preference", type=Path)
parser.add_argument("preference_val", type=Path)
parser.add_argument("workdir", type=Path)
parser.add_argument("--sft-steps", type=int, default=4)
parser.add_argument("--dpo-steps", type=int, default=3)
args = parser.parse_args()


class Record(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.skipped: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])  # this rank's (0.0 for an all-skipped batch)

    def on_train_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("train/skipped_records")
        self.skipped = None if value is None else float(value)


def strategy(name: str):
    return {
        "ddp": lambda: "ddp",
        "fsdp": FSDP2Strategy,
        "zero3": lambda: CPUDeepSpeedStrategy(stage=3, process_group_backend="gloo", exclude_frozen_parameters=True),
    }[name]()


def fit(name: str, stage, data, steps: int, root: Path, *callbacks: Callback) -> Record:
    in_order = lambda dataset: DistributedSampler(dataset, shuffle=False)  # noqa: E731
    data.train_dataloader = lambda: data.dataloader(data.files["train"], data.batch_size, sampler=in_order)
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy(name),
        max_steps=steps,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record, *callbacks],
    )
    trainer.fit(stage, datamodule=data)
    return record


def run(name: str, workdir: Path) -> None:
    """SFT then DPO from its export under strategy ``name``; each rank's result to ``workdir/rank<r>.json``."""
    # dropout and NEFTune off: every strategy then computes the same function, so losses compare step by step
    L.seed_everything(0)
    sft = SFTStage(
        build_model(args.world),
        optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1),
        lora=LoRASettings(dropout=0.0),
        neftune_alpha=0.0,
    )
    sft_data = ImageTextDataModule(train_file=str(args.sft), batch_size=2, skip_bad_records=True)
    sft_record = fit(name, sft, sft_data, args.sft_steps, workdir / "sft")

    dist.barrier()  # rank 0 has written the SFT export that every rank's DPO stage starts from
    L.seed_everything(0)
    dpo = DPOStage(
        build_model(args.world),
        optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1),
        init_from=str(workdir / "sft" / "export"),
        lora=LoRASettings(dropout=0.0),
    )
    dpo_data = PreferenceDataModule(train_file=str(args.preference), batch_size=2, skip_bad_records=True)
    # not under ZeRO-3: evaluation callbacks call the module outside the DeepSpeed engine's forward, where ZeRO-3
    # does not gather parameters used outside their own module (nn.MultiheadAttention's out_proj in the image encoder)
    scores = PreferenceEvalCallback(str(args.preference_val), batch_size=2, scorecard=str(workdir / "scorecard.json"))
    scores = [] if name == "zero3" else [scores]
    dpo_record = fit(name, dpo, dpo_data, args.dpo_steps, workdir / "dpo", *scores)

    result = {
        stage: {"losses": record.losses, "skipped": record.skipped, "export": str(workdir / stage / "export")}
        for stage, record in (("sft", sft_record), ("dpo", dpo_record))
    }
    (workdir / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.barrier()


for name in args.strategies:
    run(name, args.workdir / name)
dist.destroy_process_group()
os._exit(0)  # gloo sometimes aborts at interpreter exit
