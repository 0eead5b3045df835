"""Frozen-feature cache: run the frozen encoders once over a dataset's media, then train from the stored features.

Layout: ``<cache>/<modality>-<encoder key>/<content hash>.safetensors`` holding ``features`` ``[P, N, D]`` for
every piece of one media file, plus ``<cache>/<modality>-<encoder key>/encoder.json`` (the fingerprint).

* The encoder key hashes the encoder's fingerprint (class, source, piece settings) *and its weights*, so another
  encoder, other weights or other loader settings never read these features: they look in another folder.
* The content hash is of the media file's bytes, so an edited file is a miss, never a stale hit.
* A miss during training (a file not cached) is encoded live, or raises with ``require_hits`` — never wrong data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from anymal_lit.encoders.base import MediaError, MediaProcessor, ModalityEncoder

log = logging.getLogger(__name__)


def encoder_key(encoder: ModalityEncoder) -> str:
    """Hash of the encoder's fingerprint and weights (16 hex digits)."""
    h = hashlib.sha256(json.dumps(encoder.fingerprint(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(path: str) -> str:
    """SHA-256 of a media file's bytes (a folder of frames: of every file in it, in name order)."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    try:
        for f in files:
            h.update(f.name.encode() if p.is_dir() else b"")
            h.update(f.read_bytes())
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    return h.hexdigest()


@dataclass(frozen=True)
class CachedFeatures:
    """A media item already encoded: ``features`` ``[P, N, D]`` (the model skips the encoder for it)."""

    features: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.features.shape


@dataclass(frozen=True)
class CachedProcessor:
    """Loader that returns cached features for cached files and the live loader's pieces otherwise."""

    live: MediaProcessor
    folder: str
    require_hits: bool = False

    def __call__(self, path: str) -> torch.Tensor | CachedFeatures:
        file = Path(self.folder) / f"{content_hash(path)}.safetensors"
        if file.is_file():
            return CachedFeatures(load_file(str(file))["features"])
        if self.require_hits:
            raise MediaError(f"no cached features for {path} in {self.folder} (run `anymal-lit cache-features`)")
        return self.live(path)


class FeatureCache:
    """Where the features of each (modality, encoder) pair live under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, modality: str, encoder: ModalityEncoder) -> Path:
        return self.root / f"{modality}-{encoder_key(encoder)}"

    def processor(self, modality: str, encoder: ModalityEncoder, require_hits: bool = False) -> CachedProcessor:
        folder = self.folder(modality, encoder)
        if not folder.is_dir():
            log.warning("no feature cache for %s at %s: every %s file is encoded live", modality, folder, modality)
        return CachedProcessor(encoder.media_processor(), str(folder), require_hits)

    @torch.no_grad()
    def fill(self, modality: str, encoder: ModalityEncoder, paths: list[str], batch_pieces: int = 64) -> dict[str, Any]:
        """Encode every not-yet-cached file of ``paths``; returns counts of ``encoded`` and ``hits``."""
        from tqdm import tqdm

        folder = self.folder(modality, encoder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "encoder.json").write_text(json.dumps(encoder.fingerprint(), indent=2, default=str))
        load = encoder.media_processor()
        encoded = hits = 0
        encoder.eval()
        for path in tqdm(sorted(set(paths)), desc=f"caching {modality} features", leave=False):
            file = folder / f"{content_hash(path)}.safetensors"
            if file.is_file():
                hits += 1
                continue
            pieces = load(path)
            features = torch.cat([encoder(chunk) for chunk in pieces.split(batch_pieces)])
            save_file({"features": features.contiguous()}, str(file))
            encoded += 1
        log.info("%s features in %s: %d encoded, %d already cached", modality, folder, encoded, hits)
        return {"encoded": encoded, "hits": hits, "folder": str(folder)}
