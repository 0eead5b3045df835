"""Shared fixtures: a miniature toy world (real files, tiny models saved in the standard formats)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TINY_SPEC = {
    "image_train": 64,
    "image_val": 12,
    "tiny_lm": "train",  # a few steps in place; test_toyworld checks the shipped one
    "lm_corpus": 400,
    "lm_steps": 20,
    "lm_chat": 200,
    "lm_chat_steps": 10,
    "clip_steps": 3,
    "audio_train": 64,
    "audio_val": 8,
    "imu_train": 64,
    "imu_val": 8,
    "video_train": 16,
    "video_val": 8,
    "clap_steps": 3,
    "imu_steps": 3,
}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small toy world built through the real generator (same files and model formats as the demo's)."""
    from anymal_lit.toyworld import WorldSpec, build_world

    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(seed=3, **TINY_SPEC))


@pytest.fixture(scope="session")
def tiny_llm_dir(tiny_world: Path) -> Path:
    return tiny_world / "models" / "tiny-lm"


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_world: Path) -> Path:
    return tiny_world / "models" / "tiny-clip"


def build_model(world: Path, num_latents: int = 4, num_layers: int = 1):
    """An AnyMALModel of the tiny world's saved LM and CLIP with a small resampler."""
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import OpenCLIPImageEncoder
    from anymal_lit.projectors import PerceiverResampler

    llm = CausalLM(pretrained=str(world / "models" / "tiny-lm"))
    encoder = OpenCLIPImageEncoder(model_name=f"local-dir:{world / 'models' / 'tiny-clip'}")
    projector = PerceiverResampler(
        encoder.output_dim, llm.hidden_size, num_latents=num_latents, num_layers=num_layers, num_heads=4
    )
    return AnyMALModel(llm, {"image": encoder}, {"image": projector})


@pytest.fixture()
def tiny_model(tiny_world: Path):
    import torch

    torch.manual_seed(0)
    return build_model(tiny_world)
