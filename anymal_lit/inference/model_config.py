"""The model configuration an export records: class paths and init args, as LightningCLI resolved them.

A stage export (``export.json``) and a bundle (``bundle.json``) both carry the ``AnyMALModel`` configuration under
``"model"`` (``{"class_path": ..., "init_args": {...}}``), so :func:`anymal_lit.load_model` rebuilds the model without
the experiment YAML. Paths in it (checkpoint folders, weight files, ``local-dir:`` model names) are stored absolute in
a stage export (they point outside it) and relative to the folder in a bundle (they point inside it).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATH_KEYS = ("pretrained", "tokenizer", "model_config", "model_name", "config")
"""Init-arg names whose string values may be local paths (``model_name`` only with a ``local-dir:`` prefix)."""
LOCAL_DIR = "local-dir:"


def map_paths(config: Any, fn: Callable[[str], str]) -> Any:
    """A copy of ``config`` with ``fn`` applied to every local path among the init args (see :data:`PATH_KEYS`)."""
    config = copy.deepcopy(config)
    _walk(config, fn)
    return config


def _walk(node: Any, fn: Callable[[str], str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, fn)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in PATH_KEYS and isinstance(value, str):
            if value.startswith(LOCAL_DIR):
                node[key] = LOCAL_DIR + fn(value[len(LOCAL_DIR) :])
            elif key != "model_name":
                node[key] = fn(value)
        else:
            _walk(value, fn)


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Paths that exist relative to the working directory become absolute (hub names and tags are left alone)."""
    return map_paths(config, lambda p: os.path.abspath(p) if os.path.exists(p) else p)


def local_paths(config: dict[str, Any]) -> list[str]:
    """Every existing local path the configuration names."""
    found: list[str] = []
    map_paths(config, lambda p: found.append(p) or p if os.path.exists(p) else p)
    return found


def resolve_relative(config: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """Relative paths in a bundle's configuration resolved against the bundle ``folder``."""
    folder = Path(folder).resolve()

    def resolve(path: str) -> str:
        candidate = folder / path
        return str(candidate) if not os.path.isabs(path) and candidate.exists() else path

    return map_paths(config, resolve)


def build_model(config: dict[str, Any]) -> Any:
    """Instantiate an ``AnyMALModel`` (or subclass) from ``{"class_path", "init_args"}`` with jsonargparse, the
    engine LightningCLI uses, so every class path and short class name a YAML accepts works here too."""
    from jsonargparse import ArgumentParser

    from anymal_lit.models.anymal import AnyMALModel

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=AnyMALModel)
    parsed = parser.parse_object({"model": config})
    return parser.instantiate_classes(parsed).model
