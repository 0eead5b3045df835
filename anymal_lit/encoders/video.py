"""Video: frame sampling from video files (PyAV) or frame folders, fixed-length clips, frames through open_clip.

PyAV is the decoder: it binds FFmpeg directly (every container/codec FFmpeg reads), ships self-contained wheels,
gives exact presentation timestamps for time-based sampling, and is the backend torchvision itself uses. OpenCV
would add a much larger dependency whose seeking is frame-index based and less exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

from anymal_lit.encoders.base import MediaError, ModalityEncoder
from anymal_lit.encoders.image import ImageProcessor, OpenCLIPImageEncoder, load_image

log = logging.getLogger(__name__)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FOLDER_FPS = 4.0
"""Frame rate a folder of frames is read at unless the encoder is given another (a frame folder has no timestamps)."""


def decode_frames(path: str, folder_fps: float) -> tuple[list[Image.Image], list[float]]:
    """All frames of a video file (or of a folder of images, read in name order at ``folder_fps``) with their times
    in seconds. Raises :class:`MediaError` naming the file when it is missing, undecodable or has no frames.

    :class:`VideoProcessor` reads video files with :class:`FrameSeeker` instead; this full decode serves frame
    folders and files without timestamps."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
        # the image loader's rules (EXIF orientation, 16-bit, transparency, named errors) for every frame
        frames = [load_image(str(f)) for f in files]
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


class DecodedFrames:
    """Every frame already decoded (a frame folder, or a file without timestamps): nearest frame by argmin."""

    def __init__(self, frames: list[Image.Image], times: list[float]) -> None:
        self.frames, self.times = frames, np.asarray(times)

    def bounds(self) -> tuple[float, float | None, float]:
        return self.times[0], (self.times[1] if len(self.times) > 1 else None), self.times[-1]

    def nearest(self, wanted: np.ndarray) -> list[Image.Image]:
        picks = np.abs((self.times - self.times[0])[None, :] - wanted[:, None]).argmin(axis=1)
        return [self.frames[i] for i in picks]


class CannotSeek(Exception):
    """A video stream that cannot be read by seeking (frames without timestamps, seeks that miss)."""


class FrameSeeker:
    """The frames of a video stream nearest to given times, decoding only around them.

    The first two frames and the last one (for the duration) come from the file's start and from a seek to its last
    keyframe; then, for each wanted time, the decoder seeks to the keyframe before it and decodes forward to it,
    or keeps decoding forward when the time is within one keyframe interval of where it is (a seek would land on a
    keyframe already passed). Picks equal those of :class:`DecodedFrames` on the full decode: the nearest frame by
    time, the earlier one on a tie. Cost grows with the number of wanted times, not with the video's length.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
        self.container, self.stream = container, stream
        self._frames: Iterator[av.VideoFrame] = iter(container.decode(stream))
        self._ahead: av.VideoFrame | None = None  # decoded, not consumed yet
        self._before: av.VideoFrame | None = None  # last consumed frame
        self._keyframe: float | None = None  # time of the last keyframe decoded since the last seek
        self._gop = 0.0  # longest keyframe interval seen so far (a lower bound of the real one)
        self.decoded = 0  # frames decoded (what seeking saves)
        self.head = [self._take()] if self._peek() is not None else []
        if self._peek() is not None:
            self.head.append(self._peek())

    def _peek(self) -> av.VideoFrame | None:
        if self._ahead is None:
            self._ahead = next(self._frames, None)
            self.decoded += self._ahead is not None
            if self._ahead is not None and self._ahead.time is None:
                raise CannotSeek("a frame without a timestamp")
            if self._ahead is not None:
                if self._keyframe is not None:
                    self._gop = max(self._gop, self._ahead.time - self._keyframe)
                if self._ahead.key_frame:
                    self._keyframe = self._ahead.time
        return self._ahead

    def _take(self) -> av.VideoFrame:
        self._before, self._ahead = self._ahead, None
        return self._before

    def _seek(self, seconds: float) -> None:
        offset = max(0, math.floor(seconds / self.stream.time_base))
        self.container.seek(offset, backward=True, any_frame=False, stream=self.stream)
        self._frames = iter(self.container.decode(self.stream))
        self._ahead = self._before = self._keyframe = None

    def bounds(self) -> tuple[float, float | None, float]:
        """Times of the first, second (None for a one-frame video) and last frame."""
        first = self.head[0].time
        second = self.head[1].time if len(self.head) > 1 else None
        if self.stream.duration is not None:  # decode from the last keyframe; without a duration: to the end
            self._seek(float((self.stream.duration + (self.stream.start_time or 0)) * self.stream.time_base))
        elif self.container.duration is not None:
            self._seek(((self.container.start_time or 0) + self.container.duration) / av.time_base)
        last = None
        while self._peek() is not None:
            last = self._take()
        if last is None:  # the seek found nothing to decode: read the whole file
            self._seek(0)
            while self._peek() is not None:
                last = self._take()
        self._frames, self._ahead, self._before = iter(()), None, None  # position unknown: the next read seeks
        return first, second, (last.time if last is not None else first)

    def nearest(self, wanted: np.ndarray) -> list[Image.Image]:
        """The frame nearest to each of ``wanted`` (seconds after the first frame, ascending)."""
        first = self.head[0].time
        images: dict[int, Image.Image] = {}
        out = []
        for w in wanted.tolist():
            here = self._before if self._before is not None else self._ahead
            if here is None or here.time - first > w or w - (here.time - first) > self._gop:
                self._seek(first + w)
            frame = self._nearest_from_here(first, w)
            if frame is None:  # the seek landed past the wanted time: decode forward from the start instead
                self._seek(0)
                frame = self._nearest_from_here(first, w)
            if frame is None:
                raise CannotSeek(f"no frame found near {w:.3f} s")
            if frame.pts not in images:
                images[frame.pts] = frame.to_image()
            out.append(images[frame.pts])
        return out

    def _nearest_from_here(self, first: float, w: float) -> av.VideoFrame | None:
        # Same arithmetic as the argmin over every frame: distances of (time - first) to w, the earlier on a tie.
        while (ahead := self._peek()) is not None and ahead.time - first < w:
            if self._before is not None and self._before.time == ahead.time:
                self._ahead = None  # a repeated time: the earliest frame of it is the one argmin picks
            else:
                self._take()
        ahead, before = self._peek(), self._before
        if before is None:  # what precedes ``ahead`` was not decoded: only an exact hit or the first frame is sure
            sure = ahead is not None and (ahead.time - first == w or ahead.time == first)
            return ahead if sure else None
        if ahead is None or abs(before.time - first - w) <= abs(ahead.time - first - w):
            return before
        return ahead


@dataclass(frozen=True)
class VideoProcessor:
    """Sample a video into clips ``[P, frames_per_clip, 3, R, R]``.

    The video is cut into consecutive clips of ``clip_seconds``; each clip takes ``frames_per_clip`` frames evenly
    spaced in time (nearest frame). Clips are encoded and projected on their own and their tokens concatenated
    (paper eq. 3-4); a final partial clip counts when it holds at least half a clip, a video shorter than one clip
    gives one clip. At most ``max_clips`` clips are kept (logged). Video files are decoded only around the frames
    used (:class:`FrameSeeker`), so a long video with ``max_clips`` costs what its first clips cost.
    """

    image: ImageProcessor
    frames_per_clip: int
    clip_seconds: float
    folder_fps: float = FOLDER_FPS
    max_clips: int | None = None

    def __call__(self, path: str) -> torch.Tensor:
        if Path(path).is_file():
            try:
                with av.open(path) as container:
                    if container.streams.video:
                        seeker = FrameSeeker(container, container.streams.video[0])
                        if seeker.head:
                            return self._clips(path, seeker)
            except (av.error.FFmpegError, CannotSeek) as err:  # e.g. no timestamps: the full decode decides
                log.debug("%s: cannot seek (%s), decoding every frame", path, err)
        return self._clips(path, DecodedFrames(*decode_frames(path, self.folder_fps)))

    def _clips(self, path: str, video: FrameSeeker | DecodedFrames) -> torch.Tensor:
        first, second, last = video.bounds()
        # As (times - first)[-1] + (times - first)[1] - (times - first)[0] over every frame: the same float result.
        duration = (last - first) + ((second - first) - 0.0 if second is not None else 1.0 / self.folder_fps)
        clips = max(1, int(np.floor(duration / self.clip_seconds + 0.5)))
        if self.max_clips is not None and clips > self.max_clips:
            log.warning("%s: %d clips of %.2f s, keeping the first %d", path, clips, self.clip_seconds, self.max_clips)
            clips = self.max_clips
        step = self.clip_seconds / self.frames_per_clip
        wanted = np.arange(clips)[:, None] * self.clip_seconds + (np.arange(self.frames_per_clip) + 0.5) * step
        frames = video.nearest(wanted.reshape(-1))
        per_clip = self.frames_per_clip
        return torch.stack(
            [torch.cat([self.image.tiles(f) for f in frames[c * per_clip : (c + 1) * per_clip]]) for c in range(clips)]
        )  # [P, F, 3, R, R]


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
        folder_fps: float = FOLDER_FPS,
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
