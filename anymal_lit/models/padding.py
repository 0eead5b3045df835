"""Padding of variable-length rows into one batch tensor: the one routine the collator, the splice, the packer and
the toy world's LM training share (torch's ``pad_sequence``, which pads on either side)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence


def pad_rows(
    rows: Sequence[torch.Tensor], padding_value: float, side: str = "right", length: int | None = None
) -> torch.Tensor:
    """Rows ``[n_i, ...]`` -> ``[B, L, ...]``, filled with ``padding_value`` on ``side`` (``"right"`` or ``"left"``).

    ``L`` is the longest row's length, or ``length`` when that is longer (fixed shapes).
    """
    padded = pad_sequence(list(rows), batch_first=True, padding_value=padding_value, padding_side=side)
    missing = (length or 0) - padded.shape[1]
    if missing > 0:
        fill = padded.new_full((padded.shape[0], missing, *padded.shape[2:]), padding_value)
        padded = torch.cat([fill, padded] if side == "left" else [padded, fill], dim=1)
    return padded


def attention_mask(
    lengths: Sequence[int], side: str = "right", device: torch.device | str | None = None
) -> torch.Tensor:
    """``[B, max(lengths)]`` long mask, 1 on each row's ``lengths[r]`` real tokens (padded on ``side``)."""
    return pad_rows([torch.ones(n, dtype=torch.long, device=device) for n in lengths], 0, side)
