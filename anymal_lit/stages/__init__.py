"""LightningModules of the training stages."""

from anymal_lit.stages.base import AlignmentStage, AnyMALStage, warmup_cosine
from anymal_lit.stages.export import load_export, write_export

__all__ = ["AlignmentStage", "AnyMALStage", "load_export", "warmup_cosine", "write_export"]
