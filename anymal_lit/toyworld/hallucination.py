"""Object hallucination in generated captions of the toy world's pictures, measured exactly (CHAIR-style).

The world knows every object in every picture, and :func:`~anymal_lit.toyworld.shapes.parse_caption` reads each
object a caption mentions back with the attributes it names. A mention is hallucinated when no object in the scene has
its shape and every attribute it names (colour, size, position): "a red circle" about a blue circle and a red square
is one, since that red circle is not there (attributes bound to the wrong object count, as in RLHF-V / POVID).
"""

from __future__ import annotations

from anymal_lit.toyworld.shapes import Scene, ShapeObject, parse_caption

ATTRIBUTES = ("shape", "colour", "size", "position")


def hallucinated(mention: dict[str, str | None], scene: Scene) -> bool:
    """Whether no object of ``scene`` matches every attribute ``mention`` names."""

    def matches(obj: ShapeObject) -> bool:
        return all(mention[a] is None or mention[a] == getattr(obj, a) for a in ATTRIBUTES)

    return not any(matches(obj) for obj in scene.objects)


def hallucination_rates(predictions: dict[str, str], scenes: dict[str, Scene]) -> dict[str, float]:
    """``hallucination_object``: the share of object mentions not in their scene (CHAIR-i); ``hallucination_output``:
    the share of captions with at least one (CHAIR-s), over every scene (a missing prediction mentions nothing);
    ``omission_output``: the share of captions that mention fewer objects than their scene holds (a caption that
    stops early hallucinates less, so read the two together)."""
    mentions = bad_mentions = bad_outputs = short = 0
    for rid, scene in scenes.items():
        flags = [hallucinated(m, scene) for m in parse_caption(predictions.get(rid, ""))]
        mentions += len(flags)
        bad_mentions += sum(flags)
        bad_outputs += any(flags)
        short += len(flags) < len(scene.objects)
    return {
        "hallucination_object": bad_mentions / max(1, mentions),
        "hallucination_output": bad_outputs / max(1, len(scenes)),
        "omission_output": short / max(1, len(scenes)),
    }
