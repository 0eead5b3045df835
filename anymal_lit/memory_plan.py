"""Per-rank memory of a :class:`~anymal_lit.planning.MetaModel` under each sharding preset (see ``planning``).

Activations are not guessed from a formula: the projectors, the LLM and the loss run on fake tensors of the
configured batch and sequence length (``FakeTensorMode``: shapes only, no memory), and the tensors autograd saves
for the backward pass are summed, once per storage, parameters excluded. :func:`saved_tensor_bytes` measures a real
forward the same way, which is how the tests hold the estimate to what a CPU run allocates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from anymal_lit.losses import masked_lm_loss
from anymal_lit.planning import GiB, MetaModel

SHARDS_PARAMS = {"fsdp", "fsdp_tp", "zero3"}
SHARDS_GRADS = {"fsdp", "fsdp_tp", "zero2", "zero3"}


def saved_tensor_bytes(fn: Callable[[], Any], params: Iterable[torch.Tensor] = ()) -> tuple[Any, int]:
    """Run ``fn`` and return its result and the bytes of the storages autograd saved for backward (each storage
    once; the storages of ``params`` and of tensors that are views of them excluded)."""
    skip = {p.untyped_storage()._cdata for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


@dataclass
class Activations:
    """Saved-for-backward bytes of one forward on one rank."""

    projectors: int
    llm: int  # embeddings in -> logits -> loss, no checkpointing
    per_layer: int  # one decoder layer's share of ``llm``
    layer_input: int  # what a checkpointed decoder layer keeps (its input hidden states)
    layers: int

    @property
    def full(self) -> int:
        return self.projectors + self.llm

    @property
    def checkpointed(self) -> int:
        """Every layer keeps its input; one layer's saved tensors live again while it is recomputed."""
        return self.projectors + self.llm - self.layers * (self.per_layer - self.layer_input) + self.per_layer


def trace_activations(
    model: MetaModel, batch_size: int, seq_len: int, media: dict[str, tuple[int, int]]
) -> Activations:
    """Saved bytes for ``batch_size`` rows of ``seq_len`` tokens; ``media``: modality -> (pieces in the batch,
    encoder tokens per piece). The projectors count as the largest single modality's (a batch of one kind)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    llm, train = model.llm, model.stage != "align"  # a frozen LLM stays in eval mode (CausalLM.train)
    llm.train(train)
    dtype = llm.get_input_embeddings().weight.dtype
    hidden = llm.get_input_embeddings().embedding_dim
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, _fake_parameters([llm, *model.projectors.values()], mode):
        params = [p for m in [llm, *model.projectors.values()] for p in m.parameters()]
        proj = 0
        for name, (pieces, tokens) in media.items():
            projector = model.projectors[name].train()
            feats = torch.empty(pieces, tokens, projector.in_dim)
            _, saved = saved_tensor_bytes(partial(projector, feats), params)
            proj = max(proj, saved)
        embeds = torch.empty(batch_size, seq_len, hidden, dtype=dtype, requires_grad=True)
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)
        positions = torch.arange(seq_len).expand(batch_size, -1)
        labels = torch.zeros(batch_size, seq_len, dtype=torch.long)

        def forward() -> torch.Tensor:
            logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).logits
            return masked_lm_loss(logits, labels)

        rerun_first_layer = _capture(model.layers[0])
        _, total = saved_tensor_bytes(forward, params)
        _, per_layer = saved_tensor_bytes(rerun_first_layer, params)
    layer_input = batch_size * seq_len * hidden * torch.empty(0, dtype=dtype).element_size()
    return Activations(proj, total, per_layer, layer_input, len(model.layers))


@contextmanager
def _fake_parameters(modules: list[nn.Module], mode: Any) -> Iterator[None]:
    """Swap the meta parameters of ``modules`` for fake CPU tensors (restored after): on the meta device attention
    runs the math kernel, which saves the L x L probabilities; on CPU (as on GPU) a fused kernel saves only its
    output and log-sum-exp, and the estimate must count what a real run saves."""
    converter = mode.fake_tensor_converter
    swapped = []
    for module in modules:
        for sub in module.modules():
            for key, param in list(sub._parameters.items()):
                if param is None:
                    continue
                fake = converter.from_meta_and_device(mode, param.data, torch.device("cpu"))
                sub._parameters[key] = nn.Parameter(fake, requires_grad=param.requires_grad)
                swapped.append((sub, key, param))
            for key, buf in list(sub._buffers.items()):
                if buf is not None and buf.is_meta:
                    sub._buffers[key] = converter.from_meta_and_device(mode, buf, torch.device("cpu"))
                    swapped.append((sub, key, buf))
    try:
        yield
    finally:
        for sub, key, original in swapped:
            (sub._parameters if key in sub._parameters else sub._buffers)[key] = original


def tp_activations(model: MetaModel, acts: Activations, tp: int, batch_size: int, seq_len: int) -> Activations:
    """``acts`` with each decoder layer's share traced on one rank's slice of a tensor-parallel layer (a one-layer
    LLM with ``heads / tp``, ``key/value heads / tp`` and ``MLP width / tp``; hidden states stay whole)."""
    from anymal_lit.planning import MetaModel, _base, meta_llm

    config = _base(model.llm).config
    local = {
        **config.to_dict(),
        "num_hidden_layers": 1,
        "intermediate_size": config.intermediate_size // tp,
        "num_attention_heads": config.num_attention_heads // tp,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "num_key_value_heads": (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) // tp,
    }
    lora = getattr(model.llm, "peft_config", {}).get("default")
    stage_args = {"lora": {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout}} if lora else {}
    dtype = str(_base(model.llm).get_input_embeddings().weight.dtype).removeprefix("torch.")
    llm, _ = meta_llm({"config": local, "tokenizer": None, "dtype": dtype}, model.stage, stage_args)
    from anymal_lit.strategies import decoder_layers

    one = trace_activations(
        MetaModel(llm, {}, {}, model.stage, layers=decoder_layers(_base(llm))), batch_size, seq_len, {}
    )
    per_layer = one.per_layer
    return Activations(acts.projectors, acts.llm - acts.layers * (acts.per_layer - per_layer), per_layer,
                       acts.layer_input, acts.layers)  # fmt: skip


def _capture(layer: nn.Module) -> Callable[[], Any]:
    """A forward hook that records ``layer``'s first call; the returned function re-runs that call (the layer's
    own saved tensors, isolated from the rest of the model)."""
    call: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not call:
            call.update(args=args, kwargs=kwargs)

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)

    def rerun() -> Any:
        handle.remove()
        return layer(*call["args"], **call["kwargs"])

    return rerun


# ---- strategies ----------------------------------------------------------------------------------------------------
@dataclass
class Strategy:
    name: str
    kind: str  # ddp | fsdp | zero2 | zero3 | fsdp_tp
    precision: str | None
    tp: int = 1  # tensor-parallel group size (fsdp_tp)


def read_strategies(folder: str | Path = "conf/strategy") -> list[Strategy]:
    """The presets of ``folder`` (``conf/strategy/*.yaml``) as sharding kinds."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")):
        trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer", {})
        strategy = trainer.get("strategy")
        if isinstance(strategy, str):
            kind = {"ddp": "ddp", "fsdp": "fsdp", "deepspeed_stage_2": "zero2", "deepspeed_stage_3": "zero3"}[strategy]
        else:
            cls = strategy["class_path"].rsplit(".", 1)[-1]
            args = strategy.get("init_args", {})
            if "DeepSpeed" in cls:
                kind = f"zero{args.get('stage', 2)}"
            elif cls == "FSDP2Strategy":
                kind = "fsdp"
            elif cls == "FSDPTPStrategy":
                out.append(
                    Strategy(path.stem, "fsdp_tp", trainer.get("precision"), args.get("tensor_parallel_size", 2))
                )
                continue
            else:
                continue  # a strategy the plan cannot size
        out.append(Strategy(path.stem, kind, trainer.get("precision")))
    return out


@dataclass
class RankMemory:
    """Bytes one rank holds."""

    strategy: str
    params: int
    grads: int
    optimizer: int
    gathered: int
    activations: int
    activations_checkpointed: int

    @property
    def static(self) -> int:
        return self.params + self.grads + self.optimizer + self.gathered

    def total(self, checkpointing: bool) -> int:
        return self.static + (self.activations_checkpointed if checkpointing else self.activations)


def rank_memory(model: MetaModel, strategy: Strategy, processes: int, precision: str, acts: Activations) -> RankMemory:
    """Per-rank bytes of ``model`` under ``strategy`` on ``processes`` ranks (``precision``: the trainer's)."""
    bf16_cast = strategy.kind.startswith("zero") and (strategy.precision or precision).startswith(("bf16", "16"))

    def size(p: torch.Tensor) -> int:  # DeepSpeed casts the module to bf16/fp16; the others keep each dtype
        return p.numel() * (2 if bf16_cast and p.is_floating_point() else p.element_size())

    n = processes
    split: set[int] = set()  # parameters a tensor-parallel group splits (the rest only FSDP shards, over dp ranks)
    if strategy.kind == "fsdp_tp":
        from anymal_lit.tensor_parallel import tp_split_parameters

        split = {id(p) for p in tp_split_parameters(model.llm, strategy.tp)}
    dp = n // strategy.tp

    def shard(p: torch.Tensor, sharded: bool) -> float:
        if not sharded:
            return size(p)
        return size(p) / (n if id(p) in split or strategy.kind != "fsdp_tp" else dp)

    trainable = model.trainable()
    layer_params = [p for m in model.layers for p in m.parameters()]
    params = sum(shard(p, strategy.kind in SHARDS_PARAMS) for p in model.parameters())
    grads = sum(shard(p, strategy.kind in SHARDS_GRADS) for p in trainable)
    # AdamW: m and v in the parameter's dtype (fp32 for fp32 parameters); DeepSpeed: fp32 m, v and master copy
    per_param = 12 if bf16_cast else None
    optimizer = sum(
        shard(p, strategy.kind in SHARDS_GRADS) / size(p) * p.numel() * (per_param or 2 * p.element_size())
        for p in trainable
    )
    layer = max((sum(size(p) for p in m.parameters()) for m in model.layers), default=0)
    gathered = 0.0
    if strategy.kind in ("fsdp", "fsdp_tp"):  # the root unit (all but the decoder layers) stays whole
        full = {id(p) for p in layer_params}
        root = sum(size(p) / (strategy.tp if id(p) in split else 1) for p in model.parameters() if id(p) not in full)
        gathered = (root + 2 * layer / strategy.tp) * (dp - 1) / dp
    elif strategy.kind == "zero3":
        gathered = 2 * layer * (n - 1) / n
    return RankMemory(
        strategy.name, int(params), int(grads), int(optimizer), int(gathered), acts.full, acts.checkpointed
    )


def gib(n: int) -> str:
    return f"{n / GiB:7.2f}"


def format_table(rows: list[RankMemory], gpu_memory: int, checkpointing: bool) -> str:
    """The plan's table: GiB per rank and whether it fits ``gpu_memory`` bytes."""
    head = f"{'strategy':<16} {'params':>7} {'grads':>7} {'optim':>7} {'gather':>7} {'act':>7} {'act-ckpt':>8} "
    head += f"{'total':>7}  fits {gpu_memory / GiB:.0f} GiB"
    lines = [head, "-" * len(head)]
    for r in rows:
        total = r.total(checkpointing)
        lines.append(
            f"{r.strategy:<16} {gib(r.params)} {gib(r.grads)} {gib(r.optimizer)} {gib(r.gathered)} "
            f"{gib(r.activations)} {gib(r.activations_checkpointed):>8} {gib(total)}  "
            f"{'yes' if total <= gpu_memory else 'NO'}"
        )
    return "\n".join(lines)


# ---- one experiment ------------------------------------------------------------------------------------------------
def media_shapes(model: MetaModel, batch_size: int) -> dict[str, tuple[int, int, int]]:
    """Modality -> (pieces per item, encoder tokens per piece, LLM tokens per item) at the encoders' limits."""
    out = {}
    for name, encoder in model.encoders.items():
        projector = model.projectors[name]
        pieces = getattr(encoder, "max_clips", None) or getattr(encoder, "max_pieces", None) or 1
        if hasattr(encoder, "max_grid"):
            pieces = encoder.max_grid**2
        # encoder tokens per piece: what a resampler is built for; else a CLIP-like 256 (16 x 16 patches)
        positions = getattr(projector, "input_positions", None)
        tokens = positions.shape[0] if positions is not None else 256
        out[name] = (int(pieces), int(tokens), int(pieces * projector.tokens_per_piece(tokens)))
    return out


def plan(
    experiment: str | Path,
    devices: int,
    nodes: int = 1,
    gpu_memory: int = 80 * GiB,
    strategies: str | Path = "conf/strategy",
    batch_size: int | None = None,
    text_tokens: int | None = None,
    seq_len: int | None = None,
    llm: str | Path | None = None,
) -> str:
    """The printed plan of one experiment YAML (see :mod:`anymal_lit.planning`); ``llm``: an LLM preset YAML in
    place of the experiment's (projectors resized to its hidden size)."""
    from anymal_lit.planning import load_experiment, meta_model, swap_llm

    cfg = load_experiment(experiment)
    if llm is not None:
        swap_llm(cfg, llm)
    model = meta_model(cfg)
    data = (cfg.get("data") or {}).get("init_args", {})
    precision = str((cfg.get("trainer") or {}).get("precision", "32-true"))
    batch = batch_size or int(data.get("batch_size", 16))
    rows_per_step = batch * (2 if model.stage == "dpo" else 1)  # DPO: chosen and rejected rows
    shapes = media_shapes(model, batch)
    text = text_tokens or int(data.get("max_length") or 256)
    longest_item = max((s[2] for s in shapes.values()), default=0)
    length = seq_len or text + longest_item
    acts = trace_activations(model, rows_per_step, length, {m: (batch * p, n) for m, (p, n, _) in shapes.items()})
    n = devices * nodes
    rows = []
    for strategy in read_strategies(strategies):
        layer_acts = (
            acts if strategy.kind != "fsdp_tp" else tp_activations(model, acts, strategy.tp, rows_per_step, length)
        )
        rows.append(rank_memory(model, strategy, n, precision, layer_acts))
    counts = {
        "LLM": sum(p.numel() for p in model.llm.parameters()),
        "encoders": sum(p.numel() for e in model.encoders.values() for p in e.parameters()),
        "projectors": sum(p.numel() for e in model.projectors.values() for p in e.parameters()),
        "trainable": sum(p.numel() for p in model.trainable()),
    }
    # a frozen LLM runs in eval mode, where Hugging Face models skip their activation checkpointing
    checkpointing = model.gradient_checkpointing and model.stage != "align"
    media = ", ".join(f"{m}: {p} pieces -> {t} tokens" for m, (p, _, t) in shapes.items())
    lines = [
        f"plan for {experiment}{f' with {llm}' if llm else ''}: {model.stage} stage, {n} GPUs "
        f"({nodes} node(s) x {devices}), {precision}",
        "parameters: " + ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in counts.items()),
        f"per GPU: {batch} rows x {length} tokens ({text} text + longest media item {longest_item}; {media})",
        f"activation checkpointing: {'on' if checkpointing else 'off'} (the total uses "
        f"{'act-ckpt' if checkpointing else 'act'})",
        "GiB per rank:",
        format_table(rows, gpu_memory, checkpointing),
    ]
    if model.gradient_checkpointing and model.stage == "align":
        lines.append("note: gradient_checkpointing is configured but inactive while the LLM is frozen (eval mode)")
    return "\n".join(lines)
