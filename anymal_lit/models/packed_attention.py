"""The attention kernel of packed rows: each document on its own, a FlexAttention document mask, or the dense 4-D mask.

``AnyMALModel(packing_attention=...)`` chooses, for its packed forward passes only (padded passes, generation and
DPO's per-row passes always use the LLM's own attention):

* ``"documents"``: ``scaled_dot_product_attention`` on each packed sample alone (causal), through a transformers
  attention function this module registers (``anymal_documents``): a variable-length attention made of one SDPA call
  per sample, on any device and with a backward pass. No work goes to the blocks the document mask zeroes, so a
  pack's attention costs what its samples' would cost alone;
* ``"mask"``: the dense boolean mask ``[R, 1, L, L]`` of :class:`~anymal_lit.models.packing.PackedInputs`, through
  the LLM's attention implementation (SDPA by default), which computes every block of every pack;
* ``"flex"``: ``torch.nn.attention.flex_attention`` with a document (block-diagonal causal) ``BlockMask``, through
  transformers' ``flex_attention`` implementation, switched on for the packed call only; where flex cannot run it
  falls back to the mask, warning once with the reason;
* ``"auto"`` (default): flex on CUDA, ``documents`` elsewhere.

Why not flex on CPU (measured with torch 2.14 on a 2-core CPU, 8 packs x 10 heads x 256 tokens x 64 dims, one layer):
flex has no backward pass on CPU (``NotImplementedError: FlexAttention does not support backward on CPU``), and
without gradients the compiled flex kernel took 0.069 s against 0.034 s for SDPA with the dense mask (eager flex,
which materialises the scores: 0.33 s). On CUDA flex's kernel skips the blocks the document mask zeroes.
(``torch.nn.attention.varlen.varlen_attn`` is the other variable-length kernel torch ships; it is CUDA-only.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anymal_lit.models.packing import PackedInputs

PACKING_ATTENTION = ("auto", "documents", "flex", "mask")
"""The choices of ``AnyMALModel(packing_attention=...)``."""

_warned: set[str] = set()
DOCUMENTS = "anymal_documents"
"""The name of the per-document attention in transformers' attention registry."""


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
    packs' ``segments`` as ``[R, 1, 1, L]`` (a 4-D tensor reaches the attention function as it is). Padding attends
    to itself only, as in the dense mask (its output is its value). Returns ``[R, L, Hq, D]``."""
    unsupported = [k for k in ("softcap", "sliding_window", "s_aux") if kwargs.get(k) is not None]
    if unsupported:
        raise ValueError(f"packing_attention='documents' does not support {unsupported}: use 'mask' for this LLM")
    groups = query.shape[1] // key.shape[1]
    rows = []
    for r, runs in enumerate(_runs(attention_mask[:, 0, 0])):
        pieces = []
        for start, end, real in runs:
            q, k, v = (t[r : r + 1, :, start:end] for t in (query, key, value))
            if real:
                pieces.append(
                    F.scaled_dot_product_attention(
                        q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=groups > 1
                    )
                )
            else:
                pieces.append(v.repeat_interleave(groups, dim=1))
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _runs(segments: torch.Tensor) -> list[list[tuple[int, int, bool]]]:
    """Per packed row, its runs of one segment id as ``(start, end, is_a_sample)`` (-1: padding)."""
    out = []
    for row in segments.tolist():
        runs, start = [], 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                runs.append((start, i, row[start] >= 0))
                start = i
        out.append(runs)
    return out


_registered = False


def _register_documents() -> None:
    """Register the per-sample attention with transformers, once per process."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    # through the module's name, so the registry always calls this module's current function
    AttentionInterface.register(DOCUMENTS, lambda *args, **kwargs: document_attention(*args, **kwargs))
    ALL_MASK_ATTENTION_FUNCTIONS.register(DOCUMENTS, sdpa_mask)  # never built: the segments come as a 4-D tensor
    _registered = True


def packed_attention(model: nn.Module, packed: PackedInputs, choice: str) -> tuple[Any, AbstractContextManager]:
    """The attention mask to pass to the LLM ``model`` for a packed pass and the context to run the pass in (the
    dense mask is built only when the pass needs it)."""
    if use_flex(choice, model, packed.inputs_embeds):
        return document_block_mask(packed.segments), _implementation(model, "flex_attention")
    if choice == "documents" or (choice == "auto" and packed.inputs_embeds.device.type != "cuda"):
        _register_documents()
        return packed.segments[:, None, None, :], _implementation(model, DOCUMENTS)
    return packed.attention_mask, nullcontext()


@contextmanager
def _implementation(model: nn.Module, name: str) -> Iterator[None]:
    """Run ``model`` with transformers attention implementation ``name``, restoring the previous one after."""
    pretrained = _pretrained(model)
    previous = pretrained.config._attn_implementation
    pretrained.set_attn_implementation(name)
    try:
        yield
    finally:
        pretrained.set_attn_implementation(previous)


def _pretrained(model: nn.Module) -> nn.Module:
    """The transformers ``PreTrainedModel`` inside ``model`` (a peft ``PeftModel`` wraps it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
