"""Exports of the trainable weights only: how stages chain (``init_from``) without copying frozen models."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_FILE = "trainable.safetensors"
META_FILE = "export.json"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that requires grad, by its name in ``model``."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def write_export(model: nn.Module | dict[str, torch.Tensor], folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``trainable.safetensors`` (the trainable parameters of ``model``, or a ready state dict) and
    ``export.json`` (what and where from)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = model if isinstance(model, dict) else trainable_state(model)
    state = {k: v.contiguous().cpu() for k, v in tensors.items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / META_FILE).write_text(json.dumps({**meta, "tensors": sorted(state)}, indent=2))
    return folder


def read_export_meta(path: str | Path) -> dict[str, Any]:
    """The ``export.json`` beside an export (its folder or its ``.safetensors`` file); ``{}`` if there is none."""
    path = Path(path)
    meta = (path if path.is_dir() else path.parent) / META_FILE
    if not meta.is_file():
        return {}
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta}: not valid JSON ({err})") from None


def load_export(model: nn.Module, path: str | Path) -> list[str]:
    """Load an export (its folder or its ``.safetensors`` file) into ``model``; returns the loaded names.

    Every tensor in the export must exist in the model with the same shape: a mismatch means the configs of the two
    stages disagree, which is reported instead of silently training from scratch.
    """
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no exported weights at {file} (expected a folder holding {WEIGHTS_FILE})")
    state = load_file(str(file))
    own = dict(model.named_parameters())
    unknown = sorted(k for k in state if k not in own)
    if unknown:
        raise ValueError(f"{file}: {len(unknown)} tensors are not in the model, e.g. {unknown[:3]}")
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{file}: shapes differ from the model's: {wrong[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
    log.info("loaded %d tensors from %s", len(state), file)
    return sorted(state)
