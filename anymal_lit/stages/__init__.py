"""LightningModules of the training stages."""

from anymal_lit.stages.base import AlignmentStage, AnyMALStage
from anymal_lit.stages.dpo import DPOStage
from anymal_lit.stages.export import load_export, write_export
from anymal_lit.stages.optimization import OptimizerSettings, lr_multiplier
from anymal_lit.stages.sft import SFTStage

__all__ = [
    "AlignmentStage",
    "AnyMALStage",
    "DPOStage",
    "OptimizerSettings",
    "SFTStage",
    "load_export",
    "lr_multiplier",
    "write_export",
]
