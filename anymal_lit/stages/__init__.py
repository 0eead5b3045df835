"""LightningModules of the training stages."""

from anymal_lit.stages.base import AlignmentStage, AnyMALStage, warmup_cosine
from anymal_lit.stages.dpo import DPOStage
from anymal_lit.stages.export import load_export, write_export
from anymal_lit.stages.sft import SFTStage

__all__ = ["AlignmentStage", "AnyMALStage", "DPOStage", "SFTStage", "load_export", "warmup_cosine", "write_export"]
