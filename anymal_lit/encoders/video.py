"""Video: frame sampling from video files (PyAV) or frame folders, fixed-length clips, frames through open_clip.

PyAV is the decoder: it binds FFmpeg directly (every container/codec FFmpeg reads), ships self-contained wheels,
gives exact presentation timestamps for time-based sampling, and is the backend torchvision itself uses. OpenCV
would add a much larger dependency whose seeking is frame-index based and less exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from anymal_lit.encoders.base import MediaError, ModalityEncoder
from anymal_lit.encoders.image import ImageProcessor, OpenCLIPImageEncoder

log = logging.getLogger(__name__)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def decode_frames(path: str, folder_fps: float) -> tuple[list[Image.Image], list[float]]:
    """All frames of a video file (or of a folder of images, read in name order at ``folder_fps``) with their times
    in seconds. Raises :class:`MediaError` naming the file when it is missing, undecodable or has no frames."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
        frames = []
        for f in files:
            try:
                with Image.open(f) as img:
                    frames.append(img.convert("RGB"))
            except (UnidentifiedImageError, OSError) as err:
                raise MediaError(f"video frame cannot be decoded: {f} ({err})") from None
        times = [i / folder_fps for i in range(len(frames))]
    elif not p.exists():
        raise MediaError(f"video file not found: {path}")
    else:
        frames, times = [], []
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise MediaError(f"video file has no video stream: {path}")
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    frames.append(frame.to_image())
                    times.append(float(frame.time) if frame.time is not None else len(times) / folder_fps)
        except av.error.FFmpegError as err:
            raise MediaError(f"video file cannot be decoded: {path} ({err})") from None
    if not frames:
        raise MediaError(f"video has no frames: {path}")
    return frames, times


@dataclass(frozen=True)
class VideoProcessor:
    """Sample a video into clips ``[P, frames_per_clip, 3, R, R]``.

    The video is cut into consecutive clips of ``clip_seconds``; each clip takes ``frames_per_clip`` frames evenly
    spaced in time (nearest decoded frame). Clips are encoded and projected on their own and their tokens
    concatenated (paper eq. 3-4); a final partial clip counts when it holds at least half a clip, a video shorter
    than one clip gives one clip. At most ``max_clips`` clips are kept (logged).
    """

    image: ImageProcessor
    frames_per_clip: int
    clip_seconds: float
    folder_fps: float = 4.0
    max_clips: int | None = None

    def __call__(self, path: str) -> torch.Tensor:
        frames, times = decode_frames(path, self.folder_fps)
        times_arr = np.asarray(times) - times[0]
        duration = times_arr[-1] + (times_arr[1] - times_arr[0] if len(times_arr) > 1 else 1.0 / self.folder_fps)
        clips = max(1, int(np.floor(duration / self.clip_seconds + 0.5)))
        if self.max_clips is not None and clips > self.max_clips:
            log.warning("%s: %d clips of %.2f s, keeping the first %d", path, clips, self.clip_seconds, self.max_clips)
            clips = self.max_clips
        step = self.clip_seconds / self.frames_per_clip
        out = []
        for c in range(clips):
            wanted = c * self.clip_seconds + (np.arange(self.frames_per_clip) + 0.5) * step
            picks = np.abs(times_arr[None, :] - wanted[:, None]).argmin(axis=1)
            out.append(torch.cat([self.image.tiles(frames[i]) for i in picks]))  # [F, 3, R, R]
        return torch.stack(out)


class OpenCLIPVideoEncoder(ModalityEncoder):
    """Frames through an open_clip vision tower: a clip ``[F, 3, R, R]`` -> ``F * N`` patch tokens (time x space).

    The tokens keep frame-major order (all patches of frame 1, then frame 2, ...), so a Perceiver Resampler with
    ``num_input_positions = frames_per_clip * patches`` learns where (and when) each token is. Arguments naming the
    model are those of :class:`OpenCLIPImageEncoder`.

    Args:
        frames_per_clip: Frames sampled per clip.
        clip_seconds: Length of one clip.
        folder_fps: Frame rate of frame-folder videos.
        max_clips: Most clips per video (longer videos keep their start, logged).
    """

    modality = "video"

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: str | None = None,
        model_config: str | None = None,
        layer: int = -1,
        frames_per_clip: int = 8,
        clip_seconds: float = 2.0,
        folder_fps: float = 4.0,
        max_clips: int | None = 8,
        freeze: bool = True,
    ) -> None:
        super().__init__(freeze=freeze)
        self.frames = OpenCLIPImageEncoder(model_name, pretrained, model_config, max_grid=1, layer=layer, freeze=freeze)
        self.frames_per_clip = frames_per_clip
        self.clip_seconds = clip_seconds
        self.folder_fps = folder_fps
        self.max_clips = max_clips
        self.apply_freeze()

    @property
    def output_dim(self) -> int:
        return self.frames.output_dim

    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        clips, frames = pieces.shape[:2]
        tokens = self.frames.encode(pieces.flatten(0, 1))  # [P*F, N, D]
        return tokens.reshape(clips, frames * tokens.shape[1], tokens.shape[2])

    def media_processor(self) -> VideoProcessor:
        return VideoProcessor(
            self.frames.media_processor(), self.frames_per_clip, self.clip_seconds, self.folder_fps, self.max_clips
        )

    def fingerprint(self) -> dict[str, Any]:
        return {
            **self.frames.fingerprint(),
            "class": type(self).__qualname__,
            "frames_per_clip": self.frames_per_clip,
            "clip_seconds": self.clip_seconds,
        }
