"""2-D parallelism: FSDP2 across data-parallel groups x tensor parallelism of the LLM's decoder layers.

``conf/strategy/fsdp_tp.yaml`` selects :class:`FSDPTPStrategy` (Lightning's ``ModelParallelStrategy`` with a
``data_parallel`` x ``tensor_parallel`` device mesh). The stage's ``configure_model`` then calls
:func:`parallelize_llm` on the ``tensor_parallel`` mesh before sharding with FSDP2 over ``data_parallel``:

* each decoder layer's linear layers are split by the tensor-parallel plan transformers ships for the architecture
  (``config.base_model_tp_plan``: q/k/v and the MLP's gate/up column-wise, o and down row-wise; the attention then
  runs on ``heads / tp`` local heads) or, where a config has none, by :data:`STATED_PLANS`;
* LoRA adapters get the matching plans (a plan on the base layer alone leaves the adapter's shapes wrong): under a
  column-wise layer ``lora_B`` is column-wise and ``lora_A`` replicated, under a row-wise layer ``lora_A`` is
  row-wise (its output is all-reduced) and ``lora_B`` replicated;
* the input embeddings are split by vocabulary rows and the output head by vocabulary columns (its logits gathered
  whole, so the loss is computed as on one process) when the vocabulary divides by the tensor-parallel size;
* the encoders, projectors and norms stay whole on every rank of a tensor-parallel group (FSDP2 shards them across
  the data-parallel ranks); every rank of a group reads the same batch.

Head counts (query and key/value) and the MLP width must divide by the tensor-parallel size (checked, with an error
naming the numbers). It runs on CPU (gloo) as on GPU (nccl).
"""

from __future__ import annotations

import re
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from anymal_lit.strategies import FSDP2Strategy

STATED_PLANS: dict[str, dict[str, str]] = {
    # the Llama layout, for configs that ship no base_model_tp_plan (the same names serve Mistral, Qwen2, Gemma)
    "default": {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
}


class FSDPTPStrategy(FSDP2Strategy):
    """FSDP2 x tensor parallelism: ``tensor_parallel_size`` processes split each decoder layer, and the
    ``world size / tensor_parallel_size`` groups shard the rest data-parallel.

    Args:
        tensor_parallel_size: Processes per tensor-parallel group (keep it within a node: it talks every layer).
        **kwargs: As :class:`~lightning.pytorch.strategies.ModelParallelStrategy` (``save_distributed_checkpoint``,
            ``process_group_backend``, ``timeout``). Checkpoints load as :class:`FSDP2Strategy`'s (trainable tensors).
    """

    def __init__(self, tensor_parallel_size: int = 2, **kwargs: Any) -> None:
        ModelParallelStrategy.__init__(
            self, data_parallel_size="auto", tensor_parallel_size=tensor_parallel_size, **kwargs
        )

    def setup_environment(self) -> None:
        world = self.num_nodes * self.num_processes
        if world % self._tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size {self._tensor_parallel_size} does not divide the {world} processes "
                f"({self.num_nodes} node(s) x {self.num_processes})"
            )
        self._data_parallel_size = world // self._tensor_parallel_size
        ModelParallelStrategy.setup_environment(self)  # FSDP2Strategy's would make every process data-parallel


def tp_plan(model: nn.Module) -> dict[str, str]:
    """The tensor-parallel plan of an HF causal LM (``base_model_tp_plan`` of its config, else the stated one)."""
    config = model.config
    plan = getattr(config, "base_model_tp_plan", None) or STATED_PLANS["default"]
    unknown = {style for style in plan.values()} - {"colwise", "rowwise"}
    if unknown:
        raise ValueError(
            f"{config.model_type}: the kit applies colwise/rowwise plans only, this one also has {unknown}"
        )
    return dict(plan)


def check_divisible(config: Any, tp: int) -> None:
    """Head counts (query, key/value) and MLP width must divide by the tensor-parallel size."""
    sizes = {
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
    }
    bad = {k: v for k, v in sizes.items() if v % tp}
    if bad:
        raise ValueError(
            f"tensor_parallel_size {tp} must divide {', '.join(f'{k}={v}' for k, v in bad.items())} "
            f"of the {config.model_type} LLM"
        )


def parallelize_llm(model: nn.Module, mesh: Any) -> int:
    """Split the decoder layers of ``model`` (an HF causal LM, possibly a peft ``PeftModel``) over ``mesh`` (1-D,
    tensor-parallel) in place; returns the number of linear layers split."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    check_divisible(base.config, mesh.size())
    trunk = getattr(base, base.base_model_prefix)  # LlamaForCausalLM.model: what the plan's names are relative to
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    patterns = [(re.compile("^" + re.escape(k).replace(r"\*", r"\d+") + "$"), v) for k, v in tp_plan(base).items()]
    split = 0
    for name, module in list(trunk.named_modules()):
        style = next((s for pattern, s in patterns if pattern.match(name)), None)
        if style is None:
            continue
        base_layer = getattr(module, "base_layer", module)  # peft's LoRA layer wraps the linear
        parallelize_module(base_layer, mesh, styles[style]())
        if base_layer is not module:  # LoRA: y = W x + B A x; split B's output (colwise) or A's input (rowwise)
            for adapter in (module.lora_B if style == "colwise" else module.lora_A).values():
                parallelize_module(adapter, mesh, styles[style]())
        split += 1
    if not split:
        raise ValueError(f"no layer of {type(base).__name__} matches its tensor-parallel plan {tp_plan(base)}")
    split += _parallelize_vocab(base, mesh)
    return split


def _parallelize_vocab(base: nn.Module, mesh: Any) -> int:
    """Split the input embeddings (by vocabulary rows, outputs summed) and the output head (by vocabulary columns,
    logits gathered whole: the loss is unchanged) when the vocabulary divides; tied or odd-sized ones stay whole."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    if embed.num_embeddings % mesh.size() or head is None or head.weight is embed.weight:
        return 0
    parallelize_module(embed, mesh, RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()))
    parallelize_module(head, mesh, ColwiseParallel(output_layouts=Replicate()))
    return 2


def tp_split_parameters(model: nn.Module, tp: int) -> list[nn.Parameter]:
    """The parameters :func:`parallelize_llm` would split over ``tp`` ranks (for ``anymal-lit plan``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    leaves = {name.rsplit(".", 1)[-1]: style for name, style in tp_plan(base).items()}
    out = []
    for name, param in model.named_parameters():
        parts = name.split(".")
        style = next((leaves[p] for p in parts if p in leaves), None)
        if style is None:
            continue
        if "lora_A" in parts and style != "rowwise" or "lora_B" in parts and style != "colwise":
            continue  # the adapter half that stays whole
        if parts[-1] == "bias" and style == "rowwise":
            continue
        out.append(param)
    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    if not embed.num_embeddings % tp and head is not None and head.weight is not embed.weight:
        out += [embed.weight, head.weight]
    return out
