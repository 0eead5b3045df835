"""Per-sample attention over packed rows: torch's CPU flash kernels in one autograd node, and one SDPA call per sample
elsewhere, against SDPA with the dense block-diagonal mask (outputs and gradients, grouped-query heads)."""

import pytest
import torch
import torch.nn.functional as F

from anymal_lit.models import packed_attention
from anymal_lit.models.packing import PackedInputs
from anymal_lit.models.varlen_attention import cpu_varlen_attention

SEGMENTS = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1, -1], [2, 2, 2, 2, 2, 3, 3, 3, 3], [4, 5, 5, 5, 5, 5, 5, 5, -1]])


def _qkv(heads: int, kv_heads: int, dim: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(0)
    rows, length = SEGMENTS.shape
    return [torch.randn(rows, h, length, dim, requires_grad=True) for h in (heads, kv_heads, kv_heads)]


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    mask = PackedInputs(None, None, None, SEGMENTS).attention_mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)  # [R, L, H, D]


@pytest.mark.parametrize("kernels", ["cpu flash", "sdpa per sample"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
def test_document_attention_matches_the_dense_mask_with_its_gradients(monkeypatch, kernels, heads, kv_heads):
    monkeypatch.setattr(packed_attention, "_cpu_kernels", lambda q, dropout: kernels == "cpu flash")
    calls = []
    varlen = packed_attention.cpu_varlen_attention
    monkeypatch.setattr(packed_attention, "cpu_varlen_attention", lambda *a: calls.append(1) or varlen(*a))
    grads = {}
    for name in ("dense", "documents"):
        q, k, v = _qkv(heads, kv_heads)
        if name == "dense":
            out = _dense(q, k, v)
        else:
            out, _ = packed_attention.document_attention(None, q, k, v, SEGMENTS[:, None, None, :])
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * weights).sum().backward()
        grads[name] = (out.detach(), q.grad, k.grad, v.grad)
    assert len(calls) == (kernels == "cpu flash")
    for name, got, want in zip(("out", "dq", "dk", "dv"), grads["documents"], grads["dense"]):
        assert torch.allclose(got, want, atol=1e-5), name


def test_cpu_varlen_attention_keeps_samples_apart_and_padding_to_itself():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 4) for _ in range(3))
    out = cpu_varlen_attention(q, k, v, [(0, 0, 3, True), (0, 3, 5, True), (0, 5, 7, False)]).transpose(1, 2)
    alone = F.scaled_dot_product_attention(q[..., 3:5, :], k[..., 3:5, :], v[..., 3:5, :], is_causal=True)
    assert torch.allclose(out[..., 3:5, :], alone, atol=1e-6)  # the second sample does not see the first
    assert torch.allclose(out[..., 0, :], v[..., 0, :])  # a sample's first token sees only itself
    assert torch.equal(out[..., 5:, :], v[..., 5:, :])  # padding: its own value


def test_document_attention_under_bf16_autocast_matches_the_dense_mask():
    q, k, v = _qkv(4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        documents, _ = packed_attention.document_attention(None, q, k, v.bfloat16(), SEGMENTS[:, None, None, :])
        dense = _dense(q, k, v.bfloat16())
    assert documents.dtype == dense.dtype == torch.bfloat16
    assert torch.allclose(documents.float(), dense.float(), atol=2e-2)
    documents.float().sum().backward()
    assert q.grad.dtype == torch.float32 and v.grad is not None
