"""Pure-torch models: the LLM wrapper and the AnyMAL composition."""

from anymal_lit.models.anymal import AnyMALModel, ContextLengthError, SplicedInputs
from anymal_lit.models.batch import Batch, MediaGroup
from anymal_lit.models.causal_lm import DEFAULT_CHAT_TEMPLATE, CausalLM

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "AnyMALModel",
    "Batch",
    "CausalLM",
    "ContextLengthError",
    "MediaGroup",
    "SplicedInputs",
]
