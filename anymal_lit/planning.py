"""Per-rank memory plans: will an experiment fit before GPUs are rented (``anymal-lit plan``)?

The model an experiment configures is built on the meta device (shapes and dtypes only; no weights are read): the
LLM from its Hugging Face config (a local folder or populated cache, else the architectures stated in
:data:`KNOWN_CONFIGS`), the encoders from their architecture names or config files, the projectors as configured,
LoRA added as the SFT/DPO stages add it. For each sharding preset the plan counts, per rank:

* parameters: every tensor at its dtype (DeepSpeed with bf16 casts the whole module to bf16), divided by the
  number of processes where the preset shards parameters (FSDP2, ZeRO-3);
* gradients: trainable parameters only (the LLM is frozen in alignment, LoRA trains in SFT/DPO);
* optimizer: AdamW's fp32 first and second moments, plus an fp32 master copy where the parameters are bf16 (DeepSpeed
  mixed precision); sharded by FSDP2 and ZeRO-2/3;
* gathered: what sharded presets hold whole while computing (FSDP2: the root unit, i.e. everything outside the
  decoder layers, plus two decoder layers, the current one and the prefetched next; ZeRO-3: two decoder layers);
* activations: the bytes autograd saves for the backward pass in one forward of the per-rank batch (measured by
  running the projectors, the LLM and the loss on fake tensors of the configured sizes under
  ``torch.autograd.graph.saved_tensors_hooks``), and with activation checkpointing: each decoder layer keeps only its
  input, plus one layer's saved tensors while it is recomputed.

What it leaves out: the allocator's fragmentation, CUDA context and kernels' workspaces (budget ~1-3 GiB per GPU),
the frozen encoders' transient forward memory (run without autograd), and communication buckets.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

log = logging.getLogger(__name__)

GiB = 1 << 30

_LLAMA2 = {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    # the published config.json of each checkpoint (architecture fields only), for plans without the checkpoint
    "meta-llama/Llama-2-7b-chat-hf": {
        **_LLAMA2, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32,
    },
    "meta-llama/Llama-2-13b-chat-hf": {
        **_LLAMA2, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
        "num_attention_heads": 40, "num_key_value_heads": 40,
    },
    "meta-llama/Llama-2-70b-chat-hf": {
        **_LLAMA2, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
        "num_attention_heads": 64, "num_key_value_heads": 8,
    },
    "laion/clap-htsat-unfused": {"model_type": "clap_audio_model"},  # ClapAudioConfig's defaults are HTSAT-unfused
}  # fmt: skip

PLACEHOLDERS = 4
"""Placeholder tokens (<image> <audio> <video> <imu>) the kit adds to a tokenizer that lacks them."""


@dataclass
class MetaModel:
    """An experiment's model on the meta device, split as the plan needs it."""

    llm: nn.Module
    encoders: dict[str, nn.Module]
    projectors: dict[str, nn.Module]
    stage: str  # "align", "sft" or "dpo"
    gradient_checkpointing: bool = False
    layers: list[nn.Module] = field(default_factory=list)

    def parameters(self) -> list[nn.Parameter]:
        mods = [self.llm, *self.encoders.values(), *self.projectors.values()]
        return [p for m in mods for p in m.parameters()]

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# ---- reading an experiment -----------------------------------------------------------------------------------------
def load_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment YAML with ``model: other.yaml`` references (relative to the referring file) inlined."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment not found: {path}")
    return _inline(yaml.safe_load(path.read_text()) or {}, path.parent)


def _inline(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        return {k: _inline(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, base) for v in node]
    if isinstance(node, str) and node.endswith((".yaml", ".yml")) and (base / node).is_file():
        target = (base / node).resolve()
        return _inline(yaml.safe_load(target.read_text()), target.parent)
    return node


def swap_llm(experiment: dict[str, Any], preset: str | Path) -> None:
    """Put the LLM of ``preset`` (a ``conf/llms`` YAML) into ``experiment`` and resize its projectors to match."""
    llm = load_experiment(preset)
    model_args = experiment["model"]["init_args"]["model"]["init_args"]
    model_args["llm"] = llm
    args = llm.get("init_args", {})
    config = llm_config(args)
    for spec in model_args["projectors"].values():
        spec.setdefault("init_args", {})["out_dim"] = int(config.hidden_size)


def llm_config(args: dict[str, Any]) -> Any:
    """The HF config of a ``CausalLM``'s init args (``config`` dict or ``pretrained``)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**args["config"]) if args.get("config") is not None else hf_config(args["pretrained"])


def _class(class_path: str, packages: tuple[str, ...]) -> type:
    if "." in class_path:
        module, name = class_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    for package in packages:
        module = importlib.import_module(package)
        if hasattr(module, class_path):
            return getattr(module, class_path)
    raise ValueError(f"unknown class {class_path!r} (looked in {', '.join(packages)})")


def stage_kind(stage_class: str) -> str:
    """``align``, ``sft`` or ``dpo`` for a stage class path."""
    name = stage_class.rsplit(".", 1)[-1]
    return {"AlignmentStage": "align", "SFTStage": "sft", "DPOStage": "dpo"}.get(name) or _unknown_stage(name)


def _unknown_stage(name: str) -> str:
    raise ValueError(f"plan knows the stages AlignmentStage, SFTStage and DPOStage, not {name!r}")


# ---- building on the meta device -----------------------------------------------------------------------------------
def hf_config(source: str) -> Any:
    """The Hugging Face config of a local folder or cached hub name, else of :data:`KNOWN_CONFIGS`."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        if source not in KNOWN_CONFIGS:
            raise ValueError(
                f"cannot read the config of {source!r} offline (no local folder or cached copy) and the plan does not "
                f"know its architecture; known: {sorted(KNOWN_CONFIGS)}"
            ) from None
        return AutoConfig.for_model(**KNOWN_CONFIGS[source])


def meta_llm(init_args: dict[str, Any], stage: str, stage_args: dict[str, Any]) -> tuple[nn.Module, bool]:
    """The LLM (with LoRA for SFT/DPO) on the meta device; also whether gradient checkpointing is configured."""
    from transformers import AutoModelForCausalLM

    config = llm_config(init_args)
    dtype = getattr(torch, init_args.get("dtype", "float32"))
    vocab = _vocab_size(config.vocab_size, init_args.get("tokenizer") or init_args.get("pretrained"))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if vocab != config.vocab_size:
            model.resize_token_embeddings(vocab, mean_resizing=False)
    model.requires_grad_(False)
    if stage in ("sft", "dpo"):
        from peft import LoraConfig, get_peft_model

        from anymal_lit.models.lora import LoRASettings

        settings = LoRASettings(**(stage_args.get("lora") or {}))  # the stage's defaults for what the YAML leaves out
        lora = LoraConfig(
            r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
            target_modules=settings.target_modules, task_type="CAUSAL_LM",
        )  # fmt: skip
        with torch.device("meta"):
            model = get_peft_model(model, lora)
            if stage == "dpo":  # the frozen reference adapter beside the trained one
                model.add_adapter("reference", lora)
                model.set_adapter("default")
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name and ".default." in name)
    return model, bool(init_args.get("gradient_checkpointing", False))


def _vocab_size(config_vocab: int, tokenizer: str | None) -> int:
    """The embedding rows ``CausalLM`` ends with: its tokenizer plus the placeholders it lacks (the tokenizer is read
    from a local folder; a hub name counts as the config's vocabulary without placeholders, as Llama-2's is)."""
    if tokenizer is None or not Path(tokenizer).is_dir():
        return config_vocab + PLACEHOLDERS
    from transformers import AutoTokenizer

    from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

    tok = AutoTokenizer.from_pretrained(tokenizer)
    missing = sum(t not in tok.get_vocab() for t in DEFAULT_PLACEHOLDERS.values())
    return max(config_vocab, len(tok) + missing)


def meta_encoder(class_path: str, init_args: dict[str, Any]) -> nn.Module:
    """A kit encoder on the meta device, built from its architecture (``pretrained`` weights are not read)."""
    cls = _class(class_path, ("anymal_lit.encoders",))
    args = dict(init_args)
    name = args.get("model_name") or ""
    if name.startswith("local-dir:"):  # open_clip folders: the architecture is their open_clip_config.json
        args["model_name"], args["model_config"] = None, str(Path(name[len("local-dir:") :]) / "open_clip_config.json")
    if args.get("model_name"):  # a built-in open_clip name: its config through a file (create_model moves to cpu)
        import json
        import tempfile

        import open_clip

        config = open_clip.get_model_config(args.pop("model_name"))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
        args["model_config"] = f.name
    if "model_config" in args:
        args["model_name"], args["pretrained"] = None, None
    elif cls.__name__ == "ClapAudioEncoder" and args.get("pretrained"):
        source = args.pop("pretrained")
        if not Path(source).is_dir() and source not in KNOWN_CONFIGS:
            raise ValueError(f"cannot read the CLAP config {source!r} offline; known: laion/clap-htsat-unfused")
        args["config"] = source if Path(source).is_dir() else {}  # {}: ClapAudioConfig's defaults (HTSAT-unfused)
    elif cls.__name__ == "IMUEncoder" and args.get("pretrained"):
        import json

        from anymal_lit.encoders.imu import CONFIG_FILE, IMUEncoderConfig

        path = Path(args.pop("pretrained")) / CONFIG_FILE
        if path.is_file():
            args["config"] = IMUEncoderConfig(**json.loads(path.read_text()))
        else:  # a small encoder: its defaults are close enough for a plan, and the plan says so
            log.warning("%s not found: the plan sizes IMUEncoder's default architecture", path)
    if cls.__name__ == "IMUEncoder" and isinstance(args.get("config"), dict):  # as jsonargparse would build it
        from anymal_lit.encoders.imu import IMUEncoderConfig

        args["config"] = IMUEncoderConfig(**args["config"])
    with torch.device("meta"):
        return cls(**args)


def meta_model(experiment: dict[str, Any]) -> MetaModel:
    """The experiment's model on the meta device, with ``requires_grad`` as its stage trains it."""
    stage_cfg = experiment["model"]
    stage = stage_kind(stage_cfg["class_path"])
    stage_args = stage_cfg.get("init_args", {})
    model_args = stage_args["model"].get("init_args", {})
    llm, checkpointing = meta_llm(model_args["llm"].get("init_args", {}), stage, stage_args)
    encoders = {m: meta_encoder(e["class_path"], e.get("init_args", {})) for m, e in model_args["encoders"].items()}
    projectors = {}
    for modality, spec in model_args["projectors"].items():
        with torch.device("meta"):
            projectors[modality] = _class(spec["class_path"], ("anymal_lit.projectors",))(**spec.get("init_args", {}))
        projectors[modality].requires_grad_(stage == "align" or stage_args.get("train_projectors", stage == "sft"))
    from anymal_lit.strategies import decoder_layers

    return MetaModel(llm, encoders, projectors, stage, checkpointing, decoder_layers(_base(llm)))


def _base(llm: nn.Module) -> nn.Module:
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm
