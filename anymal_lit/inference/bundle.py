"""``anymal-lit export``: a trained model as one self-contained folder (a bundle) that loads anywhere.

Layout::

    bundle.json                 format, the AnyMAL model configuration (paths relative to the bundle), LoRA settings
    llm/                        the LLM in Hugging Face ``save_pretrained`` format + its tokenizer (placeholders added)
    lora/                       the peft adapter (absent when merged into llm/)
    encoders/<name>/            each frozen encoder's files in its own format (open_clip folder, HF CLAP, IMU, ...)
    projectors.safetensors      the trained projectors
    README.md                   a model card: stages, data, scores
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from anymal_lit.inference.loading import BUNDLE_FILE, load_model
from anymal_lit.inference.model_config import map_paths
from anymal_lit.stages.export import read_export_meta

log = logging.getLogger(__name__)

PROJECTORS_FILE = "projectors.safetensors"


def export_bundle(source: str | Path, out: str | Path, merge_lora: bool = False, scorecard: str | None = None) -> Path:
    """Write a bundle of the stage export (or bundle) ``source`` to ``out`` and return ``out``.

    Args:
        source: A stage export folder (``checkpoints/export``) or another bundle.
        out: Folder to create (must not exist or be empty).
        merge_lora: Merge the LoRA adapters into the LLM's weights (one plain HF model) instead of saving the
            peft adapter beside the base model.
        scorecard: A ``scorecard.json`` whose scores go into the model card (default: the nearest one above
            ``source``, if any).
    """
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty")
    meta = _source_meta(source)
    model = load_model(source)
    out.mkdir(parents=True, exist_ok=True)
    llm = model.llm
    lora = meta.get("lora")
    if lora and merge_lora:
        llm.model = llm.model.merge_and_unload()
        llm.model.save_pretrained(str(out / "llm"))
    elif lora:
        base = llm.model.get_base_model()
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        base.save_pretrained(str(out / "llm"), state_dict=state)
        llm.model.save_pretrained(str(out / "lora"), selected_adapters=["default"])
    else:
        llm.model.save_pretrained(str(out / "llm"))
    llm.tokenizer.save_pretrained(str(out / "llm"))
    projectors = {f"projectors.{k}": v.detach().contiguous().cpu() for k, v in model.projectors.state_dict().items()}
    save_file(projectors, str(out / PROJECTORS_FILE))
    config, external = _bundle_config(meta["model"], out)
    bundle = {
        "format": "anymal-lit-bundle",
        "version": 1,
        "model": config,
        "lora": lora or None,
        "lora_merged": bool(lora and merge_lora),
        "projectors": PROJECTORS_FILE,
        "modalities": model.modalities,
        "stage": meta.get("stage"),
        "global_step": meta.get("global_step"),
        "data": meta.get("data"),
        "source": str(source.resolve()),
        "external": external,
    }
    (out / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2))
    card = _find_scorecard(source) if scorecard is None else Path(scorecard)
    (out / "README.md").write_text(model_card(bundle, json.loads(card.read_text()) if card else None))
    log.info("wrote bundle %s", out)
    return out


def _source_meta(source: Path) -> dict[str, Any]:
    folder = source if source.is_dir() else source.parent
    if not (folder / "export.json").is_file() and not (folder / BUNDLE_FILE).is_file():
        raise FileNotFoundError(f"{source}: not a stage export (no export.json there)")
    if (folder / BUNDLE_FILE).is_file():
        raise ValueError(f"{source}: already a bundle; export from the stage export it was made of")
    meta = read_export_meta(folder)
    if not meta.get("model"):
        raise ValueError(f"{folder}: export.json records no model configuration (written before anymal-lit 0.2)")
    return meta


def _bundle_config(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], list[str]]:
    """The model configuration with the LLM at ``llm/`` and each encoder's files copied under ``encoders/``."""
    llm = config["init_args"]["llm"]
    kept = {k: v for k, v in llm.get("init_args", {}).items() if k not in ("pretrained", "config", "tokenizer")}
    llm = {**llm, "init_args": {**kept, "pretrained": "llm"}}
    copied: dict[str, str] = {}
    external: list[str] = []
    encoders = {}
    for name, encoder in config["init_args"].get("encoders", {}).items():

        def copy(path: str, name: str = name) -> str:
            if not os.path.exists(path):
                external.append(path)  # a hub name or tag: loaded from the hub cache wherever the bundle goes
                return path
            if path not in copied:
                target = Path("encoders") / name / Path(path).name
                if os.path.isdir(path):
                    shutil.copytree(path, out / target)
                else:
                    (out / target).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out / target)
                copied[path] = str(target)
            return copied[path]

        encoders[name] = map_paths(encoder, copy)
    init_args = {**config["init_args"], "llm": llm, "encoders": encoders}
    return {**config, "init_args": init_args}, sorted(set(external))


def _find_scorecard(source: Path) -> Path | None:
    for folder in list(source.resolve().parents)[:4]:
        if (folder / "scorecard.json").is_file():
            return folder / "scorecard.json"
    return None


def _data_files(node: Any) -> list[str]:
    """The ``*_file`` values of a data module configuration (a mixture's included)."""
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k.endswith("_file") and isinstance(v, str)]
        return own + [f for v in node.values() for f in _data_files(v)]
    return [f for v in node for f in _data_files(v)] if isinstance(node, list) else []


def model_card(bundle: dict[str, Any], scorecard: dict[str, Any] | None) -> str:
    """The bundle's README.md: what it is, how to use it, and the scores it was trained to."""
    lora = bundle["lora"]
    lines = [
        "# AnyMAL model (anymal-lit bundle)",
        "",
        f"- Last stage: `{bundle['stage']}` (step {bundle['global_step']})",
        f"- Modalities: {', '.join(bundle['modalities'])}",
        f"- LLM: `llm/` (Hugging Face format){'; LoRA merged into it' if bundle['lora_merged'] else ''}",
        f"- LoRA: r={lora['r']}, alpha={lora['alpha']}, targets {lora['target_modules']}" if lora else "- LoRA: none",
        "- Encoders: "
        + ", ".join(
            f"{m} `{e['class_path'].rsplit('.', 1)[-1]}`" for m, e in bundle["model"]["init_args"]["encoders"].items()
        ),  # fmt: skip
    ]
    files = sorted(set(_data_files(bundle.get("data"))))
    if files:
        lines.append("- Trained on: " + ", ".join(f"`{f}`" for f in files))
    if bundle["external"]:
        lines.append(f"- Loaded from the hub cache, not copied: {', '.join(bundle['external'])}")
    lines += [
        "",
        "## Use",
        "```",
        "anymal-lit chat --model <this folder>",
        "anymal-lit serve --model <this folder> --port 8000",
        "python -c \"import anymal_lit; m = anymal_lit.load_model('<this folder>'); "
        "print(anymal_lit.chat(m, [{'role': 'user', 'content': 'Hello'}]))\"",
        "```",
    ]
    if scorecard and scorecard.get("stages"):
        lines += ["", "## Scores (from the training run's scorecard)", "", "| stage | benchmark | metric | value |",
                  "|---|---|---|---|"]  # fmt: skip
        for stage, benchmarks in scorecard["stages"].items():
            for bench, metrics in benchmarks.items():
                for metric, value in sorted(metrics.items()):
                    if isinstance(value, (int, float)) and not metric.endswith("_before") and "/" not in metric:
                        lines.append(f"| {stage} | {bench} | {metric} | {value:.4g} |")
    return "\n".join(lines) + "\n"
