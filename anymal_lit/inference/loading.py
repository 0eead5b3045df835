"""``load_model``: a trained AnyMAL model from a stage export or a bundle, ready for generation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from anymal_lit.inference.model_config import build_model, resolve_relative
from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import LoRASettings, add_lora
from anymal_lit.stages.export import META_FILE, WEIGHTS_FILE, load_export, read_export_meta

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
"""The configuration file of a bundle written by ``anymal-lit export``."""


def load_model(path: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None) -> AnyMALModel:
    """Load a stage export (``checkpoints/export/``) or a bundle (``anymal-lit export``) for generation.

    The model is rebuilt from the configuration the export records (``export.json`` / ``bundle.json``, key
    ``model``), its LoRA adapters are added with the recorded settings, and the trained tensors are loaded. The model
    is returned frozen, in eval mode, on ``device``.

    Args:
        path: The export or bundle folder (or an export's ``trainable.safetensors``).
        device: Where to put the model (``cpu``, ``cuda``, ``cuda:1``, ...).
        dtype: Parameter dtype (``bfloat16``, ``float16``, ``float32`` or a ``torch.dtype``); None keeps the
            configured one.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / BUNDLE_FILE).is_file():
        model = _load_bundle(folder)
    elif (folder / META_FILE).is_file() or (folder / WEIGHTS_FILE).is_file():
        model = _load_stage_export(folder)
    else:
        raise FileNotFoundError(f"{path}: neither a stage export ({META_FILE}) nor a bundle ({BUNDLE_FILE})")
    model.requires_grad_(False)
    model.eval()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)


def _load_stage_export(folder: Path) -> AnyMALModel:
    meta = read_export_meta(folder)
    config = meta.get("model")
    if not config:
        raise ValueError(
            f"{folder / META_FILE}: records no model configuration (exports written before anymal-lit 0.2 lack it); "
            "load it through a stage's init_from in the experiment YAML, or re-export it with this version"
        )
    model = build_model(config)
    if meta.get("lora"):
        add_lora(model.llm, _lora_settings(meta["lora"]))
    load_export(model, folder)
    return model


def _load_bundle(folder: Path) -> AnyMALModel:
    meta = _read_json(folder / BUNDLE_FILE)
    model = build_model(resolve_relative(meta["model"], folder))
    if meta.get("lora") and not meta.get("lora_merged"):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        add_lora(model.llm, _lora_settings(meta["lora"]))
        weights = load_peft_weights(str(folder / "lora"))
        result = set_peft_model_state_dict(model.llm.model, weights, adapter_name="default")
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise ValueError(f"{folder / 'lora'}: adapter lacks {len(missing)} LoRA tensors, e.g. {missing[:2]}")
    load_export(model, folder / meta["projectors"])
    return model


def _lora_settings(recorded: dict[str, Any]) -> LoRASettings:
    return LoRASettings(**{k: recorded[k] for k in ("r", "alpha", "dropout", "target_modules") if k in recorded})


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
