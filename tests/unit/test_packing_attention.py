"""Packed rows through per-sample SDPA, flex attention (a document BlockMask) or the dense mask: the same logits,
loss and gradients."""

import pytest
import torch

from anymal_lit.models import packed_attention
from tests.conftest import build_random_model
from tests.unit.test_anymal_model import batch_of


def _packed_model():
    torch.manual_seed(0)
    model = build_random_model().eval()
    model.packing_length = 512
    return model


def test_flex_and_mask_give_the_same_packed_logits_and_loss(image_data, monkeypatch):
    model = _packed_model()
    batch = batch_of(model, image_data, 4)
    reason = packed_attention.flex_unavailable(model.llm.model, torch.device("cpu"), needs_grad=False)
    if reason is not None:
        pytest.skip(f"flex attention unavailable: {reason}")
    calls = []
    block_mask = packed_attention.document_block_mask
    monkeypatch.setattr(packed_attention, "document_block_mask", lambda s: calls.append(s) or block_mask(s))
    with torch.no_grad():  # CPU flex has no backward pass: an evaluation pass
        model.packing_attention = "mask"
        masked = model(batch)
        model.packing_attention = "flex"
        flexed = model(batch)
    assert len(calls) == 1  # the flex pass did go through a BlockMask
    assert torch.equal(flexed["segments"], masked["segments"]) and masked["logits"].shape[0] < 4
    real = masked["segments"] >= 0
    assert torch.allclose(flexed["logits"][real], masked["logits"][real], atol=1e-4)
    assert flexed["loss"].item() == pytest.approx(masked["loss"].item(), rel=1e-5)


@pytest.mark.parametrize("base", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["", "checkpointed"])
def test_per_sample_attention_gives_the_masks_logits_loss_and_gradients(image_data, monkeypatch, base, checkpointing):
    model = _packed_model()
    model.llm.model.set_attn_implementation(base)
    model.llm.model.requires_grad_(True)  # the LLM trains (SFT), so its layers checkpoint where asked
    if checkpointing:  # the backward pass recomputes each layer after the forward pass returned
        model.llm.model.gradient_checkpointing_enable()
    model.train()
    batch = batch_of(model, image_data, 4)
    calls = []
    attention = packed_attention.document_attention
    monkeypatch.setattr(packed_attention, "document_attention", lambda *a, **k: calls.append(1) or attention(*a, **k))
    out, grads = {}, {}
    for choice in ("mask", "documents"):
        model.packing_attention = choice
        model.zero_grad()
        out[choice] = model(batch)
        out[choice]["loss"].backward()
        grads[choice] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    layers = model.llm.model.config.num_hidden_layers
    # every layer of the packed pass went through the per-sample attention, and again when recomputed
    assert len(calls) == layers * (2 if checkpointing else 1)
    masked, documents = out["mask"], out["documents"]
    assert masked["logits"].shape[0] < 4 and torch.equal(documents["segments"], masked["segments"])
    real = masked["segments"] >= 0
    assert torch.allclose(documents["logits"][real], masked["logits"][real], atol=1e-5)
    assert documents["loss"].item() == pytest.approx(masked["loss"].item(), rel=1e-6)
    assert any(n.startswith("llm.") for n in grads["mask"]) and grads["mask"].keys() == grads["documents"].keys()
    for name, grad in grads["mask"].items():
        assert torch.allclose(grads["documents"][name], grad, atol=1e-6, rtol=1e-4), name


def test_a_packed_pass_leaves_unpacked_passes_to_the_llms_own_attention(image_data):
    model = _packed_model()
    batch = batch_of(model, image_data, 4)
    with torch.no_grad():
        before = model(batch, pack=False)["logits"]
        model.packing_attention = "documents"
        model(batch)
        assert model.llm.model.config._attn_implementation == "anymal_packed_sdpa"
        after = model(batch, pack=False)["logits"]
    assert torch.equal(before, after)
    model.llm.model.set_attn_implementation("flex_attention")
    with pytest.raises(ValueError, match="needs the LLM's attn_implementation 'sdpa' or 'eager', got 'flex_attention'"):
        model(batch)


def test_document_spans_split_rows_into_their_samples_and_padding():
    segments = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 3, 3, 3, 3, -1], [4, 4, 4, 4, 4, 4]])
    spans = packed_attention.document_spans(segments)
    assert spans == [
        (0, 0, 3, True), (0, 3, 5, True), (0, 5, 6, False), (1, 0, 1, True), (1, 1, 5, True), (1, 5, 6, False),
        (2, 0, 6, True),
    ]  # fmt: skip
    assert packed_attention.document_spans(torch.tensor([[5, 5], [5, 5]])) == [(0, 0, 2, True), (1, 0, 2, True)]


def test_auto_uses_per_sample_attention_on_cpu_and_flex_falls_back_where_it_cannot_run(image_data, monkeypatch):
    model = _packed_model()
    batch = batch_of(model, image_data, 4)
    embeds = torch.zeros(1, 2, model.llm.hidden_size)
    assert not packed_attention.use_flex("auto", model.llm.model, embeds)  # measured slower on CPU
    calls = []
    attention = packed_attention.document_attention
    monkeypatch.setattr(packed_attention, "document_attention", lambda *a, **k: calls.append(1) or attention(*a, **k))
    model.packing_attention = "auto"
    auto = model(batch)["loss"]
    assert calls  # auto on CPU: one SDPA call per sample
    assert not packed_attention.use_flex("mask", model.llm.model, embeds)
    model.packing_attention = "mask"
    masked = model(batch)["loss"]
    model.packing_attention = "flex"
    packed_attention._warned.clear()
    with pytest.warns(UserWarning, match="falls back to the dense mask: FlexAttention has no backward pass on CPU"):
        flexed = model(batch)["loss"]  # projectors train: a CPU training pass needs a backward
    flexed.backward()
    assert flexed.item() == pytest.approx(masked.item(), rel=1e-6)
    assert auto.item() == pytest.approx(masked.item(), rel=1e-6)
    with pytest.raises(ValueError, match="packing_attention must be one of"):
        packed_attention.check_choice("varlen")
