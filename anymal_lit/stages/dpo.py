"""Stage 3, preference tuning: conservative DPO against the frozen SFT model."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from anymal_lit.collectives import gather_dicts
from anymal_lit.losses import dpo_loss, sequence_logps
from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import REFERENCE_ADAPTER, add_reference_adapter
from anymal_lit.stages.sft import SFTStage

REFERENCE_MODES = ("adapter", "precomputed")


class DPOStage(SFTStage):
    """Conservative DPO (AnyMAL section 3.3): the policy is the SFT model with its LoRA adapters still training; the
    reference is the SFT model frozen (base + SFT LoRA, *not* ``disable_adapter()``, which would be the base LLM).

    Two ways to get the reference log-probs:

    * ``reference="adapter"``: a frozen copy of the SFT adapter (and of the projectors, if they train) lives beside
      the policy's on the same frozen base model; one extra no-grad forward per step, no second LLM in memory.
    * ``reference="precomputed"``: one pass over the training set before the first step computes them (policy ==
      reference then) and stores them in ``reference_logps.json`` in the export folder; training then needs no
      reference forward at all.

    Loss per pair (``anymal_lit.losses.dpo_loss``): ``-(1-eps) log sigma(beta h) - eps log sigma(-beta h)``, with
    sequence log-probs summed over response tokens. Schedule: linear warm-up (paper: 20 steps), then linear decay to
    ``final_lr_ratio`` (paper: 2/3) of the peak LR (paper: 1e-5).

    Args:
        model: The AnyMAL model.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps.
        final_lr_ratio: The LR decays linearly to ``lr * final_lr_ratio`` at the last step.
        init_from: Export of the SFT stage (projectors + LoRA).
        beta: DPO temperature (strength of the implicit KL penalty).
        label_smoothing: cDPO's eps, the assumed rate of flipped preference labels (paper: 0.05).
        reference: ``adapter`` or ``precomputed`` (see above).
        lora_r: LoRA rank (must match the SFT export).
        lora_alpha: LoRA alpha (must match the SFT export).
        lora_dropout: Dropout on the LoRA branch.
        lora_target_modules: peft ``target_modules`` (must match the SFT export).
        train_projectors: Also train the projectors (frozen by default: it kept task scores stable on the toy world).
    """

    stage_name = "dpo"

    def __init__(
        self,
        model: AnyMALModel,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 20,
        final_lr_ratio: float = 2 / 3,
        init_from: str | None = None,
        beta: float = 0.1,
        label_smoothing: float = 0.05,
        reference: str = "adapter",
        lora_r: int = 8,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: str | list[str] = "all-linear",
        train_projectors: bool = False,
    ) -> None:
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
        super().__init__(
            model, lr, weight_decay, betas, warmup_steps, final_lr_ratio, init_from,
            lora_r, lora_alpha, lora_dropout, lora_target_modules, neftune_alpha=0.0,
            train_projectors=train_projectors,
        )  # fmt: skip
        self.beta, self.label_smoothing, self.reference = beta, label_smoothing, reference
        self.final_lr_ratio = final_lr_ratio
        self.reference_logps: dict[str, tuple[float, float]] = {}
        self.reference_projectors = None
        if reference == "adapter":
            add_reference_adapter(self.model.llm)
            if train_projectors:
                self.reference_projectors = copy.deepcopy(self.model.projectors).requires_grad_(False)
            self.configure_trainable()

    def lr_multiplier(self, step: int, total_steps: int) -> float:
        warmup, final = self.hparams.warmup_steps, self.final_lr_ratio
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return 1.0 - (1.0 - final) * min(1.0, (step - warmup) / max(1, total_steps - warmup))

    def configure_trainable(self) -> None:
        super().configure_trainable()
        for name, param in self.model.llm.model.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name:
                param.requires_grad_(False)

    @contextmanager
    def _as_reference(self):
        """Swap in the reference adapter (and projectors) for a no-grad forward."""
        peft_model = self.model.llm.model
        policy_projectors = self.model.projectors
        peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
        if self.reference_projectors is not None:
            self.model.projectors = self.reference_projectors
        try:
            yield
        finally:
            self.model.projectors = policy_projectors
            peft_model.set_adapter("default")
            self.configure_trainable()

    def _logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(batch, pack=False)  # per-row sequence log-probs
        logps = sequence_logps(out["logits"], out["labels"])
        n = batch["num_pairs"]
        return logps[:n], logps[n:]

    def _reference_logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reference == "precomputed":
            pairs = [self.reference_logps[str(i)] for i in batch["ids"][: batch["num_pairs"]]]
            ref = torch.tensor(pairs, device=self.device, dtype=torch.float32)
            return ref[:, 0], ref[:, 1]
        with torch.no_grad(), self._as_reference():
            return self._logps(batch)

    def _dpo_step(self, batch: dict[str, Any], split: str) -> torch.Tensor | None:
        if "input_ids" not in batch:
            return None
        policy_c, policy_r = self._logps(batch)
        ref_c, ref_r = self._reference_logps(batch)
        losses, reward_c, reward_r = dpo_loss(policy_c, policy_r, ref_c, ref_r, self.beta, self.label_smoothing)
        loss = losses.mean()
        n = batch["num_pairs"]
        sync = split != "train"
        self.log(f"{split}/dpo_loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{split}/reward_accuracy", (reward_c > reward_r).float().mean(), batch_size=n, sync_dist=sync)
        self.log(f"{split}/rewards_chosen", reward_c.mean(), batch_size=n, sync_dist=sync)
        self.log(f"{split}/rewards_rejected", reward_r.mean(), batch_size=n, sync_dist=sync)
        self.log(f"{split}/reward_margin", (reward_c - reward_r).mean(), batch_size=n, sync_dist=sync)
        preference = (policy_c.detach() > policy_r.detach()).float().mean()
        self.log(f"{split}/preference_accuracy", preference, batch_size=n, sync_dist=sync)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch, skipped = self.batch_to_train(batch)
        if not skipped:
            return self._dpo_step(batch, "train")
        # this rank's batch was all skipped: the forwards of a step (policy, then the reference adapter's, which
        # sharded strategies gather parameters for too) at zero weight, so every rank joins the same collectives
        policy_c, policy_r = self._logps(batch)
        if self.reference == "adapter":
            self._reference_logps(batch)
        return (policy_c.sum() + policy_r.sum()) * 0.0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._dpo_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._dpo_step(batch, "test")

    # ---- precomputed reference ---------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.reference == "precomputed" and not self.reference_logps:
            self.reference_logps = self.precompute_reference_logps()

    @torch.no_grad()
    def precompute_reference_logps(self) -> dict[str, tuple[float, float]]:
        """One pass over the training set with the initial (= reference) weights; gathered from every process."""
        was_training = self.training
        self.eval()
        loader = self.trainer.datamodule.train_dataloader()
        table: dict[str, tuple[float, float]] = {}
        for batch in loader:
            if "input_ids" not in batch:
                continue
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            chosen, rejected = self._logps(batch)
            for rid, c, r in zip(batch["ids"][: batch["num_pairs"]], chosen.tolist(), rejected.tolist()):
                table[str(rid)] = (c, r)
        table = gather_dicts(table)
        self.train(was_training)
        path = Path(self.export_dir()) / "reference_logps.json"  # every rank: it may broadcast
        if self.trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table))
        return table
