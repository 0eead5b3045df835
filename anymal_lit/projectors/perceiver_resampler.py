"""Perceiver Resampler (Flamingo; AnyMAL's image and video projector)."""

from __future__ import annotations

import torch
from torch import nn

from anymal_lit.projectors.base import Projector


class ResamplerBlock(nn.Module):
    """Latents attend to ``[media tokens; latents]`` (Flamingo's keys include the latents), then a feed-forward."""

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim)
        )

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_media(media), q], dim=1)
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.ff(latents)


class PerceiverResampler(Projector):
    """A fixed number of learned latents cross-attend to the encoder tokens; any N in, ``num_latents`` out.

    AnyMAL's defaults: 64 latents and 6 layers for images, 32 latents and 4 layers for video. Fewer latents mean
    shorter LLM inputs (faster training and generation) and less room for each item's detail.

    Args:
        in_dim: Feature size of the encoder tokens.
        out_dim: Hidden size of the LLM.
        num_latents: LLM tokens per piece.
        num_layers: Cross-attention + feed-forward blocks.
        dim: Width of the latents (default ``in_dim``).
        num_heads: Attention heads (must divide ``dim``).
        ff_mult: Feed-forward expansion factor.
        num_input_positions: Add a learned position embedding to the first ``num_input_positions`` encoder tokens
            (None: off, as in Flamingo). Attention over the encoder tokens is order-blind, so without it the
            latents only see where a patch is if the frozen encoder kept that in its features.
        output_norm: Normalise the output tokens (see :class:`Projector`).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_latents: int = 64,
        num_layers: int = 6,
        dim: int | None = None,
        num_heads: int = 8,
        ff_mult: int = 4,
        num_input_positions: int | None = None,
        output_norm: bool = True,
    ) -> None:
        super().__init__(in_dim, out_dim, output_norm)
        width = dim or in_dim
        self.num_latents = num_latents
        self.input_proj = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.latents = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.input_positions = (
            nn.Parameter(torch.randn(num_input_positions, width) * 0.02) if num_input_positions else None
        )
        self.blocks = nn.ModuleList(ResamplerBlock(width, num_heads, ff_mult) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, out_dim)

    def tokens_per_piece(self, num_input_tokens: int) -> int:
        return self.num_latents

    def project(self, features: torch.Tensor) -> torch.Tensor:
        media = self.input_proj(features)  # [P, N, W]
        if self.input_positions is not None:
            n = media.shape[1]
            if n > self.input_positions.shape[0]:
                raise ValueError(f"{n} encoder tokens but only {self.input_positions.shape[0]} input positions")
            media = media + self.input_positions[:n]
        latents = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)  # [P, K, W]
        for block in self.blocks:
            latents = block(media, latents)
        return self.output_proj(self.norm(latents))
