"""The toy world's sounds, IMU traces, videos and interleaved samples: real files, captions and tiny encoders.

Files are written in the formats real data comes in, with the variations the loaders must handle: WAV at 16 kHz
mono and some at 22.05 kHz stereo (resampled and mixed on load), IMU traces as CSV with a timestamp column at 50 or
100 Hz and as NPY at 50 Hz, videos as MP4 and some as folders of PNG frames.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
import torch
from PIL import Image
from scipy.signal import resample_poly
from tqdm import tqdm
from transformers import ClapAudioConfig, ClapAudioModel, ClapFeatureExtractor

from anymal_lit.encoders.audio import AudioProcessor
from anymal_lit.encoders.imu import IMUEncoder, IMUEncoderConfig
from anymal_lit.toyworld import shapes, signals
from anymal_lit.toyworld.tiny_models import TINY_CLAP_FEATURES, tiny_clap_config, warm_up_tower

log = logging.getLogger(__name__)

VIDEO_FPS = 4
VIDEO_FRAMES = 8
IMU_RATE = 50.0


def write_caption_set(
    root: Path,
    modality: str,
    split: str,
    items: list[dict[str, Any]],
    prompts: tuple[str, ...],
    rng: np.random.Generator,
) -> list[dict]:
    """``{modality}_caption_{split}.jsonl`` + COCO-format references + the true attributes of each item.

    Each item has ``path`` (relative to ``root``), ``references`` (5 captions), ``caption`` (a training target) and
    ``attributes``. Val rows use the first prompt and the first reference; train rows vary both.
    """
    rows, coco_images, coco_anns, truths = [], [], [], {}
    for i, item in enumerate(items):
        val = split == "val"
        prompt = prompts[0] if val else str(rng.choice(prompts))
        target = item["references"][0] if val else item["caption"]
        rows.append(
            {
                "id": str(i),
                modality: item["path"],
                "conversations": [
                    {"from": "human", "value": f"<{modality}>\n{prompt}"},
                    {"from": "gpt", "value": target},
                ],
            }
        )
        coco_images.append({"id": i, "file_name": item["path"]})
        coco_anns += [{"id": len(coco_anns) + j, "image_id": i, "caption": c} for j, c in enumerate(item["references"])]
        truths[str(i)] = item["attributes"]
    with (root / f"{modality}_caption_{split}.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    coco = {"images": coco_images, "annotations": coco_anns, "type": "captions"}
    (root / f"{modality}_caption_{split}_coco.json").write_text(json.dumps(coco))
    (root / f"{modality}_scenes_{split}.json").write_text(json.dumps(truths))
    return rows


def _items(
    count: int,
    desc: str,
    rng: np.random.Generator,
    sample: Callable[[np.random.Generator], Any],
    save: Callable[[Any, int], str],
    caption: Callable[..., str],
) -> list[dict[str, Any]]:
    items = []
    for i in tqdm(range(count), desc=desc, leave=False):
        thing = sample(rng)
        path = save(thing, i)
        refs = [caption(thing, rng, t) for t in range(5)]
        items.append(
            {"path": path, "references": refs, "caption": caption(thing, rng), "attributes": thing.attributes()}
        )
    return items


def write_sounds(root: Path, counts: dict[str, int], rng: np.random.Generator) -> dict[str, list[dict]]:
    out = {}
    for split, count in counts.items():
        folder = root / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)

        def save(sound: signals.Sound, i: int, folder: Path = folder, split: str = split) -> str:
            wave = signals.synthesize_sound(sound, rng)
            name = f"audio/{split}/{i:06d}.wav"
            if i % 4 == 3:  # 22.05 kHz stereo: the loader resamples and mixes to mono
                wave = resample_poly(wave, 441, 320).astype(np.float32)
                sf.write(root / name, np.stack([wave, wave * 0.8], axis=1), 22050)
            else:
                sf.write(root / name, wave, 16000)
            return name

        items = _items(count, f"toy world: {split} sounds", rng, signals.sample_sound, save, signals.sound_caption)
        out[split] = write_caption_set(root, "audio", split, items, signals.AUDIO_PROMPTS, rng)
    return out


def write_motions(
    root: Path, counts: dict[str, int], rng: np.random.Generator, val_seed: int = 0
) -> dict[str, list[dict]]:
    """IMU traces and their captions. The validation split holds each of the 9 activity-pace contents equally often
    (``signals.balanced_motions``, shuffled by ``val_seed``): drawn at random, 100 clips held 20 of "cycling slowly"
    and 19 of "standing still", and the best constant caption scored CIDEr 1.55 (1.18 on the balanced set)."""
    out = {}
    for split, count in counts.items():
        folder = root / "imu" / split
        folder.mkdir(parents=True, exist_ok=True)

        def save(motion: signals.Motion, i: int, split: str = split) -> str:
            if i % 3 == 2:  # NPY [T, 6] at the encoder's rate
                name = f"imu/{split}/{i:06d}.npy"
                np.save(root / name, signals.synthesize_imu(motion, rng, IMU_RATE))
                return name
            rate = 100.0 if i % 3 == 1 else IMU_RATE  # CSV with timestamps; 100 Hz ones are resampled on load
            trace = signals.synthesize_imu(motion, rng, rate)
            stamps = np.arange(len(trace)) / rate
            name = f"imu/{split}/{i:06d}.csv"
            header = "timestamp,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"
            np.savetxt(
                root / name, np.column_stack([stamps, trace]), delimiter=",", header=header, comments="", fmt="%.5f"
            )
            return name

        sample = signals.balanced_motions(count, val_seed) if split == "val" else signals.sample_motion
        items = _items(count, f"toy world: {split} IMU traces", rng, sample, save, signals.imu_caption)
        out[split] = write_caption_set(root, "imu", split, items, signals.IMU_PROMPTS, rng)
    return out


def write_video(frames: list[Image.Image], path: Path, fps: int) -> None:
    """Encode frames as an MP4 (MPEG-4 part 2, high quality: small clips keep their colours)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_videos(root: Path, counts: dict[str, int], side: int, rng: np.random.Generator) -> dict[str, list[dict]]:
    out = {}
    for split, count in counts.items():
        folder = root / "video" / split
        folder.mkdir(parents=True, exist_ok=True)

        def save(movie: signals.Movie, i: int, folder: Path = folder, split: str = split) -> str:
            frames = signals.render_movie(movie, rng, VIDEO_FRAMES, side)
            if i % 10 == 9:  # a folder of frames instead of a video file
                frame_dir = folder / f"{i:06d}"
                frame_dir.mkdir(exist_ok=True)
                for k, img in enumerate(frames):
                    img.save(frame_dir / f"{k:04d}.png")
                return f"video/{split}/{i:06d}"
            write_video(frames, folder / f"{i:06d}.mp4", VIDEO_FPS)
            return f"video/{split}/{i:06d}.mp4"

        items = _items(count, f"toy world: {split} videos", rng, signals.sample_movie, save, signals.video_caption)
        out[split] = write_caption_set(root, "video", split, items, signals.VIDEO_PROMPTS, rng)
    return out


def write_interleaved(root: Path, image_rows: dict[str, list], imu_rows: dict[str, list], rng: np.random.Generator):
    """Image + IMU conversations: "<image>\\n<imu>\\nWhat am I doing near the red square?" (train and val)."""
    for split in ("train", "val"):
        scenes = json.loads((root / f"image_scenes_{split}.json").read_text())
        motions = json.loads((root / f"imu_scenes_{split}.json").read_text())
        rows = []
        for i, (image_row, imu_row) in enumerate(zip(image_rows[split], imu_rows[split])):
            scene = shapes.Scene.from_dict(scenes[image_row["id"]])
            obj = scene.objects[int(rng.integers(len(scene.objects)))]
            motion = signals.Motion(**motions[imu_row["id"]], seconds=0.0)
            doing = signals.imu_phrase(motion, rng)
            rows.append(
                {
                    "id": f"mix-{i}",
                    "image": image_row["image"],
                    "imu": imu_row["imu"],
                    "conversations": [
                        {
                            "from": "human",
                            "value": f"<image>\n<imu>\nWhat am I doing near the {obj.colour} {obj.shape}?",
                        },
                        {"from": "gpt", "value": f"you are {doing} near the {obj.colour} {obj.shape}"},
                    ],
                }
            )
        with (root / f"interleaved_{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def build_tiny_clap(root: Path, rows: list[dict], steps: int, seed: int) -> list[float]:
    """A tiny CLAP audio tower, warmed up contrastively on the training sounds, saved with ``save_pretrained``."""
    torch.manual_seed(seed)
    config = ClapAudioConfig(**tiny_clap_config())
    model = ClapAudioModel(config)
    extractor = ClapFeatureExtractor(feature_size=config.num_mel_bins, truncation="rand_trunc", **TINY_CLAP_FEATURES)
    processor = AudioProcessor(extractor, float(TINY_CLAP_FEATURES["max_length_s"]))
    features = torch.cat([processor(str(root / r["audio"])) for r in rows])
    captions = [r["conversations"][-1]["value"] for r in rows]
    losses = warm_up_tower(
        model,
        lambda x: model(input_features=x).pooler_output,
        config.patch_embeds_hidden_size * 2 ** (len(config.depths) - 1),
        features,
        captions,
        steps,
        "tiny CLAP",
        seed=seed,
    )
    folder = root / "models" / "tiny-clap"
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return losses


def build_tiny_imu(root: Path, rows: list[dict], steps: int, seed: int) -> list[float]:
    """A tiny IMU encoder, warmed up contrastively on every window of the training traces, saved in the kit's format."""
    torch.manual_seed(seed)
    architecture = IMUEncoderConfig(sample_rate=IMU_RATE, window=100, width=96, layers=2, heads=4, scale=0.2)
    encoder = IMUEncoder(config=architecture, freeze=False)
    processor = encoder.media_processor()
    pieces, captions = [], []
    for r in rows:
        windows = processor(str(root / r["imu"]))
        pieces.append(windows)
        captions += [r["conversations"][-1]["value"]] * len(windows)
    losses = warm_up_tower(
        encoder,
        lambda batch: encoder.encode(batch).mean(1),  # the mean token: the embedding the contrastive warm-up trains
        encoder.output_dim,
        torch.cat(pieces),
        captions,
        steps,
        "tiny IMU",
        seed=seed,
    )
    encoder.save_pretrained(root / "models" / "tiny-imu")
    return losses
