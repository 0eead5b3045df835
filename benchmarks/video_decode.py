"""Video loading time: seeking to the frames the clips use vs decoding every frame, 10-second vs 10-minute video.

    python benchmarks/video_decode.py [--repeats 3] [--out runs/bench]     (make bench-video)

Writes two synthetic videos with PyAV (MPEG-4 part 2 like the toy world's, 128 px, 25 fps, a keyframe every 2 s),
then times ``VideoProcessor`` (the encoder's loader: 8 frames per 2-s clip, at most 8 clips, 224-px frames) on each,
``--repeats`` times, against the full decode it replaced (every frame decoded and converted, then the nearest kept).
A third row reads all 300 clips of the long video (``max_clips=None``): the cost follows the clips used.

Writes ``<out>/video_decode.json`` and ``<out>/video_decode.md``. Needs no toy world.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from anymal_lit.encoders.image import ImageProcessor
from anymal_lit.encoders.video import DecodedFrames, VideoProcessor, decode_frames

REPO = Path(__file__).resolve().parents[1]

FPS, SIDE, KEYFRAME_EVERY = 25, 128, 50


def write_video(path: Path, seconds: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.gop_size = KEYFRAME_EVERY
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
        for i in range(seconds * FPS):
            frame = np.roll(base, i, axis=1)  # moving texture: every frame differs
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def full_decode(proc: VideoProcessor, path: str):
    """The loader before seeking: decode and convert every frame, keep the nearest to each wanted time."""
    return proc._clips(path, DecodedFrames(*decode_frames(path, proc.folder_fps)))


def timed(fn, repeats: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "clips": len(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench"))
    args = parser.parse_args()
    image = ImageProcessor(224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = {"10 s": Path(tmp) / "short.mp4", "10 min": Path(tmp) / "long.mp4"}
        write_video(videos["10 s"], 10)
        write_video(videos["10 min"], 600)
        cases = [("10 s", 8), ("10 min", 8), ("10 min", None)]
        for name, max_clips in cases:
            proc = VideoProcessor(image, frames_per_clip=8, clip_seconds=2.0, max_clips=max_clips)
            path = str(videos[name])
            before = timed(lambda p=proc, v=path: full_decode(p, v), args.repeats)
            after = timed(lambda p=proc, v=path: p(v), args.repeats)
            rows.append({"video": name, "max_clips": max_clips, "full_decode": before, "seek": after})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = {"fps": FPS, "side": SIDE, "keyframe_every": KEYFRAME_EVERY, "codec": "mpeg4", "repeats": args.repeats}
    (out / "video_decode.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Video load time per file, {args.repeats} runs: median (min-max) seconds. {SIDE}-px MPEG-4 at {FPS} fps, "
        f"a keyframe every {KEYFRAME_EVERY} frames; 8 frames per 2-s clip, 224-px frames.",
        "",
        "| video | clips used | full decode (before) | seek (now) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r["full_decode"], r["seek"]
        lines.append(
            f"| {r['video']} | {a['clips']} | {b['median_s']:.3f} ({b['min_s']:.3f}-{b['max_s']:.3f}) "
            f"| {a['median_s']:.3f} ({a['min_s']:.3f}-{a['max_s']:.3f}) | {b['median_s'] / a['median_s']:.1f}x |"
        )
    (out / "video_decode.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
