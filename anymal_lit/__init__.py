"""anymal-lit: any-modality augmented language models (AnyMAL) with PyTorch Lightning."""

from typing import Any

__all__ = ["AnyMALModel", "CausalLM", "chat", "load_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # imported on first use: `anymal-lit --help` and the kit's commands start without torch or Lightning
    if name in ("AnyMALModel", "CausalLM"):
        from anymal_lit import models

        return getattr(models, name)
    if name in ("load_model", "chat"):
        from anymal_lit import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'anymal_lit' has no attribute {name!r}")
