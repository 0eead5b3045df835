"""The model's input contract: what a collated batch holds (``anymal_lit.data.collate.PaddingCollator`` writes it,
:class:`~anymal_lit.models.AnyMALModel` reads it)."""

from __future__ import annotations

from typing import TypedDict

import torch


class MediaGroup(TypedDict, total=False):
    """One modality's media items in a batch, in row order and, within a row, in placeholder order."""

    counts: torch.Tensor
    """``[items]``: pieces (tiles, clips, windows) of each item."""
    pieces: torch.Tensor
    """``[P, ...]``: the pieces to encode, for the items not read from the feature cache."""
    features: torch.Tensor
    """``[P', N, D]``: encoder features of the cached items' pieces (only when some item was cached)."""
    cached: torch.Tensor
    """``[items]`` bool: which items' pieces are in ``features`` (only when some item was cached)."""


class Batch(TypedDict, total=False):
    """A collated batch. ``input_ids`` and ``attention_mask`` are always there unless every record of the batch was
    skipped as bad (then only ``skipped`` is)."""

    input_ids: torch.Tensor
    """``[B, T]`` token ids, right-padded; one placeholder token per media item."""
    attention_mask: torch.Tensor
    """``[B, T]``: 1 on real tokens."""
    labels: torch.Tensor
    """``[B, T]``: targets (``IGNORE_INDEX`` off the assistant turns); absent for generation."""
    media: dict[str, MediaGroup]
    """Modality -> its items."""
    ids: list[str]
    """Record ids, one per row (errors name them)."""
    index: torch.Tensor
    """``[B]``: each row's position in its dataset (predictions are written in input order)."""
    skipped: int
    """Records of this batch dropped as bad (with ``skip_bad_records``)."""
