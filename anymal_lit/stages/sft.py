"""Stage 2, multimodal instruction tuning: projectors + LoRA, NEFTune, assistant-only loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import add_lora, lora_state, save_lora
from anymal_lit.stages.base import AnyMALStage


class SFTStage(AnyMALStage):
    """Instruction tuning as AnyMAL section 3.2: the projectors and LoRA adapters on every linear layer of the LLM
    train on ``[<instruction> <modality tokens>] -> response`` conversations (loss on assistant turns only).

    NEFTune (Jain et al., 2023) adds ``alpha / sqrt(L * d) * U(-1, 1)`` noise to the *text* token embeddings during
    training (L = text tokens of the row, d = hidden size); the projected modality tokens get none, following the
    paper's wording that applies NEFTune to the language model's embeddings. Schedule: linear warm-up (paper: 40
    steps), then cosine decay to 10 % of the peak LR (paper: 5e-5).

    Args:
        model: The AnyMAL model.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Final LR as a fraction of the peak (cosine decay).
        init_from: Export of the alignment stage (projectors) or of an earlier SFT run (projectors + LoRA).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: Dropout on the LoRA branch.
        lora_target_modules: peft ``target_modules`` (``all-linear``: every linear layer but the output head).
        neftune_alpha: NEFTune noise strength (0 disables it).
        train_projectors: Keep training the projectors (the paper does).
    """

    stage_name = "sft"

    def __init__(
        self,
        model: AnyMALModel,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 40,
        min_lr_ratio: float = 0.1,
        init_from: str | None = None,
        lora_r: int = 8,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: str | list[str] = "all-linear",
        neftune_alpha: float = 10.0,
        train_projectors: bool = True,
    ) -> None:
        self.lora = {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "target_modules": lora_target_modules}
        self.train_projectors = train_projectors
        super().__init__(model, lr, weight_decay, betas, warmup_steps, min_lr_ratio, init_from)
        self.model.neftune_alpha = neftune_alpha

    def configure_trainable(self) -> None:
        add_lora(self.model.llm, **self.lora)
        self.model.requires_grad_(False)
        self.model.projectors.requires_grad_(self.train_projectors)
        for name, param in self.model.llm.model.named_parameters():
            param.requires_grad_("lora_" in name and ".default." in name)
        self.model.llm.frozen = False  # adapters train, so dropout inside them follows train/eval

    def export_meta(self) -> dict[str, Any]:
        return {**super().export_meta(), "lora": self.lora}

    def check_export(self, path: str, meta: dict[str, Any]) -> None:
        """An export with LoRA adapters must be continued with the same rank, alpha and target modules: a different
        alpha loads without a shape error but rescales every adapter (the model would not be the one exported)."""
        exported = meta.get("lora")
        if not exported:
            return
        keys = {"r": "lora_r", "alpha": "lora_alpha", "target_modules": "lora_target_modules"}
        differ = [f"{arg}: {exported[k]!r} (this stage: {self.lora[k]!r})" for k, arg in keys.items()
                  if k in exported and exported[k] != self.lora[k]]  # fmt: skip
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
