"""Frozen-feature cache: same loss as live encoding, mixed batches, stale or bad entries never used, media hashed
once, a killed fill harmless."""

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from anymal_lit.data import (
    ChatTokenizer,
    ConversationDataset,
    ImageTextDataModule,
    PaddingCollator,
    feature_cache,
    read_records,
)
from anymal_lit.data.feature_cache import CachedFeatures, FeatureCache, content_hash, encoder_key, read_entry
from anymal_lit.encoders import MediaError
from anymal_lit.stages import AlignmentStage
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import REPO, build_model


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


def test_bad_entries_are_encoded_live_with_a_warning_or_refused(tiny_model, tiny_world, tmp_path, caplog):
    encoder = tiny_model.encoders["image"]
    images = [str(tiny_world / f"images/val/00000{i}.png") for i in range(3)]
    cache = FeatureCache(tmp_path / "cache")
    cache.fill("image", encoder, images)
    entry = {p: cache.folder("image", encoder) / f"{content_hash(p)}.safetensors" for p in images}
    truncated, corrupt, good = images
    data = entry[truncated].read_bytes()
    entry[truncated].write_bytes(data[: len(data) // 2])  # as a killed writer used to leave it
    data = bytearray(entry[corrupt].read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the features: same size, loads fine
    entry[corrupt].write_bytes(bytes(data))
    processor = cache.processor("image", encoder)
    with caplog.at_level(logging.WARNING, logger="anymal_lit.data.feature_cache"):
        for path in (truncated, corrupt):
            assert torch.equal(processor(path), encoder.media_processor()(path))  # encoded live
            assert str(entry[path]) in caplog.text and Path(path).name in caplog.text
    assert isinstance(processor(good), CachedFeatures)
    for path in (truncated, corrupt):
        with pytest.raises(MediaError, match=f"cached features for .*{Path(path).name} are bad"):
            cache.processor("image", encoder, require_hits=True)(path)
    stats = cache.fill("image", encoder, images)  # the bad entries written again
    assert (stats["encoded"], stats["repaired"], stats["hits"]) == (2, 2, 1)
    assert all(isinstance(processor(p), CachedFeatures) for p in images)


def test_media_is_hashed_once_per_file_not_per_sample(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "RACY_SECONDS", 0.0)  # the files below were written just now
    reads = []
    real = feature_cache.hash_media
    monkeypatch.setattr(feature_cache, "hash_media", lambda path: reads.append(path) or real(path))
    image, frames = tmp_path / "a.png", tmp_path / "frames"
    shutil.copy(tiny_world / "images/val/000000.png", image)
    shutil.copytree(next(p for p in (tiny_world / "video/train").iterdir() if p.is_dir()), frames)
    first = {p: content_hash(str(p)) for p in (image, frames)}
    for _ in range(5):  # five epochs
        assert {p: content_hash(str(p)) for p in (image, frames)} == first
    assert sorted(reads) == sorted([str(image), str(frames)])
    replacement = tmp_path / "b.png"
    shutil.copy(tiny_world / "images/val/000001.png", replacement)
    os.replace(replacement, image)  # another file under the same name: hashed again
    assert content_hash(str(image)) != first[image] and len(reads) == 3
    monkeypatch.setattr(feature_cache, "RACY_SECONDS", 2.0)
    shutil.copy(tiny_world / "images/val/000002.png", image)  # changed just now: not memoised
    content_hash(str(image)), content_hash(str(image))
    assert len(reads) == 5


KILLED_FILL = """
import os, signal, sys
from pathlib import Path
import anymal_lit.data.feature_cache as fc
from anymal_lit.data import read_records
from tests.conftest import build_model

world, cache = Path(sys.argv[1]), sys.argv[2]
real, calls = fc.save_file, []

def save_and_die_on_the_third(tensors, filename, metadata=None):
    calls.append(filename)
    real(tensors, filename, metadata=metadata)
    if len(calls) == 3:  # killed halfway through writing the third entry
        os.truncate(filename, os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

fc.save_file = save_and_die_on_the_third
records = read_records(world / "image_caption_train.jsonl", {"image": "<image>"})
fc.FeatureCache(cache).fill("image", build_model(world).encoders["image"], [p for r in records for _, p in r.media])
"""


def train_losses(world, tmp_path, cache, steps=4) -> list[float]:
    torch.manual_seed(0)
    stage = AlignmentStage(build_model(world), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1))
    dm = ImageTextDataModule(train_file=str(world / "image_caption_train.jsonl"), batch_size=4, feature_cache=cache)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    trainer = L.Trainer(max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(stage, dm)
    return losses


@pytest.mark.integration
def test_killed_cache_fill_then_training_equals_a_clean_cache(tiny_world, tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED_FILL, str(tiny_world), str(killed)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (folder,) = killed.iterdir()
    assert len(list(folder.glob("*.safetensors"))) == 2  # the third never got an entry's name
    assert all(read_entry(f).ndim == 3 for f in folder.glob("*.safetensors"))
    clean = tmp_path / "clean"
    records = read_records(tiny_world / "image_caption_train.jsonl", {"image": "<image>"})
    FeatureCache(clean).fill(
        "image", build_model(tiny_world).encoders["image"], [p for r in records for _, p in r.media]
    )
    after_kill = train_losses(tiny_world, tmp_path / "a", str(killed))
    assert after_kill == pytest.approx(train_losses(tiny_world, tmp_path / "b", str(clean)), abs=1e-5)


def test_a_mixtures_cache_serves_its_datasets_and_its_evaluation_loaders(tiny_model, tiny_world, tmp_path):
    """``MixtureDataModule(feature_cache=...)``: every dataset without a cache of its own reads the mixture's (and,
    with ``require_cached_features``, refuses a file missing from it); the evaluation callbacks' loaders, which read
    through the mixture, get cached features too."""
    from anymal_lit.data import AudioTextDataModule, MixtureDataModule

    model = tiny_model.eval()
    image_file = str(tiny_world / "image_caption_val.jsonl")
    records = read_records(image_file, {"image": "<image>"})
    cache = FeatureCache(tmp_path / "shared")
    cache.fill("image", model.encoders["image"], [p for r in records for _, p in r.media])
    own = str(tmp_path / "own")
    mixture = MixtureDataModule(
        datasets={
            "image": ImageTextDataModule(train_file=image_file),
            "audio": AudioTextDataModule(train_file=str(tiny_world / "audio_caption_val.jsonl"), feature_cache=own),
        },
        feature_cache=str(tmp_path / "shared"),
        require_cached_features=True,
    )
    assert mixture.datasets["audio"].feature_cache == own  # a dataset's own cache wins
    placeholders = {m: f"<{m}>" for m in model.encoders}
    mixture.bind(model.llm.tokenizer, model.media_processors(), placeholders, dict(model.encoders))
    assert isinstance(mixture.datasets["image"].processors["image"](records[0].media[0][1]), CachedFeatures)
    assert isinstance(mixture.processors["image"](records[0].media[0][1]), CachedFeatures)
    uncached = tmp_path / "uncached.png"
    shutil.copy(tiny_world / "images/train/000000.png", uncached)
    uncached.write_bytes(uncached.read_bytes() + b"\0")  # other bytes: not in the cache
    with pytest.raises(MediaError, match="uncached.png"):
        mixture.datasets["image"].processors["image"](str(uncached))
