"""Trainable projectors into the LLM's token space. A new projector is one subclass of :class:`Projector`."""

from anymal_lit.projectors.base import Projector
from anymal_lit.projectors.linear import LinearProjector, MLPProjector
from anymal_lit.projectors.perceiver_resampler import PerceiverResampler

__all__ = ["LinearProjector", "MLPProjector", "PerceiverResampler", "Projector"]
