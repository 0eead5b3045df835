"""Images: file loading, tiling, and the open_clip vision tower as a frozen patch-token encoder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from anymal_lit.encoders.base import MediaError, ModalityEncoder

MAX_ASPECT_RATIO = 200
"""Longest side / shortest side an image may have (Qwen2-VL's limit): a 1-pixel-high strip stretched to a square
tile is no picture an encoder was trained on."""


def load_image(path: str) -> Image.Image:
    """Read an image file as an upright 8-bit RGB picture.

    Accepted and converted: EXIF orientation is applied (a phone photo comes out upright), CMYK / palette /
    grayscale / 1-bit become RGB, 16-bit grayscale is scaled to 8 bits (Pillow's own conversion would clip it to
    white), transparency is composited on white. Raises :class:`MediaError` naming the file when it is missing,
    truncated, not an image (e.g. an HTML error page saved as .jpg), a floating-point image (no defined brightness
    range), too large for Pillow's decompression-bomb guard, or more than :data:`MAX_ASPECT_RATIO` : 1.
    """
    try:
        with Image.open(path) as img:
            img = rgb(ImageOps.exif_transpose(img), path)
    except FileNotFoundError:
        raise MediaError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as err:
        raise MediaError(f"image file is too large to decode safely: {path} ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, MediaError):
            raise
        raise MediaError(f"image file cannot be decoded: {path} ({err})") from None
    if min(img.size) == 0:
        raise MediaError(f"image file is empty: {path}")
    if max(img.size) > MAX_ASPECT_RATIO * min(img.size):
        raise MediaError(f"image is {img.width}x{img.height}, over {MAX_ASPECT_RATIO}:1: {path}")
    return img


def rgb(img: Image.Image, path: str) -> Image.Image:
    """Any Pillow mode -> RGB with its intended brightness (see :func:`load_image`)."""
    if img.mode == "F":
        raise MediaError(f"image file holds floating-point pixels (no defined brightness range): {path}")
    if img.mode.startswith("I"):  # I;16, I;16B, I (Pillow opens 16-bit PNG/TIFF so): 16-bit range to 8 bits
        pixels = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((np.clip(pixels, 0, 65535) / 257.0).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageProcessor:
    """Load an image file and cut it into encoder-sized tiles ``[G*G, 3, R, R]``.

    High-resolution images are resized to the next multiple of the encoder resolution R (at most ``max_grid`` * R
    per side) and split into a G x G grid of tiles, each encoded and projected on its own (AnyMAL eq. 3-4).
    With ``max_grid=1`` every image becomes one R x R tile.
    """

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_grid: int = 1

    def __call__(self, path: str) -> torch.Tensor:
        return self.tiles(load_image(path))

    def grid_size(self, width: int, height: int) -> int:
        """Tiles per side: the next multiple of the resolution covering the longer side, capped at max_grid."""
        return max(1, min(self.max_grid, math.ceil(max(width, height) / self.resolution)))

    def tiles(self, img: Image.Image) -> torch.Tensor:
        grid = self.grid_size(img.width, img.height)
        side = grid * self.resolution
        img = img.resize((side, side), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, S, S]
        pixels = (pixels - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]
        r = self.resolution
        # [3, G*R, G*R] -> [G*G, 3, R, R], tiles in row-major order (top-left first).
        return pixels.reshape(3, grid, r, grid, r).permute(1, 3, 0, 2, 4).reshape(grid * grid, 3, r, r).contiguous()


class OpenCLIPImageEncoder(ModalityEncoder):
    """The vision tower of an open_clip model, returning its patch tokens ``[B, N, width]``.

    Three ways to name the model, all offline-capable:
    ``model_name="ViT-L-14", pretrained="/path/open_clip_pytorch_model.bin"`` (built-in architecture + local
    weights or a tag from a populated cache), ``model_name="local-dir:/path"`` (a folder holding
    ``open_clip_config.json`` and weights, the format open_clip pushes to the HF hub) or
    ``model_config="/path/arch.json"`` (a custom architecture JSON with ``embed_dim``/``vision_cfg``/``text_cfg``,
    weights optional).

    Args:
        model_name: open_clip architecture name, ``local-dir:<folder>`` or ``hf-hub:<repo>``.
        pretrained: A pretrained tag or a local weights file (ignored with a ``local-dir:``/``hf-hub:`` name).
        model_config: Path to a custom architecture JSON, used instead of ``model_name``.
        max_grid: Largest tile grid per side for high-resolution images (1 = resize to one tile).
        layer: Transformer block whose patch tokens are returned: -1 = the last (after the final LayerNorm), -2 =
            the penultimate (LLaVA's choice: CLIP's contrastive loss only trains the class token of the last block,
            so the penultimate patch tokens tend to keep more local detail).
        freeze: Keep the encoder frozen (AnyMAL freezes it in every stage).
    """

    modality = "image"

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: str | None = None,
        model_config: str | None = None,
        max_grid: int = 1,
        layer: int = -1,
        freeze: bool = True,
    ) -> None:
        super().__init__(freeze=freeze)
        if (model_name is None) == (model_config is None):
            raise ValueError("OpenCLIPImageEncoder needs exactly one of model_name or model_config")
        if model_config is not None:
            clip = self._from_config_file(Path(model_config), pretrained)
        else:
            clip = open_clip.create_model(model_name, pretrained=pretrained)
        self.visual = clip.visual
        self.visual.output_tokens = True  # forward returns (pooled, patch tokens)
        self.source = {"model_name": model_name, "pretrained": pretrained, "model_config": model_config}
        size = self.visual.image_size
        self.resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(m) for m in getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(float(s) for s in getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.max_grid = max_grid
        depth = len(self.visual.transformer.resblocks)
        if not -depth <= layer < depth:
            raise ValueError(f"layer={layer} is outside the {depth} blocks of {model_name or model_config}")
        self.layer = layer % depth
        self.apply_freeze()

    @staticmethod
    def _from_config_file(path: Path, pretrained: str | None) -> open_clip.CLIP:
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config not found: {path}")
        cfg = json.loads(path.read_text())
        cfg = cfg.get("model_cfg", cfg)  # accept both a bare config and the open_clip_config.json layout
        model = open_clip.CLIP(**cfg)
        if pretrained is not None:
            open_clip.load_checkpoint(model, pretrained)
        return model

    @property
    def output_dim(self) -> int:
        return int(self.visual.transformer.width)

    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        if self.layer == len(self.visual.transformer.resblocks) - 1:
            return self.visual(pieces)[1]
        out = self.visual.forward_intermediates(
            pieces, indices=[self.layer], stop_early=True, intermediates_only=True, output_fmt="NLC"
        )
        return out["image_intermediates"][0]

    def media_processor(self) -> ImageProcessor:
        return ImageProcessor(self.resolution, self.mean, self.std, self.max_grid)

    def fingerprint(self) -> dict[str, Any]:
        return {
            **super().fingerprint(),
            **self.source,
            "resolution": self.resolution,
            "max_grid": self.max_grid,
            "layer": self.layer,
        }
