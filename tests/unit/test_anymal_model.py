import pytest
import torch

from anymal_lit.data import ChatTokenizer, PaddingCollator
from anymal_lit.data.collate import ConversationDataset
from anymal_lit.data.records import read_records
from anymal_lit.losses import IGNORE_INDEX, masked_lm_loss
from tests.conftest import build_random_model


@pytest.fixture()
def tiny_model():
    """A random tiny LM (the kit's tokenizer) + random tiny CLIP + resampler; the data come from ``image_data``."""
    torch.manual_seed(0)
    return build_random_model()


def batch_of(model, world, n=3, generation=False):
    records = read_records(world / "image_caption_val.jsonl", {"image": "<image>"})[:n]
    dataset = ConversationDataset(records, ChatTokenizer(model.llm.tokenizer), model.media_processors(), generation)
    return PaddingCollator(model.llm.tokenizer.pad_token_id)([dataset[i] for i in range(n)])


def test_media_tokens_replace_the_placeholder_in_place(tiny_model, image_data):
    model = tiny_model.eval()
    batch = batch_of(model, image_data)
    spliced = model.splice(batch)
    media = model.project_media(batch["media"])["image"]
    k = media[0].shape[0]
    placeholder = model.llm.placeholder_ids["image"]
    text_embeds = model.llm.embed_tokens(batch["input_ids"])
    for r in range(3):
        pos = int((batch["input_ids"][r] == placeholder).nonzero())
        n = int(batch["attention_mask"][r].sum())
        assert torch.equal(spliced.inputs_embeds[r, :pos], text_embeds[r, :pos])
        assert torch.equal(spliced.inputs_embeds[r, pos : pos + k], media[r])
        assert torch.equal(spliced.inputs_embeds[r, pos + k : n + k - 1], text_embeds[r, pos + 1 : n])
        assert (spliced.labels[r, pos : pos + k] == IGNORE_INDEX).all()
        assert int(spliced.attention_mask[r].sum()) == n + k - 1


def test_loss_counts_only_assistant_tokens(tiny_model, image_data):
    model = tiny_model.eval()
    batch = batch_of(model, image_data)
    out = model(batch)
    labels = out["labels"]
    assert out["loss"].item() == pytest.approx(masked_lm_loss(out["logits"], labels).item())
    tokenizer = model.llm.tokenizer
    for r in range(labels.shape[0]):
        labelled = tokenizer.decode(labels[r][labels[r] != IGNORE_INDEX])
        assert "<|user|>" not in labelled and "<image>" not in labelled and labelled.strip().endswith("<|end|>")


def test_gradients_reach_only_the_projector(tiny_model, image_data):
    model = tiny_model
    model.requires_grad_(False)
    model.projectors.requires_grad_(True)
    model(batch_of(model, image_data))["loss"].backward()
    assert all(p.grad is not None for p in model.projectors.parameters())
    assert all(p.grad is None for p in model.llm.parameters())
    assert all(p.grad is None for p in model.encoders.parameters())


def test_batched_generation_equals_one_by_one(tiny_model, image_data):
    model = tiny_model.eval()
    batched = model.generate(batch_of(model, image_data, 4, generation=True), max_new_tokens=12)
    single = []
    records = read_records(image_data / "image_caption_val.jsonl", {"image": "<image>"})[:4]
    ds = ConversationDataset(records, ChatTokenizer(model.llm.tokenizer), model.media_processors(), True)
    collate = PaddingCollator(model.llm.tokenizer.pad_token_id)
    for i in range(4):
        single += model.generate(collate([ds[i]]), max_new_tokens=12)
    assert batched == single


def test_dimension_mismatch_is_reported():
    from anymal_lit import AnyMALModel
    from anymal_lit.projectors import LinearProjector

    model = build_random_model()
    llm, enc = model.llm, model.encoders["image"]
    with pytest.raises(ValueError, match="in_dim=64 but encoder OpenCLIPImageEncoder outputs 32"):
        AnyMALModel(llm, {"image": enc}, {"image": LinearProjector(64, llm.hidden_size)})
    with pytest.raises(ValueError, match="out_dim=7"):
        AnyMALModel(llm, {"image": enc}, {"image": LinearProjector(32, 7)})


def test_context_overflow_after_media_expansion_names_the_record(tiny_model, image_data):
    model = tiny_model.eval()
    model.llm.model.config.max_position_embeddings = 20
    with pytest.raises(ValueError, match="exceed the LLM context"):
        model(batch_of(model, image_data))


def test_placeholder_without_media_is_an_error(tiny_model, image_data):
    model = tiny_model.eval()
    batch = batch_of(model, image_data)
    batch["media"]["image"]["counts"] = batch["media"]["image"]["counts"][:2]
    batch["media"]["image"]["pieces"] = batch["media"]["image"]["pieces"][:2]
    with pytest.raises(ValueError, match="more <image> placeholders than image items"):
        model(batch)
