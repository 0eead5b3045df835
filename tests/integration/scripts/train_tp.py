"""Run under `torchrun --nproc_per_node N` (or plain python for 1 process): short alignment or SFT runs of a tiny
random four-layer Llama + IMU encoder + resampler on synthetic batches with FSDP2 x tensor parallelism, one after
another in the same process group (each run in its own process paid the imports and the start-up again).

Usage: train_tp.py JOBS.json
JOBS.json lists runs: {"out": OUT.json, "stage": "align"|"sft", "tp": T, "steps": S, "ckpt_dir": DIR|null,
"stop_at": N|null, "resume": CKPT|null, "lm": {config overrides}|null, "seq_len": L|null}. For each, rank 0 writes to
OUT.json the mean loss of every step, the LLM's parameter bytes on this rank and in all, the exported projector /
LoRA tensors (whole) and the wall time of each step. One process runs without a strategy (the reference).
benchmarks/tensor_parallel.py runs it on a larger LLM.
"""

import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit import AnyMALModel, CausalLM
from anymal_lit.collectives import gathered_state
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
BATCHES = 6  # synthetic batches (split across data-parallel ranks)
world = int(os.environ.get("WORLD_SIZE", 1))


class Record(Callback):
    def __init__(self, stop_at: int | None) -> None:
        self.stop_at = stop_at
        self.losses: dict[int, float] = {}
        self.ids: dict[int, list[str]] = {}
        self.step_s: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_s.append(time.perf_counter() - self._start)
        loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
        self.losses[trainer.global_step] = float(loss)
        self.ids[trainer.global_step] = list(batch["ids"])
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            raise KeyboardInterrupt  # killed mid-epoch, before this step's checkpoint


def batches(llm: CausalLM, seq_len: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(BATCHES):
        ids = torch.randint(10, 250, (2, seq_len), generator=g)
        ids[:, 1] = llm.placeholder_ids["imu"]
        pieces = torch.randn(2, 6, 32, generator=g)
        media = {"imu": {"pieces": pieces, "counts": torch.ones(2, dtype=torch.long)}}
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
                    "ids": [f"b{b}r0", f"b{b}r1"], "media": media})  # fmt: skip
    return out


def run(job: dict) -> None:
    tp, stop_at = job.get("tp", 1), job.get("stop_at")
    ckpt_dir = Path(job["ckpt_dir"]) if job.get("ckpt_dir") else None
    L.seed_everything(0)
    llm = CausalLM(config={**LM, **(job.get("lm") or {})}, tokenizer=str(REPO / "anymal_lit/toyworld/assets/tiny-lm"))
    imu = IMUEncoder(config=IMUEncoderConfig(channels=6, window=32, width=32, layers=1, heads=2, stem_stride=4))
    projector = PerceiverResampler(32, llm.hidden_size, num_latents=4, num_layers=1, num_heads=4, num_input_positions=8)
    model = AnyMALModel(llm, {"imu": imu}, {"imu": projector})
    if job["stage"] == "sft":
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
    llm_only = MetaModel(llm.model, {}, {}, job["stage"], layers=decoder_layers(llm.model))
    planned = rank_memory(
        llm_only, Strategy("fsdp_tp", "fsdp_tp", None, tp), world, "32-true", Activations(0, 0, 0, 0, 0)
    )
    record = Record(stop_at)
    checkpoints = [ModelCheckpoint(ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)] if ckpt_dir else []
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=FSDPTPStrategy(tensor_parallel_size=tp) if world > 1 else "auto",
        max_steps=job.get("steps", 3),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=ckpt_dir is not None,
        callbacks=[record, *checkpoints],
    )
    data = batches(llm, job.get("seq_len") or 24)
    # in file order; a tensor-parallel group (ranks dp * tp .. dp * tp + tp - 1 of the mesh) shares one data-parallel
    # shard
    dp = world // tp
    rank = int(os.environ.get("RANK", 0))
    sampler = DistributedSampler(data, num_replicas=dp, rank=rank // tp, shuffle=False) if world > 1 else None
    try:  # a stateful loader: a resumed run continues mid-epoch with the same batches
        trainer.fit(stage, StatefulDataLoader(data, batch_size=None, sampler=sampler), ckpt_path=job.get("resume"))
    except SystemExit:  # Lightning's graceful shutdown after the interrupt
        assert stop_at is not None

    trainable = gathered_state({n: p for n, p in stage.model.named_parameters() if p.requires_grad})
    result = {
        "losses": record.losses,
        "ids": record.ids,
        "llm_bytes": local_bytes(stage.model.llm.parameters()),
        "llm_bytes_full": full_llm_bytes,
        "llm_bytes_planned": planned.params,
        "trainable": {n: t.float().sum().item() for n, t in trainable.items()},
        "trainable_shapes": {n: list(t.shape) for n, t in trainable.items()},
        "last": str(ckpt_dir / "last.ckpt") if ckpt_dir else None,
        "step_s": record.step_s,
    }
    if trainer.global_rank == 0:
        Path(job["out"]).write_text(json.dumps(result))
    if dist.is_initialized():
        dist.barrier()


for spec in json.loads(Path(sys.argv[1]).read_text()):
    run(spec)
if dist.is_initialized():
    dist.destroy_process_group()
os._exit(0)
