"""Stage 2, multimodal instruction tuning: projectors + LoRA, NEFTune, assistant-only loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import LoRASettings, add_lora, lora_state, save_lora
from anymal_lit.stages.base import AnyMALStage
from anymal_lit.stages.optimization import OptimizerSettings


class SFTStage(AnyMALStage):
    """Instruction tuning as AnyMAL section 3.2: the projectors and LoRA adapters on every linear layer of the LLM
    train on ``[<instruction> <modality tokens>] -> response`` conversations (loss on assistant turns only).

    NEFTune (Jain et al., 2023) adds ``alpha / sqrt(L * d) * U(-1, 1)`` noise to the *text* token embeddings during
    training (L = text tokens of the row, d = hidden size); the projected modality tokens get none, following the
    paper's wording that applies NEFTune to the language model's embeddings. Schedule: linear warm-up (paper: 40
    steps), then cosine decay to 10 % of the peak LR (paper: 5e-5).

    Args:
        model: The AnyMAL model.
        optimizer: AdamW and its learning-rate schedule.
        init_from: Export of the alignment stage (projectors) or of an earlier SFT run (projectors + LoRA).
        lora: The LoRA adapters on the LLM.
        neftune_alpha: NEFTune noise strength (0 disables it).
        train_projectors: Keep training the projectors (the paper does).
    """

    stage_name = "sft"

    def __init__(
        self,
        model: AnyMALModel,
        optimizer: OptimizerSettings = OptimizerSettings(lr=5e-5, warmup_steps=40),
        init_from: str | None = None,
        lora: LoRASettings = LoRASettings(),
        neftune_alpha: float = 10.0,
        train_projectors: bool = True,
    ) -> None:
        self.lora = lora
        self.train_projectors = train_projectors
        super().__init__(model, optimizer, init_from)
        self.hparams["lora"] = lora.as_dict()
        self.model.neftune_alpha = neftune_alpha

    def configure_trainable(self) -> None:
        add_lora(self.model.llm, self.lora)
        self.model.requires_grad_(False)
        self.model.projectors.requires_grad_(self.train_projectors)
        for name, param in self.model.llm.model.named_parameters():
            param.requires_grad_("lora_" in name and ".default." in name)
        self.model.llm.frozen = False  # adapters train, so dropout inside them follows train/eval

    def export_meta(self) -> dict[str, Any]:
        return {**super().export_meta(), "lora": self.lora.as_dict()}

    def check_export(self, path: str, meta: dict[str, Any]) -> None:
        """An export with LoRA adapters must be continued with the same rank, alpha and target modules: a different
        alpha loads without a shape error but rescales every adapter (the model would not be the one exported)."""
        exported = meta.get("lora")
        if not exported:
            return
        ours = self.lora.as_dict()
        differ = [f"lora.{k}: {exported[k]!r} (this stage: {ours[k]!r})" for k in ("r", "alpha", "target_modules")
                  if k in exported and exported[k] != ours[k]]  # fmt: skip
        if differ:
            raise ValueError(
                f"{path}: its LoRA adapters were trained with other settings; set the stage's " + ", ".join(differ)
            )

    def write_export(self) -> None:
        super().write_export()
        state = lora_state(self.model.llm)  # whole tensors under FSDP / ZeRO-3 (a collective: every rank)
        folder = Path(self.export_dir()) / "lora"  # every rank: it may broadcast
        if self.trainer.is_global_zero:
            save_lora(self.model.llm, folder, state)
