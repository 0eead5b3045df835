"""anymal-lit: any-modality augmented language models (AnyMAL) with PyTorch Lightning."""

from anymal_lit.models import AnyMALModel, CausalLM

__all__ = ["AnyMALModel", "CausalLM"]
__version__ = "0.1.0"
