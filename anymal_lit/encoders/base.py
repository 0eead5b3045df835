"""The modality encoder contract: a frozen network g that turns media pieces into token features."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import torch
from torch import nn


class MediaError(ValueError):
    """A media file that cannot be turned into encoder input (missing, corrupt, empty, ...).

    The message always names the file; the data pipeline adds the record that referenced it.
    """


class MediaProcessor(Protocol):
    """Picklable callable run in data-loader workers: a media file path -> encoder input pieces.

    Returns a tensor whose first dimension is the number of pieces (tiles, chunks) of that media item;
    every piece is encoded and projected on its own (AnyMAL eq. 3-4).
    """

    def __call__(self, path: str) -> torch.Tensor: ...


class ModalityEncoder(nn.Module, ABC):
    """Base class of the frozen modality encoders g (image, audio, video, IMU).

    Subclasses set ``modality`` (the placeholder name, e.g. ``"image"`` for ``<image>``), build their network in
    ``__init__``, implement :meth:`encode` and :meth:`media_processor`. The base class owns freezing: a frozen
    encoder has ``requires_grad=False`` everywhere and stays in eval mode even when its parent calls ``train()``.

    Args:
        freeze: Keep the encoder's weights fixed (the AnyMAL recipe freezes every encoder in every stage).
    """

    modality: str = ""

    def __init__(self, freeze: bool = True) -> None:
        super().__init__()
        self.frozen = freeze

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Feature size D of each output token."""

    @abstractmethod
    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        """Encode a batch of pieces ``[P, ...]`` into token features ``[P, N, D]``."""

    @abstractmethod
    def media_processor(self) -> MediaProcessor:
        """The loader that turns a media file into this encoder's input pieces (runs in data workers)."""

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this encoder's outputs (used to key and validate feature caches)."""
        return {"class": type(self).__qualname__}

    def apply_freeze(self) -> None:
        """Call at the end of a subclass ``__init__`` once the network exists."""
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> ModalityEncoder:
        # A frozen encoder never switches to train mode (dropout, norm statistics stay fixed).
        return super().train(mode and not self.frozen)

    def forward(self, pieces: torch.Tensor) -> torch.Tensor:
        """``[P, ...] -> [P, N, D]``; runs without autograd when frozen."""
        if self.frozen:
            with torch.no_grad():
                return self.encode(pieces)
        return self.encode(pieces)
