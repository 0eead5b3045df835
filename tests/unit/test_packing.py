"""Sample packing: same loss as padding, no attention across samples, sensible plans."""

import pytest
import torch

from anymal_lit.losses import masked_lm_loss
from anymal_lit.models.packing import pack_rows, plan_packs
from tests.conftest import build_random_model
from tests.unit.test_anymal_model import batch_of


def test_plan_packs_fits_and_keeps_every_row():
    lengths = [70, 20, 50, 30, 90, 10]
    packs = plan_packs(lengths, 100)
    assert sorted(i for p in packs for i in p) == list(range(6))
    assert all(sum(lengths[i] for i in p) <= 100 for p in packs)
    assert len(packs) == 3 and {sum(lengths[i] for i in p) for p in packs} == {90}  # balanced: no padding at all
    with pytest.raises(ValueError, match="longer than the packing length"):
        plan_packs([120], 100)


def test_packed_loss_equals_token_weighted_mean_and_samples_stay_isolated(image_data):
    torch.manual_seed(0)
    model = build_random_model().eval()
    batch = batch_of(model, image_data, 4)
    padded = model(batch)
    model.packing_length = 512
    packed = model(batch)
    assert packed["logits"].shape[0] < batch["input_ids"].shape[0]  # rows were actually packed together
    # token-weighted mean of the per-sample losses (each sample alone, no padding at all)
    rows_e, rows_l = model.splice_rows(batch)
    total, count = 0.0, 0
    for r, (emb, lab) in enumerate(zip(rows_e, rows_l)):
        alone = model.llm(inputs_embeds=emb[None], use_cache=False).logits
        n = int((lab[1:] != -100).sum())
        total += masked_lm_loss(alone, lab[None]).item() * n
        count += n
        seg = packed["segments"] == r
        assert torch.allclose(packed["logits"][seg], alone[0], atol=1e-4)  # same logits as when alone
    assert packed["loss"].item() == pytest.approx(total / count, rel=1e-5)
    assert packed["loss"].item() == pytest.approx(padded["loss"].item(), rel=1e-5)


def test_changing_one_sample_leaves_the_others_unchanged():
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4,
    )  # fmt: skip
    lm = AutoModelForCausalLM.from_config(cfg).eval()
    rows = [torch.randn(n, 32) for n in (5, 7, 3)]
    a = pack_rows(rows, None, 16)
    rows[1] = torch.randn(7, 32)
    b = pack_rows(rows, None, 16)
    assert torch.equal(a.segments, b.segments)
    run = lambda p: (
        lm(  # noqa: E731
            inputs_embeds=p.inputs_embeds, attention_mask=p.attention_mask, position_ids=p.position_ids, use_cache=False
        ).logits
    )
    la, lb = run(a), run(b)
    for seg in (0, 2):
        assert torch.equal(la[a.segments == seg], lb[b.segments == seg])
    assert not torch.allclose(la[a.segments == 1], lb[b.segments == 1])
    mask = a.attention_mask[:, 0]
    cross = a.segments[:, :, None] != a.segments[:, None, :]
    assert not (mask & cross & (a.segments >= 0)[:, :, None] & (a.segments >= 0)[:, None, :]).any()


def test_pad_rows_pads_either_side_to_the_longest_or_a_fixed_length():
    from anymal_lit.models.padding import attention_mask, pad_rows

    rows = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    assert pad_rows(rows, 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad_rows(rows, -1, "left").tolist() == [[1, 2, 3], [-1, -1, 4]]
    assert pad_rows(rows, 0, "left", length=5).tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]]
    assert pad_rows(rows, 0, length=2).shape == (2, 3)  # never cuts a row
    assert attention_mask([3, 1], "left").tolist() == [[1, 1, 1], [0, 0, 1]]
    embeds = pad_rows([torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(1, 4, dtype=torch.bfloat16)], 0.0)
    assert embeds.shape == (2, 2, 4) and embeds.dtype == torch.bfloat16 and embeds[1, 1].abs().sum() == 0
