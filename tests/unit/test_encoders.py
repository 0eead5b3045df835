"""Contract tests for every ModalityEncoder subclass, plus the open_clip loading paths and image loading."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anymal_lit.catalog import components
from anymal_lit.encoders import (
    ClapAudioEncoder,
    ImageProcessor,
    IMUEncoder,
    MediaError,
    ModalityEncoder,
    OpenCLIPImageEncoder,
    OpenCLIPVideoEncoder,
)


def build_encoder(cls: type[ModalityEncoder], world: Path) -> ModalityEncoder:
    """How to build each encoder from the tiny world; a new encoder adds one line here."""
    clip = f"local-dir:{world / 'models/tiny-clip'}"
    builders = {
        OpenCLIPImageEncoder: lambda: OpenCLIPImageEncoder(model_name=clip),
        OpenCLIPVideoEncoder: lambda: OpenCLIPVideoEncoder(model_name=clip, frames_per_clip=4),
        ClapAudioEncoder: lambda: ClapAudioEncoder(pretrained=str(world / "models/tiny-clap")),
        IMUEncoder: lambda: IMUEncoder(pretrained=str(world / "models/tiny-imu")),
    }
    if cls not in builders:
        pytest.fail(f"no test builder for {cls.__name__}: add one to build_encoder")
    return builders[cls]()


ENCODERS = components("encoders")


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
def test_encoder_contract(cls, tiny_world):
    encoder = build_encoder(cls, tiny_world)
    assert encoder.modality
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training, "a frozen encoder must stay in eval mode"
    sample = next(p for m, p in _first_media(tiny_world) if m == encoder.modality)
    pieces = encoder.media_processor()(sample)
    out = encoder(pieces)
    assert out.ndim == 3 and out.shape[0] == pieces.shape[0] and out.shape[-1] == encoder.output_dim
    assert not out.requires_grad


def _first_media(world: Path):
    out = []
    for modality in ("image", "audio", "video", "imu"):
        row = json.loads((world / f"{modality}_caption_val.jsonl").read_text().splitlines()[0])
        out.append((modality, str(world / row[modality])))
    return out


def test_open_clip_config_file_and_local_dir_load_the_same_weights(tiny_world, tmp_path):
    clip_dir = tiny_world / "models" / "tiny-clip"
    a = OpenCLIPImageEncoder(model_name=f"local-dir:{clip_dir}")
    b = OpenCLIPImageEncoder(
        model_config=str(clip_dir / "open_clip_config.json"), pretrained=str(clip_dir / "open_clip_model.safetensors")
    )
    random = OpenCLIPImageEncoder(model_config=str(clip_dir / "open_clip_config.json"))
    x = torch.randn(2, 3, a.resolution, a.resolution)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), random(x))
    assert a(x).shape == (2, (a.resolution // 8) ** 2, 128)


def test_encoder_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        OpenCLIPImageEncoder()


def test_image_tiling_grid_and_order(tmp_path):
    pixels = np.zeros((100, 130, 3), dtype=np.uint8)
    pixels[:50, :65] = 255  # top-left quadrant white
    Image.fromarray(pixels).save(tmp_path / "big.png")
    processor = ImageProcessor(64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), max_grid=3)
    tiles = processor(str(tmp_path / "big.png"))
    assert tiles.shape == (9, 3, 64, 64)  # 130 px -> next multiple of 64 is 192 -> 3 x 3
    assert tiles[0].mean() > 0.9 and tiles[8].mean() < 0.1  # row-major: top-left first
    single = ImageProcessor(64, (0.0,) * 3, (1.0,) * 3, max_grid=1)(str(tmp_path / "big.png"))
    assert single.shape == (1, 3, 64, 64)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    processor = ImageProcessor(32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(MediaError, match="not found: .*nope.png"):
        processor(str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MediaError, match="cannot be decoded: .*bad.png"):
        processor(str(tmp_path / "bad.png"))


def test_penultimate_layer_tokens(tiny_world):
    clip_dir = tiny_world / "models" / "tiny-clip"
    last = OpenCLIPImageEncoder(model_name=f"local-dir:{clip_dir}")
    penultimate = OpenCLIPImageEncoder(model_name=f"local-dir:{clip_dir}", layer=-2)
    x = torch.randn(2, 3, last.resolution, last.resolution)
    a, b = last(x), penultimate(x)
    assert a.shape == b.shape and not torch.allclose(a, b)
    # the penultimate block's patch tokens, computed by hand
    v = last.visual
    h = v._embeds(x)
    for block in v.transformer.resblocks[:-1]:
        h = block(h)
    assert torch.allclose(b, h[:, 1:], atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        OpenCLIPImageEncoder(model_name=f"local-dir:{clip_dir}", layer=9)
