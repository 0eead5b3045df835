"""Shared helpers for time signals (audio, IMU): resampling and fixed-length pieces (AnyMAL eq. 3-4)."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from anymal_lit.encoders.base import MediaError

log = logging.getLogger(__name__)


def resample(signal: np.ndarray, source_rate: float, target_rate: float) -> np.ndarray:
    """Resample ``[C, T]`` along time with a polyphase filter (anti-aliased); identity when the rates agree."""
    if abs(source_rate - target_rate) < 1e-6 * target_rate:
        return signal
    ratio = Fraction(target_rate / source_rate).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def split_pieces(signal: np.ndarray, piece_length: int, max_pieces: int | None, path: str) -> np.ndarray:
    """Cut ``[C, T]`` into ``[P, C, piece_length]`` consecutive pieces, P = ceil(T / piece_length).

    A short last piece is completed by repeating its own samples (like CLAP's ``repeatpad``), so a short tail never
    turns into silence or stillness that the encoder would describe. A signal longer than
    ``max_pieces`` pieces keeps its first ``max_pieces`` (logged with the file name): the modality tokens must fit
    the LLM context.
    """
    length = signal.shape[-1]
    if length == 0:
        raise MediaError(f"signal is empty (0 samples): {path}")
    pieces = -(-length // piece_length)
    if max_pieces is not None and pieces > max_pieces:
        log.warning("%s: %d pieces of %d samples, keeping the first %d", path, pieces, piece_length, max_pieces)
        pieces = max_pieces
        signal = signal[..., : pieces * piece_length]
        length = signal.shape[-1]
    total = pieces * piece_length
    if total > length:
        tail = signal[..., (pieces - 1) * piece_length :]
        filled = np.tile(tail, -(-piece_length // tail.shape[-1]))[..., :piece_length]
        signal = np.concatenate([signal[..., : (pieces - 1) * piece_length], filled], axis=-1)
    return np.ascontiguousarray(signal.reshape(signal.shape[0], pieces, piece_length).transpose(1, 0, 2))
