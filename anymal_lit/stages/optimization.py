"""AdamW and its learning-rate schedule, the one home of every stage's optimisation settings."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW over the trainable parameters, with a linear warm-up to ``lr`` and then a decay to
    ``lr * min_lr_ratio`` at the last step (``Trainer.estimated_stepping_batches``).

    Each stage's default is the paper's recipe for it (AnyMAL appendix E.3): alignment and SFT decay with a cosine
    (SFT: 40 warm-up steps, then to 10 %), DPO linearly (20 warm-up steps, then to 2/3).

    Args:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Steps of linear warm-up (step ``s`` uses ``lr * (s + 1) / warmup_steps``).
        decay: Shape of the decay after the warm-up: ``cosine`` or ``linear``.
        min_lr_ratio: The learning rate at the last step, as a fraction of ``lr``.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    decay: Literal["cosine", "linear"] = "cosine"
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.decay not in ("cosine", "linear"):
            raise ValueError(f"optimizer.decay must be 'cosine' or 'linear', got {self.decay!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("optimizer: lr must be > 0, warmup_steps >= 0 and min_lr_ratio in [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for hyper-parameter logs and checkpoints that load with ``weights_only``)."""
        return {**asdict(self), "betas": list(self.betas)}


def lr_multiplier(step: int, total_steps: int, settings: OptimizerSettings) -> float:
    """The schedule's factor on ``lr`` at optimizer step ``step`` (0-based) of ``total_steps``.

    Written here rather than taken from ``transformers.optimization``: its linear schedule decays to 0 (the DPO
    recipe stops at 2/3) and its warm-up starts from an LR of 0, which wastes the first step.
    """
    warmup = settings.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if settings.decay == "cosine" else 1.0 - progress
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * shape


def build_optimizer(
    params: Iterable[torch.nn.Parameter], settings: OptimizerSettings, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` and its per-step schedule."""
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=tuple(settings.betas))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_multiplier(step, total_steps, settings))
