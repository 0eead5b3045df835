"""AnyMAL: frozen encoders -> trainable projectors -> tokens spliced into an LLM's input embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from anymal_lit.encoders.base import ModalityEncoder
from anymal_lit.losses import IGNORE_INDEX, masked_lm_loss
from anymal_lit.models.batch import Batch
from anymal_lit.models.causal_lm import CausalLM
from anymal_lit.models.packed_attention import check_choice, packed_attention
from anymal_lit.models.packing import PackedInputs, pack_rows
from anymal_lit.models.padding import attention_mask, pad_rows
from anymal_lit.projectors.base import Projector


class ContextLengthError(ValueError):
    """Rows longer than the LLM context after media expansion; names the records (also as ``records``)."""

    def __init__(self, message: str, records: list[str] | None = None) -> None:
        super().__init__(message)
        self.records = records or []


@dataclass
class SplicedInputs:
    """LLM inputs after the placeholders were replaced by media tokens (all ``[B, L, ...]``)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    position_ids: torch.Tensor


class AnyMALModel(nn.Module):
    """The any-modality augmented LLM of Moon et al. (2023), as a plain ``nn.Module``.

    Each modality has a frozen encoder g and a trainable projector; a media item's pieces (tiles, chunks) are
    encoded and projected independently and their tokens concatenated (paper eq. 3-4). Every placeholder token
    (``<image>``) in the text is replaced by its item's tokens, so a prompt may hold any number of items of any
    modalities in any order.

    Args:
        llm: The language model (frozen in alignment; LoRA in SFT/DPO).
        encoders: Modality name -> frozen encoder (the names must have a placeholder in ``llm``).
        projectors: Modality name -> projector from that encoder's features to the LLM hidden size.
        match_embedding_rms: Scale each projector's output at init to the RMS of the LLM's token embeddings.
        packing_length: Pack the teacher-forced rows of a batch (after media expansion) into sequences of at most
            this many tokens with a block-diagonal causal mask (``anymal_lit.models.packing``); None pads instead.
            The loss is the same either way; packing removes the padding's compute.
        packing_attention: Attention kernel of packed rows: ``documents`` (one causal SDPA call per packed sample),
            ``flex`` (FlexAttention with a document block mask; where it cannot run, e.g. a CPU training step, the
            dense mask with a warning), ``mask`` (the dense 4-D boolean mask through the LLM's own attention) or
            ``auto`` (flex on CUDA, ``documents`` elsewhere; see ``anymal_lit.models.packed_attention``).
    """

    def __init__(
        self,
        llm: CausalLM,
        encoders: dict[str, ModalityEncoder],
        projectors: dict[str, Projector],
        match_embedding_rms: bool = True,
        packing_length: int | None = None,
        packing_attention: str = "auto",
    ) -> None:
        super().__init__()
        if set(encoders) != set(projectors):
            raise ValueError(
                f"encoders {sorted(encoders)} and projectors {sorted(projectors)} name different modalities"
            )
        for name, encoder in encoders.items():
            projector = projectors[name]
            if name not in llm.placeholder_ids:
                raise ValueError(f"modality {name!r} has no placeholder token; known: {sorted(llm.placeholder_ids)}")
            if projector.in_dim != encoder.output_dim:
                raise ValueError(
                    f"projector {name!r} has in_dim={projector.in_dim} but encoder {type(encoder).__name__} "
                    f"outputs {encoder.output_dim} features"
                )
            if projector.out_dim != llm.hidden_size:
                raise ValueError(
                    f"projector {name!r} has out_dim={projector.out_dim}, LLM hidden size is {llm.hidden_size}"
                )
            if match_embedding_rms:
                projector.match_output_rms(llm.embedding_rms())
        self.llm = llm
        self.encoders = nn.ModuleDict(encoders)
        self.projectors = nn.ModuleDict(projectors)
        self.neftune_alpha = 0.0
        if packing_length is not None and packing_length > llm.max_length:
            raise ValueError(f"packing_length {packing_length} exceeds the LLM context ({llm.max_length})")
        self.packing_length = packing_length
        self.packing_attention = check_choice(packing_attention)

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def media_processors(self) -> dict[str, Any]:
        """Modality -> file loader for the data pipeline (picklable; runs in workers)."""
        return {name: encoder.media_processor() for name, encoder in self.encoders.items()}

    def project_media(self, media: dict[str, dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
        """Encode and project every item: modality -> list of ``[pieces_i * K, D]`` tensors, in batch order."""
        out: dict[str, list[torch.Tensor]] = {}
        for name, item in media.items():
            if name not in self.encoders:
                raise ValueError(f"batch holds {name!r} media but the model has no {name!r} encoder")
            counts = [int(c) for c in item["counts"]]
            features = self._features(name, item, counts)  # [P, N, D_enc]
            tokens = self.projectors[name](features)  # [P, K, D_llm]
            # each item's pieces are consecutive: [P, K, D] -> per item [pieces_i * K, D] (eq. 4: concatenation)
            out[name] = [t.reshape(-1, t.shape[-1]) for t in torch.split(tokens, counts)]
        return out

    def _features(self, name: str, item: dict[str, torch.Tensor], counts: list[int]) -> torch.Tensor:
        """Encoder features of every piece, in item order: encoded live, or read from the feature cache."""
        cached = item.get("cached")
        if cached is None:
            return self.encoders[name](item["pieces"])
        encoded = self.encoders[name](item["pieces"]) if "pieces" in item else item["features"][:0]
        live = iter(torch.split(encoded, [c for c, k in zip(counts, cached) if not k]))
        stored = iter(torch.split(item["features"], [c for c, k in zip(counts, cached) if k]))
        parts = [next(stored) if k else next(live) for k in cached.tolist()]
        return torch.cat(parts)

    def splice(self, batch: Batch, padding_side: str = "right") -> SplicedInputs:
        """Replace each placeholder by its media tokens and re-pad the rows to a common length."""
        rows_e, rows_l = self.splice_rows(batch)
        return self._pad(rows_e, rows_l, padding_side, batch)

    def splice_rows(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Per row, the embeddings ``[n_r, D]`` with media tokens in place of the placeholders (and labels)."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        labels = batch.get("labels")
        media_tokens = self.project_media(batch.get("media", {}))
        embeds = self.llm.embed_tokens(input_ids)
        if self.training and self.neftune_alpha > 0:
            embeds = self._neftune(embeds, mask)
        next_item = dict.fromkeys(media_tokens, 0)
        id_to_modality = {tok: name for name, tok in self.llm.placeholder_ids.items()}
        placeholder_ids = torch.tensor(list(id_to_modality), device=input_ids.device)
        rows_e, rows_l = [], []
        for r in range(input_ids.shape[0]):
            keep = mask[r].nonzero().squeeze(-1)
            ids, row_e = input_ids[r, keep], embeds[r, keep]
            row_l = labels[r, keep] if labels is not None else None
            pieces_e, pieces_l, start = [], [], 0
            for pos in torch.isin(ids, placeholder_ids).nonzero().squeeze(-1).tolist():
                name = id_to_modality[int(ids[pos])]
                if name not in media_tokens or next_item[name] >= len(media_tokens[name]):
                    raise ValueError(
                        f"record {self._record_id(batch, r)}: more <{name}> placeholders than {name} items"
                    )
                tokens = media_tokens[name][next_item[name]].to(row_e.dtype)
                next_item[name] += 1
                pieces_e += [row_e[start:pos], tokens]
                if row_l is not None:
                    pieces_l += [row_l[start:pos], row_l.new_full((tokens.shape[0],), IGNORE_INDEX)]
                start = pos + 1
            rows_e.append(torch.cat([*pieces_e, row_e[start:]]))
            if row_l is not None:
                rows_l.append(torch.cat([*pieces_l, row_l[start:]]))
        for name, used in next_item.items():
            if used != len(media_tokens[name]):
                raise ValueError(
                    f"batch {batch.get('ids')}: {len(media_tokens[name])} {name} items, {used} placeholders"
                )
        return rows_e, rows_l if labels is not None else None

    def _pad(
        self, rows_e: list[torch.Tensor], rows_l: list[torch.Tensor] | None, side: str, batch: Batch
    ) -> SplicedInputs:
        self._check_context(rows_e, batch, self.llm.max_length)
        embeds = pad_rows(rows_e, 0.0, side)
        attn = attention_mask([row.shape[0] for row in rows_e], side, embeds.device)
        labels = pad_rows(rows_l, IGNORE_INDEX, side) if rows_l else None
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        return SplicedInputs(embeds, attn, labels, position_ids)

    def _absent_projectors(self, batch: Batch) -> torch.Tensor | float:
        """0 x the trainable parameters of projectors whose modality is absent from the batch.

        Every projector then takes part in every step on every rank (with zero gradients when unused), so DDP needs
        no ``find_unused_parameters`` and sharded strategies never wait on a collective another rank skipped.
        """
        present = set(batch.get("media", {}))
        params = [p for name, proj in self.projectors.items() if name not in present for p in proj.parameters()]
        params = [p for p in params if p.requires_grad]
        return sum(p.sum() for p in params) * 0.0 if params else 0.0

    def _check_context(self, rows_e: list[torch.Tensor], batch: Batch, limit: int) -> None:
        too_long = [self._record_id(batch, r) for r, row in enumerate(rows_e) if row.shape[0] > limit]
        if too_long:
            raise ContextLengthError(
                f"records {too_long} exceed the LLM context ({limit} tokens) after media expansion", too_long
            )

    def _neftune(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """NEFTune (Jain et al., 2023): uniform noise scaled by alpha / sqrt(L * d) on the text embeddings."""
        lengths = mask.sum(-1, keepdim=True).unsqueeze(-1).clamp(min=1)  # [B, 1, 1]
        scale = self.neftune_alpha / torch.sqrt(lengths * embeds.shape[-1])
        return embeds + torch.empty_like(embeds).uniform_(-1, 1) * scale

    @staticmethod
    def _record_id(batch: Batch, row: int) -> str:
        ids = batch.get("ids")
        return str(ids[row]) if ids is not None else f"row {row}"

    def forward(self, batch: Batch, pack: bool = True) -> dict[str, torch.Tensor]:
        """Teacher-forced pass; returns ``logits`` ``[B, L, V]``, ``labels`` ``[B, L]`` and ``loss`` when labelled.

        With ``packing_length`` set (and ``pack``), rows are packed: ``logits``/``labels`` are then ``[R, L, ...]``
        over packed rows and ``segments`` ``[R, L]`` names each token's source row. Pass ``pack=False`` where
        per-row outputs are needed (DPO's sequence log-probs).
        """
        if pack and self.packing_length is not None and "labels" in batch:
            rows_e, rows_l = self.splice_rows(batch)
            self._check_context(rows_e, batch, self.packing_length)
            packed = pack_rows(rows_e, rows_l, self.packing_length)
            logits = self._logits(packed)
            loss = masked_lm_loss(logits, packed.labels) + self._absent_projectors(batch)
            return {"logits": logits, "labels": packed.labels, "loss": loss, "segments": packed.segments}
        inputs = self.splice(batch)
        logits = self._logits(inputs)
        out = {"logits": logits}
        if inputs.labels is not None:
            out["labels"] = inputs.labels
            out["loss"] = masked_lm_loss(logits, inputs.labels) + self._absent_projectors(batch)
        return out

    def _logits(self, inputs: SplicedInputs | PackedInputs) -> torch.Tensor:
        if isinstance(inputs, PackedInputs):
            mask = packed_attention(self.llm.model, inputs, self.packing_attention)
        else:
            mask = inputs.attention_mask
        return self.llm(
            inputs_embeds=inputs.inputs_embeds, attention_mask=mask, position_ids=inputs.position_ids, use_cache=False
        ).logits

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 32, **generate_kwargs: Any) -> list[str]:
        """Greedy (by default) batched generation from left-padded prompts with a KV cache; returns the texts."""
        with _unsharded(self):
            return self._generate(batch, max_new_tokens, **generate_kwargs)

    def _generate(self, batch: Batch, max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
        inputs = self.splice(batch, padding_side="left")
        tokenizer = self.llm.tokenizer
        kwargs = {"do_sample": False, "num_beams": 1, **generate_kwargs}
        out = self.llm.model.generate(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **kwargs,
        )
        return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]


@contextmanager
def _unsharded(module: nn.Module) -> Iterator[None]:
    """Gather an FSDP2 root unit's parameters for work outside its ``forward`` (generation); no-op otherwise."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()
