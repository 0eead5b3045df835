"""Audio: WAV/FLAC/OGG/MP3 loading (soundfile + scipy, no torchaudio), fixed-length pieces, and the CLAP audio tower."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from transformers import AutoConfig, ClapAudioConfig, ClapAudioModel, ClapFeatureExtractor, ClapModel

from anymal_lit.encoders.base import MediaError, ModalityEncoder
from anymal_lit.encoders.signal import resample, split_pieces

log = logging.getLogger(__name__)


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate``: channels are averaged, other rates resampled (logged).

    Raises :class:`MediaError` naming the file when it is missing, cannot be decoded, is empty or holds NaN/inf.
    """
    if not Path(path).is_file():
        raise MediaError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as err:
        raise MediaError(
            f"audio file cannot be decoded: {path} ({err}; soundfile reads WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF: "
            "convert others, e.g. `ffmpeg -i in.m4a out.flac`)"
        ) from None
    if data.shape[0] == 0:
        raise MediaError(f"audio file is empty (0 samples): {path}")
    if not np.isfinite(data).all():
        raise MediaError(f"audio file holds NaN or infinite samples: {path}")
    if data.shape[1] > 1:
        log.debug("%s: mixing %d channels to mono", path, data.shape[1])
    mono = data.mean(axis=1)[None]  # [1, T]
    if rate != sample_rate:
        log.debug("%s: resampling %d Hz -> %d Hz", path, rate, sample_rate)
    return resample(mono, rate, sample_rate)[0]


@dataclass(frozen=True)
class AudioProcessor:
    """Load a sound file and turn each ``piece_seconds`` piece into CLAP log-mel features ``[P, 1, frames, mels]``.

    Long clips become several pieces, each encoded and projected on its own and their tokens concatenated (paper
    eq. 3-4); at most ``max_pieces`` pieces are kept (logged). A clip shorter than one STFT window of the feature
    extractor is an error; silence is a valid sound.
    """

    feature_extractor: ClapFeatureExtractor
    piece_seconds: float
    max_pieces: int | None = None

    def __call__(self, path: str) -> torch.Tensor:
        rate = self.feature_extractor.sampling_rate
        wave = load_audio(path, rate)
        window = self.feature_extractor.fft_window_size
        if len(wave) < window:  # repeat-padding a few samples would feed the encoder a buzz, not the sound
            raise MediaError(
                f"audio is too short: {len(wave)} samples at {rate} Hz, under one {window}-sample analysis window: "
                f"{path}"
            )
        pieces = split_pieces(wave[None], round(self.piece_seconds * rate), self.max_pieces, path)[:, 0]
        return self.features(pieces)

    def features(self, pieces: np.ndarray) -> torch.Tensor:
        """``[P, samples]`` waveforms -> ``[P, 1, frames, mels]`` features."""
        rate = self.feature_extractor.sampling_rate
        out = self.feature_extractor(list(pieces), sampling_rate=rate, return_tensors="pt")
        return out["input_features"]


class ClapAudioEncoder(ModalityEncoder):
    """The audio tower of CLAP (HTSAT, transformers ``ClapAudioModel``), returning its last feature map as tokens.

    The final ``[B, C, F, T]`` map of the Swin encoder is flattened to ``F * T`` tokens of size ``C``. Load
    ``pretrained`` from a local folder (a ``ClapModel``/``ClapAudioModel`` checkpoint with its
    ``preprocessor_config.json``) or a populated HF cache, or build a fresh model from ``config`` (a dict of
    ``ClapAudioConfig`` fields, or a folder/JSON file) with ``feature_extractor`` settings.

    Non-fusion models take one fixed-length window per piece: the feature extractor uses ``truncation="rand_trunc"``
    (the fusion default expects the 4-view input of fusion models), and pieces are cut to exactly that window, so
    nothing is truncated at random.

    Args:
        pretrained: Folder or hub id of a CLAP checkpoint.
        config: ``ClapAudioConfig`` fields (or a path to a ``config.json``) for a model built from scratch.
        feature_extractor: ``ClapFeatureExtractor`` arguments overriding the checkpoint's (``sampling_rate``,
            ``feature_size`` (mel bins), ``hop_length``, ``fft_window_size``, ``max_length_s``, ...).
        piece_seconds: Length of one piece (default: the feature extractor's ``max_length_s``).
        max_pieces: Most pieces per clip (longer clips keep their start, logged).
        freeze: Keep the encoder frozen (AnyMAL freezes it in every stage).
    """

    modality = "audio"

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | str | None = None,
        feature_extractor: dict[str, Any] | None = None,
        piece_seconds: float | None = None,
        max_pieces: int | None = 8,
        freeze: bool = True,
    ) -> None:
        super().__init__(freeze=freeze)
        if (pretrained is None) == (config is None):
            raise ValueError("ClapAudioEncoder needs exactly one of pretrained or config")
        fe_args = {"truncation": "rand_trunc", "padding": "repeatpad", **(feature_extractor or {})}
        if pretrained is not None:
            self.audio = self._load(pretrained)
            self.feature_extractor = ClapFeatureExtractor.from_pretrained(pretrained, **fe_args)
        else:
            cfg = self._config(config)
            if cfg.enable_fusion:
                raise ValueError("ClapAudioEncoder encodes one window per piece; use a config with enable_fusion=false")
            self.audio = ClapAudioModel(cfg)
            self.feature_extractor = ClapFeatureExtractor(feature_size=cfg.num_mel_bins, **fe_args)
        if self.feature_extractor.feature_size != self.audio.config.num_mel_bins:
            raise ValueError(
                f"feature extractor has {self.feature_extractor.feature_size} mel bins, the CLAP model expects "
                f"{self.audio.config.num_mel_bins}"
            )
        self.piece_seconds = float(piece_seconds or self.feature_extractor.max_length_s)
        self.max_pieces = max_pieces
        self.source = {"pretrained": pretrained, "config": config if isinstance(config, str) else None}
        self.apply_freeze()

    @staticmethod
    def _load(pretrained: str) -> ClapAudioModel:
        # A full CLAP checkpoint (text + audio, e.g. laion/clap-htsat-unfused) holds the tower as `audio_model`.
        if AutoConfig.from_pretrained(pretrained).model_type == "clap":
            return ClapModel.from_pretrained(pretrained).audio_model
        return ClapAudioModel.from_pretrained(pretrained)

    @staticmethod
    def _config(config: dict[str, Any] | str) -> ClapAudioConfig:
        if isinstance(config, dict):
            return ClapAudioConfig(**config)
        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"CLAP audio config not found: {path}")
        return ClapAudioConfig.from_pretrained(str(path))

    @property
    def output_dim(self) -> int:
        cfg = self.audio.config  # channels of the last Swin stage (768 for HTSAT-base)
        return int(cfg.patch_embeds_hidden_size * 2 ** (len(cfg.depths) - 1))

    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        fmap = self.audio(input_features=pieces).last_hidden_state  # [P, C, F, T]
        return fmap.flatten(2).transpose(1, 2)  # [P, F*T, C]

    def media_processor(self) -> AudioProcessor:
        return AudioProcessor(self.feature_extractor, self.piece_seconds, self.max_pieces)

    def fingerprint(self) -> dict[str, Any]:
        fe = self.feature_extractor
        return {
            **super().fingerprint(),
            **self.source,
            "sampling_rate": fe.sampling_rate,
            "mels": fe.feature_size,
            "hop_length": fe.hop_length,
            "piece_seconds": self.piece_seconds,
        }
