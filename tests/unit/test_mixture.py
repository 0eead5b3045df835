"""The mixture data module: balanced by default, weights, curriculum, repeatable order, batches mixing modalities."""

from collections import Counter

import numpy as np
import pytest

from anymal_lit.data import (
    AudioTextDataModule,
    ImageTextDataModule,
    IMUTextDataModule,
    MixtureDataModule,
    MixtureSampler,
    VideoTextDataModule,
)


def shares(sampler: MixtureSampler) -> list[float]:
    bounds = np.cumsum(sampler.sizes)
    counts = Counter(int(np.searchsorted(bounds, i, side="right")) for i in sampler)
    return [counts[d] / len(sampler) for d in range(len(sampler.sizes))]


def test_balanced_by_default_whatever_the_sizes():
    sampler = MixtureSampler([1000, 50, 10], [1.0, 1.0, 1.0], [0, 0, 0], num_samples=6000)
    assert np.allclose(shares(sampler), [1 / 3] * 3, atol=0.03)


def test_weights_and_every_example_before_repeats():
    sampler = MixtureSampler([100, 100], [3.0, 1.0], [0, 0], num_samples=4000)
    assert np.allclose(shares(sampler), [0.75, 0.25], atol=0.03)
    small = MixtureSampler([10, 10], [1.0, 1.0], [0, 0], num_samples=20, seed=1)
    drawn = list(small)
    first = [i for i in drawn if i < 10]
    assert len(set(first[:10])) == len(first[:10])  # a permutation: no repeat before the pass is over


def test_curriculum_adds_datasets_at_their_epoch_and_order_is_repeatable():
    sampler = MixtureSampler([50, 50, 50], [1.0, 1.0, 1.0], [0, 0, 2], num_samples=900, seed=7)
    sampler.set_epoch(1)
    assert shares(sampler)[2] == 0
    epoch1 = list(sampler)
    sampler.set_epoch(2)
    assert shares(sampler)[2] == pytest.approx(1 / 3, abs=0.05)
    assert list(sampler) != epoch1
    sampler.set_epoch(1)
    assert list(sampler) == epoch1


def test_mixture_loader_batches_mix_modalities(tiny_world, tiny_model):
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import ClapAudioEncoder, IMUEncoder, OpenCLIPVideoEncoder
    from anymal_lit.projectors import LinearProjector

    m = tiny_world / "models"
    llm: CausalLM = tiny_model.llm
    encoders = {
        "image": tiny_model.encoders["image"],
        "audio": ClapAudioEncoder(pretrained=str(m / "tiny-clap")),
        "video": OpenCLIPVideoEncoder(model_name=f"local-dir:{m / 'tiny-clip'}", frames_per_clip=2),
        "imu": IMUEncoder(pretrained=str(m / "tiny-imu")),
    }
    projectors = {
        "image": tiny_model.projectors["image"],
        **{
            k: LinearProjector(encoders[k].output_dim, llm.hidden_size, num_tokens=4) for k in ("audio", "video", "imu")
        },
    }
    model = AnyMALModel(llm, encoders, projectors)
    modules = {
        "image": ImageTextDataModule(train_file=str(tiny_world / "image_caption_train.jsonl")),
        "audio": AudioTextDataModule(train_file=str(tiny_world / "audio_caption_train.jsonl")),
        "video": VideoTextDataModule(train_file=str(tiny_world / "video_caption_train.jsonl")),
        "imu": IMUTextDataModule(train_file=str(tiny_world / "imu_caption_train.jsonl")),
    }
    data = MixtureDataModule(modules, batch_size=12, samples_per_epoch=24)
    data.bind(
        llm.tokenizer,
        model.media_processors(),
        {"image": "<image>", "audio": "<audio>", "video": "<video>", "imu": "<imu>"},
    )
    batches = list(data.train_dataloader())
    assert len(batches) == 2
    assert len(batches[0]["media"]) >= 3  # rows from several modalities in one batch
    assert model(batches[0])["loss"].isfinite()


def test_mixture_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown datasets"):
        MixtureDataModule({"image": ImageTextDataModule()}, weights={"audio": 1.0})
    with pytest.raises(ValueError, match="epoch 0"):
        MixtureDataModule({"image": ImageTextDataModule()}, curriculum={"image": 1})
