"""Sample packing after media expansion: several samples share one row, isolated by a block-diagonal causal mask.

Packing happens on the spliced rows (text embeddings with the media tokens already in place), so modality tokens
and text are packed together and lengths are exact. Each packed row gets:

* a 4-D boolean mask ``[R, 1, L, L]``: position i attends to j only if j <= i and both belong to the same sample
  (measured with transformers: position-ids-only packing lets samples attend to each other unless
  ``use_cache=False``; the explicit mask makes isolation independent of that flag). It is built from the segments
  when read, since a flex-attention pass (``anymal_lit.models.packed_attention``) uses a ``BlockMask`` instead;
* position ids restarting at 0 for every sample, so each sample sees the positions it would see alone;
* labels whose first position in every sample is ignored, so no sample learns to predict the next one's start.

The loss over a packed batch is then the token-weighted mean of the samples' losses, as with padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anymal_lit.losses import IGNORE_INDEX
from anymal_lit.models.padding import pad_rows


def plan_packs(lengths: list[int], max_length: int) -> list[list[int]]:
    """Group row indices into as few packs of total length <= ``max_length`` as fit, balanced in length.

    Rows are dealt longest first to the currently shortest pack (LPT scheduling) over R = ceil(total / max_length)
    packs, adding a pack while one overflows. Balanced packs share one padded width, so almost no token is padding
    (first-fit would leave the last pack half empty). Row order is kept inside each pack.
    """
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long:
        raise ValueError(f"rows {too_long} are longer than the packing length {max_length}")
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    count = max(1, -(-sum(lengths) // max_length))
    while True:
        packs: list[list[int]] = [[] for _ in range(count)]
        load = [0] * count
        for i in order:
            j = min(range(count), key=load.__getitem__)
            packs[j].append(i)
            load[j] += lengths[i]
        if max(load) <= max_length:
            return [sorted(p) for p in packs if p]
        count += 1


@dataclass
class PackedInputs:
    """Packed LLM inputs: ``inputs_embeds`` ``[R, L, D]``, ``position_ids``/``labels``/``segments`` ``[R, L]``
    (``segments``: the source row of each token, -1 = padding) and the ``attention_mask`` ``[R, 1, L, L]`` (bool)."""

    inputs_embeds: torch.Tensor
    labels: torch.Tensor | None
    position_ids: torch.Tensor
    segments: torch.Tensor

    @property
    def real_tokens(self) -> int:
        return int((self.segments >= 0).sum())

    @property
    def attention_mask(self) -> torch.Tensor:
        """Block-diagonal causal: position i attends to j <= i of its own sample; padding attends to itself only."""
        segments = self.segments
        width = segments.shape[1]
        same = segments[:, :, None] == segments[:, None, :]
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=segments.device))
        mask = same & causal & (segments >= 0)[:, :, None]
        # padding rows attend to themselves only (an all-False row would give NaN softmax in some kernels)
        eye = torch.eye(width, dtype=torch.bool, device=segments.device)
        return (mask | (eye & (segments < 0)[:, :, None]))[:, None]


def pack_rows(
    rows_e: list[torch.Tensor], rows_l: list[torch.Tensor] | None, max_length: int, pad_to: int | None = None
) -> PackedInputs:
    """Pack variable-length rows ``[n_i, D]`` (and labels ``[n_i]``) into ``[R, L, D]`` with L <= ``max_length``.

    ``pad_to`` pads every packed row to a fixed length (e.g. ``max_length``, for static shapes); by default rows
    are padded to the longest pack.
    """
    lengths = [row.shape[0] for row in rows_e]
    packs = plan_packs(lengths, max_length)
    device = rows_e[0].device
    embeds = pad_rows([torch.cat([rows_e[i] for i in pack]) for pack in packs], 0.0, length=pad_to)
    width = embeds.shape[1]
    segments = pad_rows(
        [torch.cat([rows_e[i].new_full((lengths[i],), i, dtype=torch.long) for i in pack]) for pack in packs],
        -1,
        length=width,
    )
    positions = pad_rows(
        [torch.cat([torch.arange(lengths[i], device=device) for i in pack]) for pack in packs], 0, length=width
    )
    labels = None
    if rows_l is not None:
        rows_l = [row.clone() for row in rows_l]
        for row in rows_l:
            row[:1] = IGNORE_INDEX  # a sample's first token is never predicted from the previous sample's last one
        labels = pad_rows([torch.cat([rows_l[i] for i in pack]) for pack in packs], IGNORE_INDEX, length=width)
    return PackedInputs(embeds, labels, positions, segments)
