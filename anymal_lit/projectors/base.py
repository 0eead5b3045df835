"""The projector contract: trainable map from encoder features to LLM input embeddings."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Projector(nn.Module, ABC):
    """Base class of the trainable projectors (Perceiver Resampler, linear, MLP).

    A projector maps the features of one media piece ``[P, N, in_dim]`` to ``num_tokens`` embeddings
    ``[P, num_tokens, out_dim]`` that are spliced into the LLM's input at the placeholder. Its output passes through
    a LayerNorm whose gain :meth:`match_output_rms` sets to the RMS of the LLM's token embeddings, so that from
    initialisation on the modality tokens have the scale of the only inputs the frozen LLM was trained on (tokens of
    another scale can keep alignment from starting).

    Args:
        in_dim: Feature size of the encoder tokens (the encoder's ``output_dim``).
        out_dim: Hidden size of the LLM.
        output_norm: Normalise the output tokens (LayerNorm with learnable gain and bias).
    """

    def __init__(self, in_dim: int, out_dim: int, output_norm: bool = True) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.output_norm = nn.LayerNorm(out_dim) if output_norm else nn.Identity()

    @abstractmethod
    def tokens_per_piece(self, num_input_tokens: int) -> int:
        """How many LLM tokens one piece of ``num_input_tokens`` encoder tokens becomes."""

    @abstractmethod
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """``[P, N, in_dim] -> [P, K, out_dim]`` before the output norm."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[P, N, in_dim] -> [P, K, out_dim]``."""
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"{type(self).__name__} expects features of size {self.in_dim}, got {features.shape[-1]}")
        return self.output_norm(self.project(features))

    @torch.no_grad()
    def match_output_rms(self, target_rms: float) -> None:
        """Scale the output so each token has RMS ``target_rms`` at initialisation."""
        if isinstance(self.output_norm, nn.LayerNorm):
            self.output_norm.weight.fill_(target_rms)
