"""Stage 3, preference tuning: conservative DPO against the frozen SFT model."""

from __future__ import annotations

from typing import Any

import torch

from anymal_lit.losses import dpo_loss, masked_lm_loss, sequence_logps
from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import REFERENCE_ADAPTER, LoRASettings
from anymal_lit.stages.dpo_reference import (
    CHECKPOINT_KEY,
    DPOReference,
    FrozenAdapterReference,
    PrecomputedReference,
)
from anymal_lit.stages.optimization import OptimizerSettings
from anymal_lit.stages.sft import SFTStage

REFERENCE_MODES = ("adapter", "precomputed")


class DPOStage(SFTStage):
    """Conservative DPO (AnyMAL section 3.3): the policy is the SFT model with its LoRA adapters still training; the
    reference is the SFT model frozen (base + SFT LoRA, *not* ``disable_adapter()``, which would be the base LLM).

    Two ways to get the reference log-probs (``anymal_lit.stages.dpo_reference``):

    * ``reference="adapter"``: a frozen copy of the SFT adapter (and of the projectors, if they train) lives beside
      the policy's on the same frozen base model; one extra no-grad forward per step, no second LLM in memory.
    * ``reference="precomputed"``: one pass over every split of the data (train, val, test) before the first step
      computes them (policy == reference then), keyed by split, record id and a hash of the pair's content. The
      table is stored in ``reference_logps.json`` in the export folder (read back instead of recomputed when it
      matches the data and ``init_from``) and in every checkpoint (a resumed run uses it); training then needs no
      reference forward at all.

    Loss per pair (``anymal_lit.losses.dpo_loss``): ``-(1-eps) log sigma(beta h) - eps log sigma(-beta h)``, with
    sequence log-probs summed over response tokens; with ``rpo_alpha`` > 0 plus ``rpo_alpha`` times the chosen
    replies' mean next-token loss (RPO, Pang et al. 2024; TRL's ``rpo_alpha``), which keeps the policy writing the
    chosen replies while it pushes the rejected ones down. Schedule (the default ``optimizer``): linear warm-up
    (paper: 20 steps), then linear decay to 2/3 of the peak LR (paper: 1e-5).

    Args:
        model: The AnyMAL model.
        optimizer: AdamW and its learning-rate schedule.
        init_from: Export of the SFT stage (projectors + LoRA).
        beta: DPO temperature (strength of the implicit KL penalty).
        label_smoothing: cDPO's eps, the assumed rate of flipped preference labels (paper: 0.05).
        reference: ``adapter`` or ``precomputed`` (see above).
        lora: The LoRA adapters (rank, alpha and target modules must match the SFT export).
        train_projectors: Also train the projectors (frozen by default: preferences are about the replies, and frozen
            projectors keep the perception that alignment and SFT trained).
        neftune_alpha: NEFTune noise on the policy's text embeddings (paper: 10; 0 disables it). The reference
            forward never gets noise: it stands for the SFT model's distribution, not a training sample of it.
        rpo_alpha: Weight of the chosen replies' next-token loss added to the DPO loss (0, the default and the
            paper's recipe, leaves plain cDPO).
    """

    stage_name = "dpo"

    def __init__(
        self,
        model: AnyMALModel,
        optimizer: OptimizerSettings = OptimizerSettings(lr=1e-5, warmup_steps=20, decay="linear", min_lr_ratio=2 / 3),
        init_from: str | None = None,
        beta: float = 0.1,
        label_smoothing: float = 0.05,
        reference: str = "adapter",
        lora: LoRASettings = LoRASettings(),
        train_projectors: bool = False,
        neftune_alpha: float = 0.0,
        rpo_alpha: float = 0.0,
    ) -> None:
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {rpo_alpha}")
        super().__init__(model, optimizer, init_from, lora, neftune_alpha, train_projectors)
        self.beta, self.label_smoothing, self.reference, self.rpo_alpha = beta, label_smoothing, reference, rpo_alpha
        self.reference_model: DPOReference = (
            FrozenAdapterReference(self.model, copy_projectors=train_projectors)
            if reference == "adapter"
            else PrecomputedReference(init_from)
        )
        self.configure_trainable()  # the reference adapter, if any, stays frozen

    def configure_trainable(self) -> None:
        super().configure_trainable()
        for name, param in self.model.llm.model.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name:
                param.requires_grad_(False)

    def _logps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's summed log-probs of the chosen and the rejected replies."""
        chosen, rejected, _ = self._scored(batch, nll=False)
        return chosen, rejected

    def _scored(self, batch: dict[str, Any], nll: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_logps` and, with ``nll``, the chosen replies' mean next-token loss, from one forward."""
        out = self.model(batch, pack=False)  # per-row sequence log-probs
        logps = sequence_logps(out["logits"], out["labels"])
        n = batch["num_pairs"]
        chosen_nll = masked_lm_loss(out["logits"][:n], out["labels"][:n]) if nll else None
        return logps[:n], logps[n:], chosen_nll

    def _reference_logps(self, batch: dict[str, Any], split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        return self.reference_model.logps(self, batch, split)

    @property
    def reference_logps(self) -> dict[str, Any]:
        """The precomputed table (keys: ``split/id/content hash``); empty with ``reference="adapter"``."""
        return getattr(self.reference_model, "table", {})

    def _dpo_step(self, batch: dict[str, Any], split: str) -> torch.Tensor | None:
        if "input_ids" not in batch:  # an all-skipped evaluation batch: the step's forwards, unlogged
            self._zero_weight_step(self.batch_to_evaluate())
            return None
        policy_c, policy_r, nll = self._scored(batch, nll=self.rpo_alpha > 0)
        ref_c, ref_r = self._reference_logps(batch, split)
        losses, reward_c, reward_r = dpo_loss(policy_c, policy_r, ref_c, ref_r, self.beta, self.label_smoothing)
        loss = losses.mean()
        n = batch["num_pairs"]
        sync = split != "train"
        self.log(f"{split}/dpo_loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        if nll is not None:
            self.log(f"{split}/nll_chosen", nll, batch_size=n, sync_dist=sync)
            loss = loss + self.rpo_alpha * nll
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
        return self._zero_weight_step(batch)

    def _zero_weight_step(self, batch: dict[str, Any]) -> torch.Tensor:
        policy_c, policy_r = self._logps(batch)
        if self.reference == "adapter":
            self._reference_logps(batch)
        return (policy_c.sum() + policy_r.sum()) * 0.0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._dpo_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._dpo_step(batch, "test")

    # ---- reference -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.reference_model.prepare(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self.reference_model.checkpoint_state()
        if state is not None:
            checkpoint[CHECKPOINT_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.reference_model.load_checkpoint_state(checkpoint.get(CHECKPOINT_KEY))
