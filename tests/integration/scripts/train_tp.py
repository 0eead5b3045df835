"""Run under `torchrun --nproc_per_node N` (or plain python for 1 process): a few alignment or SFT steps of a tiny
random four-layer Llama + IMU encoder + resampler on synthetic batches, with FSDP2 x tensor parallelism.

Usage: train_tp.py OUT.json --stage {align,sft} --tp T [--steps S]
Rank 0 writes the mean loss of every step, the LLM's parameter bytes on this rank and in all, and the exported
projector / LoRA tensors (whole). One process runs without a strategy (the reference).
"""

import argparse
import json
import os
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit import AnyMALModel, CausalLM
from anymal_lit.encoders.imu import IMUEncoder, IMUEncoderConfig
from anymal_lit.memory_plan import Activations, Strategy, rank_memory
from anymal_lit.models.lora import LoRASettings
from anymal_lit.planning import MetaModel
from anymal_lit.projectors import PerceiverResampler
from anymal_lit.stages import AlignmentStage, OptimizerSettings, SFTStage
from anymal_lit.strategies import decoder_layers, local_bytes
from anymal_lit.tensor_parallel import FSDPTPStrategy

REPO = Path(__file__).resolve().parents[3]
LM = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 296,
      "max_position_embeddings": 256}  # fmt: skip

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--stage", choices=["align", "sft"], default="align")
parser.add_argument("--tp", type=int, default=1)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--batches", type=int, default=6, help="synthetic batches (split across data-parallel ranks)")
parser.add_argument("--ckpt-dir", type=Path, help="checkpoint after every step here")
parser.add_argument("--stop-at", type=int, help="interrupt after this step (a killed job)")
parser.add_argument("--resume", help="checkpoint to resume from")
args = parser.parse_args()
world = int(os.environ.get("WORLD_SIZE", 1))


class Record(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.ids: dict[int, list[str]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
        self.losses[trainer.global_step] = float(loss)
        self.ids[trainer.global_step] = list(batch["ids"])
        if args.stop_at is not None and trainer.global_step >= args.stop_at:
            raise KeyboardInterrupt  # killed mid-epoch, before this step's checkpoint


def batches(llm: CausalLM) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(args.batches):
        ids = torch.randint(10, 250, (2, 24), generator=g)
        ids[:, 1] = llm.placeholder_ids["imu"]
        pieces = torch.randn(2, 6, 32, generator=g)
        media = {"imu": {"pieces": pieces, "counts": torch.ones(2, dtype=torch.long)}}
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
                    "ids": [f"b{b}r0", f"b{b}r1"], "media": media})  # fmt: skip
    return out


L.seed_everything(0)
llm = CausalLM(config=LM, tokenizer=str(REPO / "anymal_lit/toyworld/assets/tiny-lm"))
imu = IMUEncoder(config=IMUEncoderConfig(channels=6, window=32, width=32, layers=1, heads=2, stem_stride=4))
projector = PerceiverResampler(32, 64, num_latents=4, num_layers=1, num_heads=4, num_input_positions=8)
model = AnyMALModel(llm, {"imu": imu}, {"imu": projector})
if args.stage == "sft":
    stage = SFTStage(
        model,
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1),
        lora=LoRASettings(r=4, alpha=8, dropout=0.0),
        neftune_alpha=0.0,
    )
else:
    stage = AlignmentStage(model, optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1))
stage.write_export = lambda: None  # exports are checked through gathered tensors below
full_llm_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
# what `anymal-lit plan` says this rank holds of the LLM (FSDP2 x TP over `world` processes)
llm_only = MetaModel(llm.model, {}, {}, args.stage, layers=decoder_layers(llm.model))
planned = rank_memory(
    llm_only, Strategy("fsdp_tp", "fsdp_tp", None, args.tp), world, "32-true", Activations(0, 0, 0, 0, 0)
)
record = Record()
trainer = L.Trainer(
    accelerator="cpu",
    devices=world,
    strategy=FSDPTPStrategy(tensor_parallel_size=args.tp) if world > 1 else "auto",
    max_steps=args.steps,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=args.ckpt_dir is not None,
    callbacks=[
        record,
        *(
            [ModelCheckpoint(args.ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)]
            if args.ckpt_dir
            else []
        ),
    ],
)
data = batches(llm)
# in file order; a tensor-parallel group (ranks dp * tp .. dp * tp + tp - 1 of the mesh) shares one data-parallel shard
dp = world // args.tp
rank = int(os.environ.get("RANK", 0))
sampler = DistributedSampler(data, num_replicas=dp, rank=rank // args.tp, shuffle=False) if world > 1 else None
try:  # a stateful loader: a resumed run continues mid-epoch with the same batches
    trainer.fit(stage, StatefulDataLoader(data, batch_size=None, sampler=sampler), ckpt_path=args.resume)
except SystemExit:  # Lightning's graceful shutdown after the interrupt
    assert args.stop_at is not None

from anymal_lit.collectives import gathered_state  # noqa: E402

trainable = gathered_state({n: p for n, p in stage.model.named_parameters() if p.requires_grad})
result = {
    "losses": record.losses,
    "ids": record.ids,
    "llm_bytes": local_bytes(stage.model.llm.parameters()),
    "llm_bytes_full": full_llm_bytes,
    "llm_bytes_planned": planned.params,
    "trainable": {n: t.float().sum().item() for n, t in trainable.items()},
    "trainable_shapes": {n: list(t.shape) for n, t in trainable.items()},
    "last": str(args.ckpt_dir / "last.ckpt") if args.ckpt_dir else None,
}
if trainer.global_rank == 0:
    args.out.write_text(json.dumps(result))
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
os._exit(0)
