"""The embedded toy world: procedural multimodal data and tiny models that stand in for the pretrained ones."""

from anymal_lit.toyworld.world import WorldSpec, build_world

__all__ = ["WorldSpec", "build_world"]
