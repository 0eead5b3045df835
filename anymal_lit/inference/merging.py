"""Weight merging of trained stage exports (UnIVAL's model interpolation; task arithmetic, TIES, DARE).

Two exports of the same model (same LLM, encoders, projector shapes, LoRA rank and targets), trained on different
tasks or mixtures, become one export. Tensors other than LoRA (the projectors) are merged element by element with
peft's ``peft.utils.merge_utils``. A LoRA adapter is a pair ``B, A`` whose update is ``s * B @ A`` (``s = alpha /
r``); averaging ``A`` and ``B`` separately does not average the updates, so:

* ``linear`` stacks the parents' adapters (peft ``add_weighted_adapter(..., combination_type="cat")``):
  ``B' = [w1 B1, w2 B2, ...]``, ``A' = [A1; A2; ...]``, rank ``r * N`` and alpha ``alpha * N`` (the scale ``s``
  stays). ``s B' A' = sum_i w_i s B_i A_i`` exactly; the merged export is continued or loaded with that rank.
* ``ties``, ``dare_linear``, ``dare_ties`` (peft's ``*_svd`` combinations): the parents' full updates ``s B_i A_i``
  minus the base's are merged element by element, added to the base's update, and factored back into rank
  ``r * N`` by a truncated SVD. The truncation is the approximation: a pruned, sign-elected sum of low-rank updates
  is not low-rank in general; ``export.json`` records its worst relative error (``merge.lora_svd_error``).

Where a method needs a base (``ties`` and ``dare_*``: the export the parents were trained from, e.g. the alignment
export) the task vectors are ``parent - base``; ``linear`` with a base is task arithmetic,
``base + sum_i w_i (parent_i - base)``, and without one the weighted sum ``sum_i w_i parent_i``. Weights are used as
given (not normalised): an interpolation's weights sum to 1. DARE's random drops use a fixed seed, so a merge is
reproducible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft.utils import merge_utils
from safetensors.torch import load_file, save_file

from anymal_lit.inference.loading import BUNDLE_FILE
from anymal_lit.inference.model_config import LOCAL_DIR, resolve_relative
from anymal_lit.stages.export import META_FILE, WEIGHTS_FILE, read_export_meta, write_export

log = logging.getLogger(__name__)

METHODS = ("linear", "ties", "dare_linear", "dare_ties")
NEEDS_BASE = ("ties", "dare_linear", "dare_ties")
DENSITY = 0.5
"""Default fraction of each task vector TIES / DARE keep."""
DARE_SEED = 0
"""Seed of DARE's random drops (a merge is reproducible)."""
_PEFT_NAME = re.compile(r"\.lora_(A|B)\.weight$")
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)\.(?P<adapter>[^.]+)\.weight$")


@dataclass
class _Export:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def lora(self) -> dict[str, Any] | None:
        return self.meta.get("lora") or None


def _read(path: str | Path) -> _Export:
    """A stage export, or a bundle (``anymal-lit export``) as the stage export it was written from."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / BUNDLE_FILE).is_file():
        return _read_bundle(folder)
    file = folder / WEIGHTS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: neither a stage export ({WEIGHTS_FILE}) nor a bundle ({BUNDLE_FILE})")
    meta = read_export_meta(folder)
    if not meta.get("model"):
        raise ValueError(f"{folder / META_FILE}: records no model configuration (written before anymal-lit 0.2)")
    return _Export(folder, meta, load_file(str(file)))


def _read_bundle(folder: Path) -> _Export:
    meta = json.loads((folder / BUNDLE_FILE).read_text())
    if meta.get("lora_merged"):
        raise ValueError(f"{folder}: its LoRA is merged into its LLM; merge bundles written without --merge-lora")
    tensors = load_file(str(folder / meta["projectors"]))
    if meta.get("lora"):  # peft's names -> the export's (``llm.model.`` prefix, adapter name ``default``)
        adapter = load_file(str(folder / "lora" / "adapter_model.safetensors"))
        tensors.update({"llm.model." + _PEFT_NAME.sub(r".lora_\1.default.weight", k): v for k, v in adapter.items()})
    config = resolve_relative(meta["model"], folder)
    return _Export(folder, {"model": config, "lora": meta.get("lora"), "modalities": meta.get("modalities"),
                            "stage": meta.get("stage")}, tensors)  # fmt: skip


def _fingerprint(path: str) -> str:
    """The content of a local model folder or file (names and bytes): copies of one model have the same."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The first path at which two JSON values differ, as ``path: a vs b``; None when equal. Two local paths (files
    or folders, ``local-dir:`` ones too) holding the same files are equal: a bundle carries its own copies."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if a == b:
        return None
    if isinstance(a, str) and isinstance(b, str):
        x, y = a.removeprefix(LOCAL_DIR), b.removeprefix(LOCAL_DIR)
        if os.path.exists(x) and os.path.exists(y):
            return None if _fingerprint(x) == _fingerprint(y) else f"{where}: {a!r} vs {b!r} (different files)"
    return f"{where or 'value'}: {a!r} vs {b!r}"


def check_compatible(exports: list[_Export]) -> None:
    """Refuse exports that are not the same model: modalities, base LLM, encoders, projectors (configuration and
    tensor shapes), LoRA settings (rank, alpha, targets) and tensor names must agree."""
    first = exports[0]
    args0 = first.meta["model"].get("init_args", {})
    for other in exports[1:]:
        pair = f"{first.path} and {other.path} differ in"
        if list(first.meta.get("modalities") or []) != list(other.meta.get("modalities") or []):
            raise ValueError(f"{pair} modalities: {first.meta.get('modalities')} vs {other.meta.get('modalities')}")
        args = other.meta["model"].get("init_args", {})
        for part in ("llm", "encoders", "projectors"):
            found = _first_difference(args0.get(part), args.get(part))
            if found:
                name = "base LLM" if part == "llm" else part
                raise ValueError(f"{pair} {name} ({found})")
        if bool(first.lora) != bool(other.lora):
            raise ValueError(f"{pair} LoRA: {first.lora} vs {other.lora}")
        if first.lora:
            keys = ("r", "alpha", "target_modules")
            found = _first_difference({k: first.lora.get(k) for k in keys}, {k: other.lora.get(k) for k in keys})
            if found:
                raise ValueError(f"{pair} LoRA settings ({found})")
        only = sorted(set(first.tensors) ^ set(other.tensors))
        if only:
            raise ValueError(f"{pair} tensors: {len(only)} are in one only, e.g. {only[:3]}")
        shapes = [f"{k}: {tuple(v.shape)} vs {tuple(other.tensors[k].shape)}" for k, v in first.tensors.items()
                  if v.shape != other.tensors[k].shape]  # fmt: skip
        if shapes:
            raise ValueError(f"{pair} tensor shapes: {shapes[:3]}")


def _check_base(base: _Export, parents: list[_Export]) -> None:
    """A base may lack the parents' LoRA (an alignment export); otherwise it is the same model as the parents."""
    if base.lora or not parents[0].lora:
        check_compatible([parents[0], base])
        return
    stripped = {k: v for k, v in parents[0].tensors.items() if not _LORA.match(k)}
    check_compatible([_Export(parents[0].path, {**parents[0].meta, "lora": None}, stripped), base])


def _merge(tensors: list[torch.Tensor], weights: list[float], method: str, density: float) -> torch.Tensor:
    w = torch.tensor(weights, dtype=tensors[0].dtype, device=tensors[0].device)
    if method == "linear":
        return merge_utils.task_arithmetic(tensors, w)
    return getattr(merge_utils, method)(tensors, w, density)  # ties, dare_linear, dare_ties


def _lora_modules(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """Module name -> (name of its ``lora_A``, name of its ``lora_B``); other LoRA tensors are refused."""
    modules: dict[str, dict[str, str]] = {}
    for name in tensors:
        match = _LORA.match(name)
        if match:
            modules.setdefault(match["module"] + "." + match["adapter"], {})[match["part"]] = name
        elif "lora_" in name:
            raise ValueError(f"{name}: a LoRA tensor merging does not handle (only lora_A / lora_B weights)")
    return {m: (parts["A"], parts["B"]) for m, parts in modules.items()}


def _scale(lora: dict[str, Any]) -> float:
    return float(lora["alpha"]) / float(lora["r"])


def merge_exports(
    paths: list[str | Path], weights: list[float], method: str = "linear", base: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Merge the trainable tensors of stage exports; returns the merged tensors, by their export names
    (:func:`merge_tensors` with TIES / DARE's default ``density``)."""
    return merge_tensors(paths, weights, method, base)


def merge_tensors(
    paths: list[str | Path],
    weights: list[float],
    method: str = "linear",
    base: str | Path | None = None,
    density: float = DENSITY,
) -> dict[str, torch.Tensor]:
    """Merge the trainable tensors of stage exports; returns the merged tensors, by their export names.

    The LoRA tensors of the result have rank ``r * k`` (``k``: the parents, plus the base where ``linear`` uses a
    base with LoRA) and are meant for alpha ``alpha * k``; :func:`write_merged_export` records both.

    Args:
        paths: Two or more stage exports (``checkpoints/export`` folders) of the same model.
        weights: One weight per export (not normalised; an interpolation's sum to 1).
        method: ``linear`` (weighted sum / task arithmetic; exact on LoRA updates), ``ties``, ``dare_linear`` or
            ``dare_ties`` (need ``base``; LoRA updates are re-factored by a truncated SVD).
        base: The export the parents were trained from; task vectors are ``parent - base``.
        density: Fraction of each task vector kept by TIES / DARE pruning.
    """
    merged, _, _ = _merge_exports(paths, weights, method, base, density)
    return merged


def _merge_exports(
    paths: list[str | Path], weights: list[float], method: str, base: str | Path | None, density: float
) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[_Export]]:
    """The merged tensors, what ``export.json`` records about the merge, and the parents."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if len(paths) < 2:
        raise ValueError(f"merging needs two or more exports, got {len(paths)}")
    if len(weights) != len(paths):
        raise ValueError(f"{len(paths)} exports but {len(weights)} weights")
    if method in NEEDS_BASE and base is None:
        raise ValueError(f"method {method!r} needs a base export (the one the parents were trained from)")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    parents = [_read(p) for p in paths]
    check_compatible(parents)
    root = _read(base) if base is not None else None
    if root is not None:
        _check_base(root, parents)
    weights = [float(w) for w in weights]
    modules = _lora_modules(parents[0].tensors)
    lora_names = {name for pair in modules.values() for name in pair}
    info: dict[str, Any] = {}
    merged: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DARE_SEED)
        for name in sorted(set(parents[0].tensors) - lora_names):
            merged[name] = _merge_plain(name, parents, weights, method, root, density)
        if modules:
            lora, info = _merge_lora(modules, parents, weights, method, root, density)
            merged.update(lora)
    return merged, info, parents


def _merge_plain(
    name: str, parents: list[_Export], weights: list[float], method: str, base: _Export | None, density: float
) -> torch.Tensor:
    dtype = parents[0].tensors[name].dtype
    values = [p.tensors[name].float() for p in parents]
    if base is None:
        return _merge(values, weights, method, density).to(dtype)
    if name not in base.tensors:
        raise ValueError(f"{base.path}: the base export lacks {name}")
    origin = base.tensors[name].float()
    return (origin + _merge([v - origin for v in values], weights, method, density)).to(dtype)


def _merge_lora(
    modules: dict[str, tuple[str, str]],
    parents: list[_Export],
    weights: list[float],
    method: str,
    base: _Export | None,
    density: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    scale = _scale(parents[0].lora)
    base_lora = bool(base is not None and base.lora)
    if method == "linear":
        # exact: stack the adapters, the weights (and a base adapter's scale) folded into B
        sources = [(p.tensors, w, 1.0) for p, w in zip(parents, weights)]
        if base_lora:
            sources.append((base.tensors, 1.0 - sum(weights), _scale(base.lora) / scale))
        out = {}
        for a_name, b_name in modules.values():
            out[a_name] = torch.cat([t[a_name] for t, _, _ in sources])
            out[b_name] = torch.cat([t[b_name].float() * (w * k) for t, w, k in sources], dim=1).to(
                parents[0].tensors[b_name].dtype
            )
        return out, {"lora_combination": "cat", "lora_stacked": len(sources)}
    # ties / dare: merge the full updates, then a truncated SVD back to the stacked rank (peft's *_svd)
    rank = parents[0].lora["r"] * len(parents)
    out, worst = {}, 0.0
    for a_name, b_name in modules.values():
        updates = [scale * p.tensors[b_name].float() @ p.tensors[a_name].float() for p in parents]
        origin = torch.zeros_like(updates[0])
        if base_lora:
            origin = _scale(base.lora) * base.tensors[b_name].float() @ base.tensors[a_name].float()
        target = origin + _merge([u - origin for u in updates], weights, method, density)
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        root_s = (s[:rank] / scale).sqrt()
        b, a = u[:, :rank] * root_s, root_s[:, None] * vh[:rank]
        if b.shape[1] < rank:  # a layer narrower than the stacked rank: pad with zero directions
            b = torch.nn.functional.pad(b, (0, rank - b.shape[1]))
            a = torch.nn.functional.pad(a, (0, 0, 0, rank - a.shape[0]))
        norm = target.norm()
        if norm > 0:
            worst = max(worst, float((target - scale * b @ a).norm() / norm))
        out[a_name] = a.contiguous().to(parents[0].tensors[a_name].dtype)
        out[b_name] = b.contiguous().to(parents[0].tensors[b_name].dtype)
    return out, {"lora_combination": "svd", "lora_stacked": len(parents), "lora_svd_error": worst}


def write_merged_export(
    paths: list[str | Path],
    weights: list[float],
    out: str | Path,
    method: str = "linear",
    base: str | Path | None = None,
    density: float = DENSITY,
) -> Path:
    """Merge ``paths`` (see :func:`merge_exports`) into a new stage export at ``out``, which ``init_from``,
    :func:`anymal_lit.load_model` and ``anymal-lit validate`` take like any other; its ``export.json`` records the
    parents, weights and method (``merge``) and the merged LoRA settings (rank and alpha times the stacked count)."""
    out = Path(out)
    if (out / WEIGHTS_FILE).exists():
        raise FileExistsError(f"{out}: already holds an export")
    merged, info, parents = _merge_exports(paths, weights, method, base, density)
    first = parents[0].meta
    meta = {k: v for k, v in first.items() if k not in ("tensors", "global_step", "data")}
    stages = {p.meta.get("stage") for p in parents}
    meta["stage"] = stages.pop() if len(stages) == 1 else "merged"
    if first.get("lora"):
        k = info["lora_stacked"]
        meta["lora"] = {**first["lora"], "r": first["lora"]["r"] * k, "alpha": first["lora"]["alpha"] * k}
    meta["merge"] = {
        "method": method,
        "parents": [str(Path(p).resolve()) for p in paths],
        "weights": [float(w) for w in weights],
        "base": str(Path(base).resolve()) if base is not None else None,
        **({"density": density} if method in NEEDS_BASE else {}),
        **info,
    }
    write_export(merged, out, meta)
    if meta.get("lora"):
        _write_peft_adapter(merged, out / "lora", parents[0].path, meta)
    log.info("wrote the %s merge of %d exports to %s", method, len(paths), out)
    return out


def _write_peft_adapter(merged: dict[str, torch.Tensor], folder: Path, parent: Path, meta: dict[str, Any]) -> None:
    """The merged adapter in peft's own format under ``lora/``, as a stage export has it (its ``adapter_config.json``
    is the first parent's, with the merged rank and alpha)."""
    from peft import LoraConfig

    folder.mkdir(parents=True, exist_ok=True)
    lora = meta["lora"]
    parent_config = parent / "lora" / "adapter_config.json"
    if parent_config.is_file():
        config = json.loads(parent_config.read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "r": lora["r"], "lora_alpha": lora["alpha"]},
                                                               indent=2))  # fmt: skip
    else:
        llm = meta["model"]["init_args"]["llm"].get("init_args", {})
        LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                   target_modules=lora["target_modules"], task_type="CAUSAL_LM",
                   base_model_name_or_path=llm.get("pretrained")).save_pretrained(str(folder))  # fmt: skip
    prefix = "llm.model."
    state = {k[len(prefix):].replace(".default.", "."): v.contiguous() for k, v in merged.items()
             if _LORA.match(k) and k.startswith(prefix)}  # fmt: skip
    save_file(state, str(folder / "adapter_model.safetensors"))
