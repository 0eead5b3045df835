"""One picture per evaluated sample for TensorBoard: its media (the image, the video's frames as a strip, the sound's
waveform, the IMU trace as six lines) with the prompt, the model's answer and the references written under it, so a
sample and what the model said about it sit in one place (TensorBoard's IMAGES tab)."""

from __future__ import annotations

import logging
import textwrap
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image

from anymal_lit.encoders import MediaError, decode_frames, load_audio

log = logging.getLogger(__name__)


def media_panel(modality: str, path: str, encoder: Any) -> tuple[str, Any] | None:
    """What to draw for one media item: ``("image", HxWx3 array)`` or ``("lines", (x, [C, T] array, label))``;
    None when it cannot be shown (a preview never stops training)."""
    try:
        if modality == "image":
            with Image.open(path) as img:
                return "image", np.asarray(img.convert("RGB"))
        if modality == "video":
            frames, _ = decode_frames(path, folder_fps=4.0)
            picked = frames[:: max(1, len(frames) // 4)][:4]
            return "image", np.concatenate([np.asarray(f.convert("RGB")) for f in picked], 1)
        if modality == "audio":
            rate = native_rate(path)
            wave = load_audio(path, rate)
            return "lines", (np.arange(len(wave)) / rate, wave[None], "seconds")
        if modality == "imu" and encoder is not None:
            windows = encoder.media_processor()(path)  # [P, C, W]: the trace as the model reads it
            trace = windows.permute(1, 0, 2).reshape(windows.shape[1], -1).float().numpy()
            return "lines", (np.arange(trace.shape[1]), trace, "sample")
    except Exception as err:  # a preview never stops training (it runs on rank 0 only: others would wait)
        log.warning("cannot show %s in TensorBoard: %s", path, err)
    return None


def native_rate(path: str) -> int:
    try:
        return int(soundfile.info(path).samplerate)
    except RuntimeError as err:  # soundfile.LibsndfileError: not a sound file it can read
        raise MediaError(f"{path}: cannot read the audio: {err}") from err


def sample_figure(panels: list[tuple[str, Any]], prompt: str, answer: str, references: list[str]) -> Any:
    """A matplotlib figure: the media panels side by side, the texts under them."""
    import matplotlib

    matplotlib.use("Agg")  # training runs headless
    import matplotlib.pyplot as plt

    width = 4.5 * max(1, len(panels))
    wrap = int(width * 15)
    lines = textwrap.wrap(f"prompt: {prompt}", wrap) + textwrap.wrap(f"model: {answer}", wrap)
    for ref in references[:3]:
        lines += textwrap.wrap(f"reference: {ref}", wrap)
    text_height = 0.2 * (len(lines) + 1)
    fig = plt.figure(figsize=(width, 3.0 + text_height))
    media_share = 3.0 / (3.0 + text_height)
    for i, (kind, data) in enumerate(panels):
        ax = fig.add_axes((i / len(panels) + 0.05, 1 - media_share + 0.1, 1 / len(panels) - 0.08, media_share - 0.14))
        if kind == "image":
            ax.imshow(data)
            ax.axis("off")
        else:
            x, channels, label = data
            for channel in channels:
                ax.plot(x, channel, linewidth=0.7)
            ax.set_xlabel(label, fontsize=7)
            ax.tick_params(labelsize=6)
    fig.text(0.02, 1 - media_share, "\n".join(lines), va="top", fontsize=8, family="monospace")
    return fig


def log_sample(
    experiment: Any,
    tag: str,
    step: int,
    media: list[tuple[str, str]],
    encoders: Any,
    prompt: str,
    answer: str,
    references: list[str],
) -> None:
    """Add one sample's figure under ``tag``; a sound also keeps its player (``<tag>/audio``), since a waveform
    cannot be listened to."""
    panels = []
    for modality, path in media:
        encoder = encoders[modality] if modality in encoders else None
        panel = media_panel(modality, path, encoder)
        if panel is not None:
            panels.append(panel)
        if modality == "audio" and panel is not None:
            rate = native_rate(path)
            experiment.add_audio(f"{tag}/audio", torch.from_numpy(load_audio(path, rate))[None], step, sample_rate=rate)
    experiment.add_figure(tag, sample_figure(panels, prompt, answer, references), step)
