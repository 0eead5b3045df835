"""Linear and MLP projectors (AnyMAL uses a linear projector for audio and IMU)."""

from __future__ import annotations

import torch
from torch import nn

from anymal_lit.projectors.base import Projector


class LinearProjector(Projector):
    """Token-wise linear map, then (optionally) pooled to a fixed number of tokens.

    Each encoder token ``[.., in_dim]`` is mapped to ``out_dim``; with ``num_tokens`` set, the token sequence is
    adaptively average-pooled to that many tokens first (AnyMAL: 32 tokens for audio and IMU), otherwise every
    encoder token becomes one LLM token.

    Args:
        in_dim: Feature size of the encoder tokens.
        out_dim: Hidden size of the LLM.
        num_tokens: LLM tokens per piece (None keeps one per encoder token).
        output_norm: Normalise the output tokens (see :class:`Projector`).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int | None = None, output_norm: bool = True) -> None:
        super().__init__(in_dim, out_dim, output_norm)
        self.num_tokens = num_tokens
        self.proj = nn.Linear(in_dim, out_dim)

    def tokens_per_piece(self, num_input_tokens: int) -> int:
        return self.num_tokens or num_input_tokens

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.num_tokens is None or features.shape[1] == self.num_tokens:
            return features
        # [P, N, D] -> [P, D, N] -> pool over N -> [P, K, D]
        return nn.functional.adaptive_avg_pool1d(features.transpose(1, 2), self.num_tokens).transpose(1, 2)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self._pool(features))


class MLPProjector(LinearProjector):
    """Two-layer MLP with GELU (LLaVA-1.5 style), optionally pooled to ``num_tokens`` like :class:`LinearProjector`.

    Args:
        in_dim: Feature size of the encoder tokens.
        out_dim: Hidden size of the LLM.
        num_tokens: LLM tokens per piece (None keeps one per encoder token).
        hidden_dim: Width of the hidden layer (default ``out_dim``).
        output_norm: Normalise the output tokens (see :class:`Projector`).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tokens: int | None = None,
        hidden_dim: int | None = None,
        output_norm: bool = True,
    ) -> None:
        super().__init__(in_dim, out_dim, num_tokens, output_norm)
        hidden = hidden_dim or out_dim
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
