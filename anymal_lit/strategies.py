"""Sharded data parallelism by config: FSDP2 (``fully_shard``) on Lightning's ``ModelParallelStrategy``.

``conf/strategy/fsdp.yaml`` selects :class:`FSDP2Strategy`; the stage's ``configure_model`` then calls
:func:`shard_fsdp2`, which wraps every decoder layer of the LLM as its own unit and the whole AnyMAL model as the
root unit, so one ``forward`` runs encoder -> projector -> embeddings -> LLM under a single root. FSDP2 shards per
parameter, so frozen encoders, the frozen LLM and trainable projectors/LoRA can share units (FSDP1's "uniform
requires_grad" error does not arise). It runs on CPU (gloo) as on GPU (nccl); Lightning's FSDP1 strategy does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy
from torch import nn

from anymal_lit.collectives import full_tensor, gathered_state

__all__ = [
    "CPUDeepSpeedStrategy",
    "FSDP2Strategy",
    "consolidate",
    "decoder_layers",
    "full_tensor",
    "gathered_state",
    "local_bytes",
    "shard_fsdp2",
]


class FSDP2Strategy(ModelParallelStrategy):
    """Pure sharded data parallelism: every process of every node is one data-parallel shard (no tensor
    parallelism). Keyword arguments go to :class:`~lightning.pytorch.strategies.ModelParallelStrategy`
    (``save_distributed_checkpoint``, ``process_group_backend``, ``timeout``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        """Load a sharded checkpoint that holds only the trainable tensors (the stages drop frozen weights on save;
        Lightning's loader asks for every tensor of the model and fails on the frozen ones)."""
        path = Path(self.broadcast(checkpoint_path))
        if not path.is_dir():
            return super().load_checkpoint(checkpoint_path, weights_only)
        from torch.distributed.checkpoint import load
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        module = self.model
        trainable = {name for name, p in module.named_parameters() if p.requires_grad}
        state = {k: v for k, v in get_model_state_dict(module).items() if k in trainable}
        load({"state_dict": state}, checkpoint_id=path)
        module.load_state_dict(state, strict=False)
        for idx, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{idx}"
            optim_state = {key: get_optimizer_state_dict(module, optimizer)}
            load(optim_state, checkpoint_id=path)
            options = StateDictOptions(cpu_offload=True)
            set_optimizer_state_dict(module, optimizer, optim_state_dict=optim_state[key], options=options)
        metadata = torch.load(path / "meta.pt", weights_only=weights_only)
        metadata["state_dict"] = state  # seen by the stage's on_load_checkpoint
        return metadata


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of an HF causal LM (the classes it names in ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(model).__name__} does not name its decoder layer classes (_no_split_modules)")
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_fsdp2(model: nn.Module, llm: nn.Module, mesh: Any, mixed_precision: Any = None) -> None:
    """``fully_shard`` each decoder layer of ``llm``, then ``model`` as the root unit (in place)."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {"mesh": mesh, **({"mp_policy": mixed_precision} if mixed_precision is not None else {})}
    for layer in decoder_layers(llm):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)


def local_bytes(tensors: Any) -> int:
    """Bytes held by this process for ``tensors`` (the local shard of a DTensor)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def consolidate(checkpoint: str | Path, out: str | Path) -> Path:
    """Merge a distributed (sharded) checkpoint folder written under FSDP2 into one ``torch.save`` file.

    Lightning's own consolidation CLI reads only FSDP1 checkpoints; this uses PyTorch's ``dcp_to_torch_save``. The
    result holds the stage's trainable tensors (``state_dict``), optimizer and loop state, like a DDP checkpoint.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"not a distributed checkpoint folder: {checkpoint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    dcp_to_torch_save(checkpoint, out)
    merged = torch.load(out, weights_only=False)
    optimizers = sorted(k for k in merged if k.startswith("optimizer_"))
    merged["optimizer_states"] = [merged.pop(k) for k in optimizers]
    meta = checkpoint / "meta.pt"  # Lightning keeps loops, callbacks, schedulers and hparams beside the shards
    if meta.is_file():
        merged.update(torch.load(meta, weights_only=False))
    torch.save(merged, out)
    return out


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes (gloo) — **CPU-only, for tests and laptops**; on GPUs use Lightning's
    ``DeepSpeedStrategy`` (``conf/strategy/deepspeed_zero{2,3}.yaml``), which this only relaxes.

    Lightning refuses DeepSpeed without CUDA, and passes the CUDA device index as DeepSpeed's device rank; this
    subclass skips that check and passes the local rank instead. Nothing else changes, so ZeRO partitioning,
    checkpoints and resume are DeepSpeed's own. A GPU run adds fused CUDA kernels, bf16 and NCCL collectives.
    """

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # DeepSpeedStrategy's override only adds the CUDA check

    def setup_distributed(self) -> None:
        # as DeepSpeedStrategy, minus the check that every process owns a CUDA device index
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model: nn.Module, optimizer: Any, lr_scheduler: Any = None) -> Any:
        import argparse

        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer
