"""Video files are read by seeking to the frames the clips use: the same frames as decoding every frame, at a cost
that follows the clips used, not the video's length."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from anymal_lit.encoders.image import ImageProcessor
from anymal_lit.encoders.video import FrameSeeker, VideoProcessor, decode_frames

IMAGE = ImageProcessor(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def full_decode_clips(proc: VideoProcessor, path: str) -> torch.Tensor:
    """The loader as it was before seeking: decode every frame, then keep the nearest to each wanted time."""
    frames, times = decode_frames(path, proc.folder_fps)
    times_arr = np.asarray(times) - times[0]
    duration = times_arr[-1] + (times_arr[1] - times_arr[0] if len(times_arr) > 1 else 1.0 / proc.folder_fps)
    clips = max(1, int(np.floor(duration / proc.clip_seconds + 0.5)))
    clips = min(clips, proc.max_clips or clips)
    step = proc.clip_seconds / proc.frames_per_clip
    out = []
    for c in range(clips):
        wanted = c * proc.clip_seconds + (np.arange(proc.frames_per_clip) + 0.5) * step
        picks = np.abs(times_arr[None, :] - wanted[:, None]).argmin(axis=1)
        out.append(torch.cat([proc.image.tiles(frames[i]) for i in picks]))
    return torch.stack(out)


def write_video(path: Path, seconds: float, fps: int, keyframe_every: int, codec: str = "mpeg4") -> str:
    """A 32-px video whose every frame differs (a moving bar and a frame counter in the colour)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.gop_size = keyframe_every
        if codec == "libx264":
            stream.codec_context.max_b_frames = 2  # frames decode out of presentation order
            stream.options = {"sc_threshold": "0"}  # keyframes only every keyframe_every frames
        for i in range(int(seconds * fps)):
            pixels = np.zeros((32, 32, 3), np.uint8)
            pixels[..., 0], pixels[..., 1], pixels[:, : i % 32] = i % 256, i // 256 * 40, 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


# frames per clip, clip seconds, max clips; (4, 1.0) wants times midway between the 4-fps toy videos' frames (ties)
SETTINGS = [(4, 2.0, None), (8, 0.5, None), (4, 1.0, None), (3, 1.0, 2)]


def test_toy_videos_give_the_full_decode_frames(tiny_world):
    videos = sorted((tiny_world / "video").glob("*/*.mp4"))
    assert len(videos) >= 10
    for frames_per_clip, clip_seconds, max_clips in SETTINGS:
        proc = VideoProcessor(IMAGE, frames_per_clip, clip_seconds, max_clips=max_clips)
        for video in videos:
            assert torch.equal(proc(str(video)), full_decode_clips(proc, str(video))), video


CODECS = [("mpeg4", 3), ("mpeg4", 300)]  # a keyframe every 3 frames, or one for the whole video
if "libx264" in av.codecs_available:
    CODECS += [("libx264", 5), ("libx264", 300)]


@pytest.mark.parametrize(("codec", "keyframe_every"), CODECS)
def test_synthetic_videos_give_the_full_decode_frames(tmp_path, codec, keyframe_every):
    path = write_video(tmp_path / "v.mp4", 9.3, 25, keyframe_every, codec)
    for frames_per_clip, clip_seconds, max_clips in SETTINGS:
        proc = VideoProcessor(IMAGE, frames_per_clip, clip_seconds, max_clips=max_clips)
        assert torch.equal(proc(path), full_decode_clips(proc, path)), (frames_per_clip, clip_seconds, max_clips)


def test_long_video_decodes_only_around_the_clips_used(tmp_path):
    path = write_video(tmp_path / "long.mp4", 60, 25, 25)  # 1500 frames, a keyframe every second
    with av.open(path) as container:
        seeker = FrameSeeker(container, container.streams.video[0])
        first, _, last = seeker.bounds()
        assert last - first == pytest.approx(60 - 1 / 25)
        seeker.nearest(np.array([0.25, 0.75, 1.25, 1.75, 30.1, 59.9]))
        assert seeker.decoded < 150  # the start, the last second, and the seconds around the wanted times
