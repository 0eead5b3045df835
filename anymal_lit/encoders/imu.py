"""IMU: CSV/NPY motion traces, resampling and windowing, and an IMU2CLIP-style encoder written in the kit.

No IMU encoder is packaged on PyPI (IMU2CLIP's code is a research repository), so the kit ships its own: a 1-D
convolutional stem that downsamples ``[B, channels, T]`` windows into a token sequence, then a small transformer
encoder — the architecture family IMU2CLIP trains against CLIP's text/video embeddings. Weights are saved and
loaded with :meth:`IMUEncoder.save_pretrained` / ``pretrained=<folder>`` (``imu_encoder.json`` + safetensors).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from anymal_lit.encoders.base import MediaError, ModalityEncoder
from anymal_lit.encoders.signal import resample, split_pieces

log = logging.getLogger(__name__)

CONFIG_FILE = "imu_encoder.json"
RATE_RANGE = (1.0, 10_000.0)
"""Sample rates (Hz) a timestamp column may give: IMUs log at ~10-2000 Hz."""
WEIGHTS_FILE = "model.safetensors"


def load_imu(path: str, channels: int, default_rate: float | None) -> tuple[np.ndarray, float]:
    """Read a trace as ``[channels, T]`` float32 and its sample rate.

    Formats: CSV (optional header row) or NPY ``[T, columns]``. ``channels`` columns (accelerometer x/y/z then
    gyroscope x/y/z) are read at ``default_rate``; one more leading column is a timestamp in seconds, from which the
    rate is measured. Raises :class:`MediaError` naming the file for anything else (wrong column count, ragged or
    non-numeric rows, NaN/inf, fewer than 2 samples, non-increasing timestamps or timestamps that are not seconds).
    """
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            data = _read_csv(path)
        else:
            raise MediaError(f"IMU file must be .csv or .npy: {path}")
        data = np.asarray(data, dtype=np.float64)
    except FileNotFoundError:
        raise MediaError(f"IMU file not found: {path}") from None
    except MediaError:
        raise
    except (ValueError, TypeError, OSError, EOFError) as err:
        raise MediaError(f"IMU file cannot be read: {path} ({err})") from None
    if data.ndim != 2 or data.shape[0] == 0:
        raise MediaError(f"IMU file holds no samples (shape {data.shape}, expected [T, columns]): {path}")
    if data.shape[1] not in (channels, channels + 1):
        raise MediaError(
            f"IMU file has {data.shape[1]} columns, expected {channels} (acc xyz, gyro xyz) or {channels + 1} "
            f"(timestamp first): {path}"
        )
    if not np.isfinite(data).all():
        row = int(np.nonzero(~np.isfinite(data).all(axis=1))[0][0])
        raise MediaError(f"IMU file holds NaN or infinite values (first at sample {row}): {path}")
    if data.shape[1] == channels + 1:
        stamps, data = data[:, 0], data[:, 1:]
        steps = np.diff(stamps)
        if len(steps) == 0 or (steps <= 0).any():
            raise MediaError(f"IMU timestamps must increase and need >= 2 samples: {path}")
        rate = 1.0 / float(np.median(steps))
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:  # milli- or nanosecond stamps would be resampled 1000x
            raise MediaError(
                f"IMU timestamps give {rate:.3g} Hz, outside {RATE_RANGE[0]:g}-{RATE_RANGE[1]:g} Hz: the first column "
                f"must be seconds: {path}"
            )
    elif default_rate is None:
        raise MediaError(f"IMU file has no timestamp column and no sample rate is configured: {path}")
    else:
        rate = default_rate
    if data.shape[0] < 2:
        raise MediaError(f"IMU trace has a single sample (a motion needs >= 2): {path}")
    return data.T.astype(np.float32), rate


def _read_csv(path: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # header
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError(f"rows have different numbers of columns {sorted(widths)}")
    values = []
    for i, row in enumerate(rows):
        try:
            values.append([float(v) for v in row])
        except ValueError as err:
            raise ValueError(f"data row {i + 1}: {err}") from None
    return np.array(values) if rows else np.zeros((0, 0))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class IMUProcessor:
    """Load a trace, resample it to the encoder's rate and cut it into ``window`` -sample pieces ``[P, C, window]``."""

    channels: int
    sample_rate: float
    window: int
    default_rate: float | None = None
    max_pieces: int | None = None

    def __call__(self, path: str) -> torch.Tensor:
        trace, rate = load_imu(path, self.channels, self.default_rate or self.sample_rate)
        if abs(rate - self.sample_rate) > 1e-3 * self.sample_rate:
            log.debug("%s: resampling %.1f Hz -> %.1f Hz", path, rate, self.sample_rate)
        trace = resample(trace, rate, self.sample_rate)
        return torch.from_numpy(split_pieces(trace, self.window, self.max_pieces, path))


@dataclass
class IMUEncoderConfig:
    """Architecture of :class:`IMUEncoder` (saved as ``imu_encoder.json``).

    Args:
        channels: Input channels (6 = accelerometer xyz + gyroscope xyz).
        sample_rate: Rate the encoder runs at (Hz); traces at other rates are resampled.
        window: Samples per piece (the encoder's input length); longer traces become several pieces.
        width: Token size.
        layers: Transformer layers.
        heads: Attention heads.
        stem_stride: Time downsampling of the conv stem (a power of 2); tokens per piece = window / stem_stride.
        scale: Multiplies the raw input, to bring it to about unit variance (e.g. 1/9.81 for m/s^2).
    """

    channels: int = 6
    sample_rate: float = 50.0
    window: int = 100
    width: int = 128
    layers: int = 2
    heads: int = 4
    stem_stride: int = 4
    scale: float = 1.0


class IMUEncoder(ModalityEncoder):
    """IMU2CLIP-style encoder: conv stem (two stride-2 blocks) -> transformer -> ``[B, window / 4, width]`` tokens.

    Args:
        pretrained: Folder written by :meth:`save_pretrained` (architecture + weights).
        config: Architecture of a new, randomly initialised encoder (default: :class:`IMUEncoderConfig`'s);
            not with ``pretrained``, whose folder holds its own.
        default_rate: Rate of traces without a timestamp column (default: the architecture's ``sample_rate``).
        max_pieces: Most pieces per trace (longer traces keep their start, logged).
        freeze: Keep the encoder frozen (AnyMAL freezes it in every stage).
    """

    modality = "imu"

    def __init__(
        self,
        pretrained: str | None = None,
        config: IMUEncoderConfig | None = None,
        default_rate: float | None = None,
        max_pieces: int | None = 16,
        freeze: bool = True,
    ) -> None:
        super().__init__(freeze=freeze)
        if pretrained is not None:
            if config is not None:
                raise ValueError("IMUEncoder: give pretrained (a saved encoder) or config (a new one), not both")
            cfg_path = Path(pretrained) / CONFIG_FILE
            if not cfg_path.is_file():
                raise FileNotFoundError(f"IMU encoder config not found: {cfg_path}")
            config = IMUEncoderConfig(**json.loads(cfg_path.read_text()))
        self.config = config or IMUEncoderConfig()
        cfg = self.config
        blocks = int(np.log2(cfg.stem_stride))
        if 2**blocks != cfg.stem_stride or cfg.window % cfg.stem_stride:
            raise ValueError(f"stem_stride {cfg.stem_stride} must be a power of 2 dividing window {cfg.window}")
        stem: list[nn.Module] = []
        in_ch = cfg.channels
        for _ in range(blocks):
            stem += [nn.Conv1d(in_ch, cfg.width, kernel_size=5, stride=2, padding=2), nn.GELU()]
            in_ch = cfg.width
        self.stem = nn.Sequential(*stem, nn.Conv1d(in_ch, cfg.width, kernel_size=3, padding=1))
        self.positions = nn.Parameter(torch.randn(cfg.window // cfg.stem_stride, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=cfg.width * 4, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        if pretrained is not None:
            self.load_state_dict(load_file(str(Path(pretrained) / WEIGHTS_FILE)))
        self.pretrained = pretrained
        self.default_rate = default_rate
        self.max_pieces = max_pieces
        self.apply_freeze()

    @property
    def output_dim(self) -> int:
        return self.config.width

    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        x = self.stem(pieces * self.config.scale).transpose(1, 2)  # [P, T/stride, width]
        return self.norm(self.transformer(x + self.positions))

    def media_processor(self) -> IMUProcessor:
        cfg = self.config
        return IMUProcessor(cfg.channels, cfg.sample_rate, cfg.window, self.default_rate, self.max_pieces)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "pretrained": self.pretrained, **asdict(self.config)}
