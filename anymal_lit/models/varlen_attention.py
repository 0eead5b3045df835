"""Causal attention over variable-length samples packed into rows, on CPU, in one autograd node.

torch ships a variable-length attention for CUDA only (``torch.nn.attention.varlen``), and FlexAttention has no
backward pass on CPU. :func:`cpu_varlen_attention` calls torch's own CPU flash-attention kernels
(``aten::_scaled_dot_product_flash_attention_for_cpu`` and its backward) once per sample on views of the packed
rows, writing into one output: no attention is computed across samples, no input is copied, and no autograd node,
split or concatenation is made per sample.
"""

from __future__ import annotations

from typing import Any

import torch

Spans = list[tuple[int, int, int, bool]]
"""``(row, start, end, is_a_sample)`` for each run of one segment along the packed rows: a sample attends causally
within itself; a run that is not a sample (padding) attends to itself only (its output is its value)."""


def cpu_varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, spans: Spans, scale: float | None = None
) -> torch.Tensor:
    """Causal attention within each span of ``spans`` over ``query``/``key``/``value`` ``[R, H, L, D]`` (any strides;
    key and value already repeated to the query's heads). Returns ``[R, L, H, D]``."""
    return _CPUVarlenAttention.apply(query, key, value, spans, scale)


class _CPUVarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, spans: Spans, scale: Any):
        rows, heads, length, dim = query.shape
        out = query.new_empty(rows, length, heads, dim)
        lse = []
        for row, start, end, real in spans:
            span = (slice(row, row + 1), slice(None), slice(start, end))
            if real:
                o, s = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    query[span], key[span], value[span], 0.0, True, scale=scale
                )
                out[row, start:end] = o[0].transpose(0, 1)
                lse.append(s)
            else:
                out[row, start:end] = value[row, :, start:end].transpose(0, 1)
        ctx.save_for_backward(query, key, value, out, *lse)
        ctx.spans, ctx.scale = spans, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        query, key, value, out, *lse = ctx.saved_tensors
        grads = [t.new_empty(t.shape[0], t.shape[2], t.shape[1], t.shape[3]) for t in (query, key, value)]
        dq, dk, dv = (g.transpose(1, 2) for g in grads)  # [R, H, L, D] views of [R, L, H, D] buffers
        grad = grad.transpose(1, 2)  # [R, H, L, D]
        outs = out.transpose(1, 2)
        samples = iter(lse)
        for row, start, end, real in ctx.spans:
            span = (slice(row, row + 1), slice(None), slice(start, end))
            if real:
                gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                    grad[span], query[span], key[span], value[span], outs[span], next(samples), 0.0, True,
                    scale=ctx.scale,
                )  # fmt: skip
                dq[span], dk[span], dv[span] = gq, gk, gv
            else:  # padding: output = value
                dq[span], dk[span], dv[span] = 0, 0, grad[span]
        return dq, dk, dv, None, None
