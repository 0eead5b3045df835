"""LoRA adapters on the LLM via peft (AnyMAL SFT/DPO: r=8, alpha=32, every linear layer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from anymal_lit.collectives import gathered_state
from anymal_lit.models.causal_lm import CausalLM

REFERENCE_ADAPTER = "reference"


@dataclass(frozen=True)
class LoRASettings:
    """LoRA adapters on the LLM (peft). Defaults: the paper's SFT and DPO recipe (AnyMAL appendix E.3).

    Args:
        r: Rank of each adapter.
        alpha: Scaling numerator (the update is ``alpha / r * B @ A``).
        dropout: Dropout on the adapter branch.
        target_modules: peft ``target_modules`` (``all-linear``: every linear layer but the output head).
    """

    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for ``export.json`` and hyper-parameter logs)."""
        return asdict(self)


def add_lora(llm: CausalLM, settings: LoRASettings | None = None) -> PeftModel:
    """Wrap ``llm.model`` in a peft ``PeftModel`` with a trainable ``default`` LoRA adapter (idempotent)."""
    if isinstance(llm.model, PeftModel):
        return llm.model
    s = settings or LoRASettings()
    config = LoraConfig(
        r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules, task_type="CAUSAL_LM"
    )
    llm.model = get_peft_model(llm.model, config)
    return llm.model


def lora_parameters(llm: CausalLM, adapter: str = "default") -> dict[str, torch.nn.Parameter]:
    """The parameters of one LoRA adapter, by name."""
    return {n: p for n, p in llm.model.named_parameters() if f".{adapter}." in n and "lora_" in n}


def add_reference_adapter(llm: CausalLM) -> None:
    """A frozen copy of the ``default`` adapter, the DPO reference (SFT model = base + SFT LoRA), sharing the base."""
    model = llm.model
    if not isinstance(model, PeftModel):
        raise TypeError("add_reference_adapter needs an LLM with LoRA (call add_lora first)")
    if REFERENCE_ADAPTER not in model.peft_config:
        model.add_adapter(REFERENCE_ADAPTER, model.peft_config["default"])
    source, target = lora_parameters(llm, "default"), lora_parameters(llm, REFERENCE_ADAPTER)
    with torch.no_grad():
        for name, param in source.items():
            ref = target[name.replace(".default.", f".{REFERENCE_ADAPTER}.")]
            ref.copy_(param)
            ref.requires_grad_(False)
    model.set_adapter("default")


def lora_state(llm: CausalLM) -> dict[str, torch.Tensor]:
    """Every LoRA tensor of the LLM, whole (under FSDP a collective: call on every rank)."""
    return gathered_state({n: p for n, p in llm.model.named_parameters() if "lora_" in n})


def save_lora(llm: CausalLM, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """The ``default`` adapter in peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``);
    ``state`` (from :func:`lora_state`) supplies whole tensors when the model is sharded."""
    if isinstance(llm.model, PeftModel):
        llm.model.save_pretrained(str(folder), selected_adapters=["default"], state_dict=state)
