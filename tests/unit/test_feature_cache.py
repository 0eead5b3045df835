"""Frozen-feature cache: same loss as live encoding, mixed batches, stale entries never used."""

import shutil

import pytest
import torch

from anymal_lit.data import ChatTokenizer, ConversationDataset, PaddingCollator, read_records
from anymal_lit.data.feature_cache import CachedFeatures, FeatureCache, encoder_key
from anymal_lit.encoders import MediaError


def batch(model, records, processors):
    data = ConversationDataset(records, ChatTokenizer(model.llm.tokenizer), processors)
    return PaddingCollator(model.llm.tokenizer.pad_token_id)([data[i] for i in range(len(records))])


def test_cached_features_give_the_live_loss_even_in_mixed_batches(tiny_model, tiny_world, tmp_path):
    model = tiny_model.eval()
    records = read_records(tiny_world / "image_caption_val.jsonl", {"image": "<image>"})[:4]
    encoder = model.encoders["image"]
    cache = FeatureCache(tmp_path / "cache")
    stats = cache.fill("image", encoder, [path for r in records[:2] for _, path in r.media])
    assert stats["encoded"] == 2
    assert cache.fill("image", encoder, [path for r in records[:2] for _, path in r.media])["hits"] == 2
    cached = {"image": cache.processor("image", encoder)}
    mixed = batch(model, records, cached)  # records 0-1 from the cache, 2-3 encoded live
    assert mixed["media"]["image"]["cached"].tolist() == [True, True, False, False]
    live = batch(model, records, model.media_processors())
    with torch.no_grad():
        assert torch.allclose(model(mixed)["loss"], model(live)["loss"], atol=1e-6)
    assert isinstance(cached["image"](records[0].media[0][1]), CachedFeatures)


def test_stale_entries_are_never_used(tiny_model, tiny_world, tmp_path):
    encoder = tiny_model.encoders["image"]
    image = tmp_path / "img.png"
    shutil.copy(tiny_world / "images/val/000000.png", image)
    cache = FeatureCache(tmp_path / "cache")
    cache.fill("image", encoder, [str(image)])
    assert isinstance(cache.processor("image", encoder)(str(image)), CachedFeatures)
    # another file content: a miss, encoded live
    shutil.copy(tiny_world / "images/val/000001.png", image)
    assert isinstance(cache.processor("image", encoder)(str(image)), torch.Tensor)
    with pytest.raises(MediaError, match="no cached features for .*img.png"):
        cache.processor("image", encoder, require_hits=True)(str(image))
    # other weights: another folder
    key = encoder_key(encoder)
    with torch.no_grad():
        next(encoder.parameters()).add_(1e-3)
    assert encoder_key(encoder) != key
    assert cache.folder("image", encoder) != tmp_path / "cache" / f"image-{key}"


def test_encoder_key_covers_every_encoder_kind(tiny_world):
    from anymal_lit.encoders import ClapAudioEncoder, IMUEncoder

    keys = {
        encoder_key(ClapAudioEncoder(pretrained=str(tiny_world / "models/tiny-clap"))),
        encoder_key(IMUEncoder(pretrained=str(tiny_world / "models/tiny-imu"))),
    }
    assert len(keys) == 2 and all(len(k) == 16 for k in keys)
