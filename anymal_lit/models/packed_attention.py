"""The attention kernel of packed rows: each document on its own, a FlexAttention document mask, or the dense 4-D mask.

``AnyMALModel(packing_attention=...)`` chooses, for its packed forward passes only (padded passes, generation and
DPO's per-row passes always use the LLM's own attention):

* ``"documents"``: ``scaled_dot_product_attention`` on each packed sample alone (causal): a variable-length
  attention made of one SDPA call per sample, on any device and with a backward pass. No work goes to the blocks the
  document mask zeroes, so a pack's attention costs what its samples' would cost alone;
* ``"mask"``: the dense boolean mask ``[R, 1, L, L]`` of :class:`~anymal_lit.models.packing.PackedInputs`, through
  the LLM's attention implementation (SDPA by default), which computes every block of every pack;
* ``"flex"``: ``torch.nn.attention.flex_attention`` with a document (block-diagonal causal) ``BlockMask``, through
  transformers' ``flex_attention`` function; where flex cannot run it falls back to the mask, warning once with the
  reason;
* ``"auto"`` (default): flex on CUDA, ``documents`` elsewhere.

``documents`` and ``flex`` reach their kernels through an attention implementation this module registers with
transformers, ``anymal_packed_<base>`` (``<base>``: the LLM's own, ``sdpa`` or ``eager``). It picks the kernel by the
mask it is given (a ``BlockMask``, the packs' integer segments, or any other mask for ``<base>``), so it stays set
after a packed pass: a layer that gradient checkpointing recomputes in the backward pass reaches the same kernel.

Why not flex on CPU (measured with torch 2.14 on a 2-core CPU, 8 packs x 10 heads x 256 tokens x 64 dims, one layer):
flex has no backward pass on CPU (``NotImplementedError: FlexAttention does not support backward on CPU``), and
without gradients the compiled flex kernel took 0.069 s against 0.034 s for SDPA with the dense mask (eager flex,
which materialises the scores: 0.33 s). On CUDA flex's kernel skips the blocks the document mask zeroes.
(``torch.nn.attention.varlen.varlen_attn`` is the other variable-length kernel torch ships; it is CUDA-only.)
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anymal_lit.models.packing import PackedInputs
from anymal_lit.models.varlen_attention import Spans, cpu_varlen_attention

PACKING_ATTENTION = ("auto", "documents", "flex", "mask")
"""The choices of ``AnyMALModel(packing_attention=...)``."""

_warned: set[str] = set()
PACKED = "anymal_packed_"
"""The prefix of the attention implementations that dispatch packed masks (``anymal_packed_sdpa``, ``..._eager``)."""


def check_choice(choice: str) -> str:
    if choice not in PACKING_ATTENTION:
        raise ValueError(f"packing_attention must be one of {PACKING_ATTENTION}, got {choice!r}")
    return choice


def flex_unavailable(model: nn.Module, device: torch.device, needs_grad: bool) -> str | None:
    """Why flex attention cannot run this packed pass (None: it can)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if not getattr(_pretrained(model), "_supports_flex_attn", False):
        return f"{type(_pretrained(model)).__name__} does not support transformers' flex_attention"
    if device.type == "cpu" and needs_grad:
        return "FlexAttention has no backward pass on CPU"
    if device.type not in ("cpu", "cuda"):
        return f"flex attention is not supported on {device.type}"
    return None


def use_flex(choice: str, model: nn.Module, embeds: torch.Tensor) -> bool:
    """Whether the packed pass of ``embeds`` runs through flex attention under ``choice``."""
    if choice in ("mask", "documents") or (choice == "auto" and embeds.device.type != "cuda"):
        return False
    # LoRA weights make q/k/v need a backward even where the embeddings do not
    needs_grad = torch.is_grad_enabled() and (embeds.requires_grad or any(p.requires_grad for p in model.parameters()))
    reason = flex_unavailable(model, embeds.device, needs_grad)
    if reason is None:
        return True
    if choice == "flex" and reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"packing_attention='flex' falls back to the dense mask: {reason}", stacklevel=3)
    return False


def document_block_mask(segments: torch.Tensor) -> Any:
    """The ``BlockMask`` of packed rows with ``segments`` ``[R, L]`` (-1 = padding): the same pattern as the dense
    mask of :class:`~anymal_lit.models.packing.PackedInputs` (causal within a sample, padding sees itself only)."""
    from torch.nn.attention.flex_attention import create_block_mask

    rows, length = segments.shape

    def document(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        seg_q = segments[b, q]
        return ((seg_q == segments[b, kv]) & (q >= kv) & (seg_q >= 0)) | (q == kv)

    return create_block_mask(document, rows, None, length, length, device=segments.device)


def document_spans(segments: torch.Tensor) -> Spans:
    """The runs of one segment id along the packed rows of ``segments`` ``[R, L]``, row after row, as
    ``(row, start, end, is_a_sample)`` (-1: padding); a row's end always ends a run, and the runs cover every token."""
    rows, length = segments.shape
    flat = segments.reshape(-1)
    index = torch.arange(flat.numel(), device=flat.device)
    starts = ((index % length == 0) | (flat != torch.roll(flat, 1))).nonzero().squeeze(1)
    ends = torch.cat([starts[1:], starts.new_tensor([flat.numel()])])
    return [
        (start // length, start % length, start % length + end - start, real)
        for start, end, real in zip(starts.tolist(), ends.tolist(), (flat[starts] >= 0).tolist())
    ]


def document_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: causal SDPA on each packed sample alone.

    ``query`` ``[R, Hq, L, D]``, ``key``/``value`` ``[R, Hkv, L, D]``; ``attention_mask`` is not a mask but the
    packs' ``segments`` as ``[R, 1, 1, L]`` (an integer 4-D tensor reaches the attention function as it is). On CPU
    without dropout the samples go through :func:`~anymal_lit.models.varlen_attention.cpu_varlen_attention` (torch's
    CPU flash kernels in one autograd node); elsewhere each tensor is laid out once as ``[H, R * L, D]`` and split
    into its samples along the tokens, one SDPA call each (so the backward pass is one concatenation, not a
    zero-filled copy per sample). Padding attends to itself only, as in the dense mask (its output is its value).
    Returns ``[R, L, Hq, D]``."""
    unsupported = [k for k in ("softcap", "sliding_window", "s_aux") if kwargs.get(k) is not None]
    if unsupported:
        raise ValueError(f"packing_attention='documents' does not support {unsupported}: use 'mask' for this LLM")
    spans = getattr(attention_mask, "_anymal_spans", None)
    if spans is None:  # once per packed pass: every layer (and a checkpointed layer's recompute) gets this tensor
        spans = attention_mask._anymal_spans = document_spans(attention_mask[:, 0, 0])
    rows, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    if _cpu_kernels(query, dropout):
        if torch.is_autocast_enabled("cpu"):  # as autocast does for SDPA: rotary embeddings leave q, k in fp32
            dtype = torch.get_autocast_dtype("cpu")
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        if groups > 1:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        return cpu_varlen_attention(query, key, value, spans, scaling), None
    # elsewhere: one SDPA call per sample through autograd, on the tokens laid out once as [H, R * L, D]
    q, k, v = (
        t.transpose(0, 1).reshape(t.shape[1], rows * length, dim).split([e - s for _, s, e, _ in spans], dim=1)
        for t in (query, key, value)
    )
    out = torch.cat(
        [
            F.scaled_dot_product_attention(
                q[i][None], k[i][None], v[i][None], dropout_p=dropout, is_causal=True, scale=scaling,
                enable_gqa=groups > 1,
            )[0]
            if real
            else v[i].repeat_interleave(groups, dim=0)
            for i, (*_, real) in enumerate(spans)
        ],
        dim=1,
    )  # fmt: skip
    return out.view(heads, rows, length, dim).permute(1, 2, 0, 3), None


def _cpu_kernels(query: torch.Tensor, dropout: float) -> bool:
    """Whether per-sample attention runs through torch's CPU flash kernels directly (no dropout there)."""
    return query.device.type == "cpu" and dropout == 0.0


def packed_attention(model: nn.Module, packed: PackedInputs, choice: str) -> Any:
    """The attention mask to pass to the LLM ``model`` for a packed pass (the dense mask is built only when the pass
    needs it): a ``BlockMask`` for flex, the segments ``[R, 1, 1, L]`` for per-sample attention."""
    if use_flex(choice, model, packed.inputs_embeds):
        _dispatch_packed_masks(model)
        return document_block_mask(packed.segments)
    if choice == "documents" or (choice == "auto" and packed.inputs_embeds.device.type != "cuda"):
        _dispatch_packed_masks(model)
        return packed.segments[:, None, None, :]
    mask = packed.attention_mask
    if _pretrained(model).config._attn_implementation.removeprefix(PACKED) == "eager":
        # eager attention adds its mask to the scores: a boolean one would add 1 where it means "attend"
        return torch.zeros(mask.shape, dtype=packed.inputs_embeds.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(packed.inputs_embeds.dtype).min
        )
    return mask


def _dispatch_packed_masks(model: nn.Module) -> None:
    """Make the LLM's attention implementation ``anymal_packed_<base>``: flex for a ``BlockMask``, per-sample
    attention for an integer segments tensor, the model's own implementation ``<base>`` for every other mask.

    The switch is permanent, not scoped to the packed pass: gradient checkpointing recomputes a layer during the
    backward pass, after the forward has returned, and the recompute must reach the same kernel (with the base
    implementation it would read the segments as a mask). Unpacked passes are unchanged: they reach ``<base>``."""
    pretrained = _pretrained(model)
    base = pretrained.config._attn_implementation
    if base.startswith(PACKED):
        return
    if base not in ("sdpa", "eager"):
        raise ValueError(
            f"packed attention through documents or flex needs the LLM's attn_implementation 'sdpa' or 'eager', "
            f"got {base!r}: load it with one of those, or set packing_attention='mask'"
        )
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(PACKED + base, functools.partial(_packed_or_base, base))
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED + base, ALL_MASK_ATTENTION_FUNCTIONS[base])
    pretrained.set_attn_implementation(PACKED + base)


def _packed_or_base(
    base: str, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The attention function ``anymal_packed_<base>`` registers: the kernel the mask's kind names."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if isinstance(attention_mask, BlockMask):
        function = ALL_ATTENTION_FUNCTIONS["flex_attention"]
    elif isinstance(attention_mask, torch.Tensor) and not (
        attention_mask.is_floating_point() or attention_mask.dtype == torch.bool
    ):  # transformers' own masks are boolean or additive floats: an integer one is the packs' segments
        function = document_attention
    elif base == "eager":  # each architecture's own eager function, as its attention module falls back to
        function = sys.modules[type(module).__module__].eager_attention_forward
    else:
        function = ALL_ATTENTION_FUNCTIONS[base]
    return function(module, query, key, value, attention_mask, **kwargs)


def _pretrained(model: nn.Module) -> nn.Module:
    """The transformers ``PreTrainedModel`` inside ``model`` (a peft ``PeftModel`` wraps it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
