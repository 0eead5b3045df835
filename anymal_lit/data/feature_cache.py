"""Frozen-feature cache: run the frozen encoders once over a dataset's media, then train from the stored features.

Layout: ``<cache>/<modality>-<encoder key>/<content hash>.safetensors`` holding ``features`` ``[P, N, D]`` for
every piece of one media file (and the SHA-256 of those bytes in its metadata), plus
``<cache>/<modality>-<encoder key>/encoder.json`` (the fingerprint).

* The encoder key hashes the encoder's fingerprint (class, source, piece settings) *and its weights*, so another
  encoder, other weights or other loader settings never read these features: they look in another folder.
* The content hash is of the media file's bytes, so an edited file is a miss, never a stale hit. It is computed once
  per file and process (memoised by path, size, times and inode), not on every sample.
* Entries are written to a temporary file in the same folder and renamed into place, so a killed
  ``cache-features`` leaves no partial entry under an entry's name; every entry read is checked against its
  checksum, and one that fails (truncated, corrupt, written by an older version) is encoded live with a warning.
* A miss during training (a file not cached) is encoded live, or raises with ``require_hits`` — never wrong data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from anymal_lit.encoders.base import MediaError, MediaProcessor, ModalityEncoder

log = logging.getLogger(__name__)

# A file changed less than this long ago may change again within one tick of the file system's clock without its
# size or times changing: its hash is not memoised (git's "racy timestamp" rule).
RACY_SECONDS = 2.0


def encoder_key(encoder: ModalityEncoder) -> str:
    """Hash of the encoder's fingerprint and weights (16 hex digits)."""
    h = hashlib.sha256(json.dumps(encoder.fingerprint(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(path: str) -> str:
    """SHA-256 of a media file's bytes (a folder of frames: of every file in it, in name order).

    Memoised per process by the path and each file's size, modification and change times and inode, so a dataset
    read for many epochs hashes each file once; a file changed since (or changed just now) is hashed again."""
    p = Path(path)
    try:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        stats = tuple((f.name, *_stat_key(f.stat())) for f in files)
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    newest = max((max(s[2], s[3]) for s in stats), default=0)  # modified or changed
    if time.time_ns() - newest < RACY_SECONDS * 1e9:
        return hash_media(path)
    return _memoised_hash(path, stats)


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@functools.lru_cache(maxsize=1 << 18)  # ~100 MB at most; a larger dataset re-hashes what fell out
def _memoised_hash(path: str, stats: tuple) -> str:
    return hash_media(path)


def hash_media(path: str) -> str:
    """Read and hash the media bytes (uncached; :func:`content_hash` memoises it)."""
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


class BadEntry(Exception):
    """A cache entry that cannot be read or fails its checksum."""


def _digest(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def write_entry(file: Path, features: torch.Tensor) -> None:
    """Write an entry atomically: a temporary file in the same folder, renamed over ``file`` once complete.

    No fsync: a process killed mid-write leaves only the temporary file; after a power loss an entry may come back
    empty, which :func:`read_entry`'s checksum catches."""
    features = features.detach().cpu().contiguous()
    tmp = file.with_name(f".{file.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file({"features": features}, str(tmp), metadata={"sha256": _digest(features)})
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def read_entry(file: Path) -> torch.Tensor:
    """The ``features`` of an entry; raises :class:`BadEntry` when it is truncated, corrupt or has no checksum."""
    try:
        with safe_open(str(file), framework="pt") as f:
            checksum = (f.metadata() or {}).get("sha256")
            features = f.get_tensor("features")
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise BadEntry(f"unreadable ({err})") from None
    if checksum is None:
        raise BadEntry("no checksum (written by an older anymal-lit)")
    if features.ndim != 3 or _digest(features) != checksum:
        raise BadEntry("checksum mismatch")
    return features


_reported: set[str] = set()  # bad entries already warned about in this process


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
            try:
                return CachedFeatures(read_entry(file))
            except BadEntry as err:
                if self.require_hits:
                    raise MediaError(
                        f"cached features for {path} are bad: {file} is {err} (run `anymal-lit cache-features`)"
                    ) from None
                if str(file) not in _reported:
                    _reported.add(str(file))
                    log.warning("bad feature-cache entry %s (%s) for %s: encoded live", file, err, path)
        elif self.require_hits:
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
        fingerprint = folder / "encoder.json"
        tmp = folder / f".encoder.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(encoder.fingerprint(), indent=2, default=str))
        os.replace(tmp, fingerprint)
        load = encoder.media_processor()
        encoded = hits = repaired = 0
        encoder.eval()
        for path in tqdm(sorted(set(paths)), desc=f"caching {modality} features", leave=False):
            file = folder / f"{content_hash(path)}.safetensors"
            if file.is_file():
                try:
                    read_entry(file)
                    hits += 1
                    continue
                except BadEntry as err:
                    log.warning("bad feature-cache entry %s (%s) for %s: encoding it again", file, err, path)
                    repaired += 1
            pieces = load(path)
            write_entry(file, torch.cat([encoder(chunk) for chunk in pieces.split(batch_pieces)]))
            encoded += 1
        log.info(
            "%s features in %s: %d encoded (%d replacing bad entries), %d already cached",
            modality,
            folder,
            encoded,
            repaired,
            hits,
        )
        return {"encoded": encoded, "hits": hits, "repaired": repaired, "folder": str(folder)}
