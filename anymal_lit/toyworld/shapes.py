"""The image part of the toy world: scenes of one or two coloured shapes, their pictures and true texts.

Every text is generated from the scene, so captions, questions and answers are true of the picture by
construction, and a generated caption can be parsed back to score each attribute (count, colour, shape, size,
position) on its own: CIDEr alone is easy to misread on templated captions (a constant caption scores CIDEr ~1 on them).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.13, "large": 0.22}  # radius as a fraction of the canvas side
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5)}
POSITION_WORDS = {
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the middle", "in the centre", "at the center"),
}
PAIRS = (("left", "right"), ("top", "bottom"))
CAPTION_TEMPLATES = ("{objs}", "there is {objs}", "a picture of {objs}", "an image showing {objs}", "this shows {objs}")
CAPTION_PROMPTS = ("A short image caption:", "Describe the image briefly.", "Write a short caption for this picture.")
COUNT_WORDS = {1: "one", 2: "two"}


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]

    def to_dict(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_dict(data: dict) -> Scene:
        return Scene(tuple(ShapeObject(**o) for o in data["objects"]))


def sample_scene(rng: np.random.Generator) -> Scene:
    """One or two objects; two objects differ in colour and sit at opposite sides (left/right or top/bottom)."""
    if rng.random() < 0.5:
        positions: tuple[str, ...] = (str(rng.choice(list(POSITIONS))),)
    else:
        positions = PAIRS[int(rng.integers(len(PAIRS)))]
    colours = rng.choice(list(COLOURS), size=len(positions), replace=False)
    objects = tuple(
        ShapeObject(str(rng.choice(SHAPES)), str(colour), str(rng.choice(list(SIZES))), pos)
        for colour, pos in zip(colours, positions)
    )
    return Scene(objects)


def render(scene: Scene, rng: np.random.Generator, side: int = 64) -> Image.Image:
    """Draw the scene on a dark, slightly tinted background with a little position jitter."""
    background = tuple(int(v) for v in rng.integers(20, 60, size=3))
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        fx, fy = POSITIONS[obj.position]
        cx, cy = (fx + rng.uniform(-0.04, 0.04)) * side, (fy + rng.uniform(-0.04, 0.04)) * side
        draw_shape(draw, obj.shape, cx, cy, SIZES[obj.size] * side, COLOURS[obj.colour])
    return img


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    """One filled shape of radius ``r`` centred at ``(cx, cy)``."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    else:  # cross
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)


def object_phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    size = rng.choice(SIZE_WORDS[obj.size])
    return f"a {size} {obj.colour} {obj.shape} {rng.choice(POSITION_WORDS[obj.position])}"


def caption(scene: Scene, rng: np.random.Generator, template: int | None = None) -> str:
    """A true caption; objects in canonical order (left before right, top before bottom)."""
    objs = " and ".join(object_phrase(o, rng) for o in scene.objects)
    index = int(rng.integers(len(CAPTION_TEMPLATES))) if template is None else template
    return CAPTION_TEMPLATES[index].format(objs=objs)


def phantom_object(scene: Scene, rng: np.random.Generator) -> ShapeObject:
    """An object the scene does not hold, as a careless annotator might add one: a colour no object of the scene has,
    at a position none has (the opposite side of a one-object scene's object; any side of a centred one)."""
    taken = {o.position for o in scene.objects}
    opposite = [b if a in taken else a for a, b in PAIRS if a in taken or b in taken]
    sides = opposite or [p for pair in PAIRS for p in pair]
    colours = [c for c in COLOURS if c not in {o.colour for o in scene.objects}]
    return ShapeObject(str(rng.choice(SHAPES)), str(rng.choice(colours)), str(rng.choice(list(SIZES))),
                       str(rng.choice(sides)))  # fmt: skip


def references(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five paraphrased reference captions, one per template."""
    return [caption(scene, rng, t) for t in range(len(CAPTION_TEMPLATES))]


def questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(question, short answer) pairs true of the scene; objects are named by colour (unique in a scene)."""
    qa = [("How many shapes are there?", COUNT_WORDS[len(scene.objects)])]
    for obj in scene.objects:
        qa += [
            (f"What shape is the {obj.colour} object?", obj.shape),
            (f"What colour is the {obj.shape}?", obj.colour) if _unique_shape(scene, obj) else None,
            (f"Is the {obj.colour} {obj.shape} small or large?", obj.size),
            (f"Where is the {obj.colour} {obj.shape}?", obj.position),
        ]
    qa = [q for q in qa if q is not None]
    rng.shuffle(qa)
    return qa


def _unique_shape(scene: Scene, obj: ShapeObject) -> bool:
    return sum(o.shape == obj.shape for o in scene.objects) == 1


_WORD_TO_SIZE = {w: size for size, words in SIZE_WORDS.items() for w in words}
_PHRASE_TO_POS = {p: pos for pos, phrases in POSITION_WORDS.items() for p in phrases}
_MENTION = re.compile(
    r"\b(?P<size>" + "|".join(_WORD_TO_SIZE) + r")?\s*(?P<colour>" + "|".join(COLOURS) + r")?\s*"
    r"(?P<shape>" + "|".join(SHAPES) + r")s?\b\s*(?P<pos>" + "|".join(map(re.escape, _PHRASE_TO_POS)) + r")?"
)


def parse_caption(text: str) -> list[dict[str, str | None]]:
    """Object mentions in a caption, in order: ``[{"shape", "colour", "size", "position"}]`` (None if absent)."""
    mentions = []
    for m in _MENTION.finditer(text.lower()):
        mentions.append(
            {
                "shape": m["shape"],
                "colour": m["colour"],
                "size": _WORD_TO_SIZE.get(m["size"]) if m["size"] else None,
                "position": _PHRASE_TO_POS.get(m["pos"]) if m["pos"] else None,
            }
        )
    return mentions


def attribute_accuracy(predictions: dict[str, str], scenes: dict[str, Scene]) -> dict[str, float]:
    """Per-attribute accuracy of generated captions: ``count`` per image; ``colour``/``shape``/``size``/``position``
    per true object, matching the i-th mention to the i-th object (captions list objects in canonical order)."""
    hits = {"count": 0, "colour": 0, "shape": 0, "size": 0, "position": 0}
    n_images = n_objects = 0
    for rid, scene in scenes.items():
        mentions = parse_caption(predictions.get(rid, ""))
        n_images += 1
        hits["count"] += len(mentions) == len(scene.objects)
        for i, obj in enumerate(scene.objects):
            n_objects += 1
            if i < len(mentions):
                for attr in ("colour", "shape", "size", "position"):
                    hits[attr] += mentions[i][attr] == getattr(obj, attr)
    return {f"{attr}_accuracy": hits[attr] / max(1, n_images if attr == "count" else n_objects) for attr in hits}


def corrupt(scene: Scene, rng: np.random.Generator) -> Scene:
    """A scene that differs from ``scene`` in one way: a wrong attribute, a hallucinated object or a wrong count."""
    objects = list(scene.objects)
    kind = rng.choice(["colour", "shape", "size", "hallucinate" if len(objects) == 1 else "drop"])
    if kind == "hallucinate":
        pos = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "center": "left"}[
            objects[0].position
        ]
        colour = str(rng.choice([c for c in COLOURS if c != objects[0].colour]))
        extra = ShapeObject(str(rng.choice(SHAPES)), colour, str(rng.choice(list(SIZES))), pos)
        objects = sorted([*objects, extra], key=lambda o: list(POSITIONS).index(o.position))
        return Scene(tuple(objects))
    if kind == "drop":
        return Scene((objects[int(rng.integers(len(objects)))],))
    i = int(rng.integers(len(objects)))
    obj = objects[i]
    choices = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[kind]
    value = str(rng.choice([v for v in choices if v != getattr(obj, kind)]))
    objects[i] = ShapeObject(**{**asdict(obj), kind: value})
    return Scene(tuple(objects))


def wrong_answer(answer: str, rng: np.random.Generator) -> str:
    """A plausible but wrong short answer of the same kind."""
    for pool in (list(COLOURS), list(SHAPES), list(SIZES), list(POSITIONS), list(COUNT_WORDS.values())):
        if answer in pool:
            return str(rng.choice([v for v in pool if v != answer]))
    raise ValueError(f"unknown answer kind: {answer!r}")


def corrected_caption(text: str, scene: Scene) -> str:
    """``text`` with every object mention rewritten to say what the scene's object in its place is (the i-th mention
    names the i-th object, the order captions list them in), keeping which attributes it names and all other words:
    the minimal correction of a caption (RLHF-V's corrected segments). Mentions beyond the picture's objects are
    invented: they are deleted with the words joining them on (" and a small red cross on the left")."""
    text = text.lower()
    matches = list(_MENTION.finditer(text))
    invented = matches[len(scene.objects) :]
    matches = matches[: len(scene.objects)]
    pieces, last = [], 0
    for match, obj in zip(matches, scene.objects):
        size, pos = match["size"], match["pos"]
        words = [
            (size if _WORD_TO_SIZE[size] == obj.size else SIZE_WORDS[obj.size][0]) if size else None,
            obj.colour if match["colour"] else None,
            obj.shape,
            (pos if _PHRASE_TO_POS[pos] == obj.position else POSITION_WORDS[obj.position][0]) if pos else None,
        ]
        start = match.start("size" if size else "colour" if match["colour"] else "shape")
        end = match.end("pos") if pos else match.end("shape")
        pieces += [text[last:start], " ".join(w for w in words if w)]
        last = end
    if invented:
        last = invented[-1].end("pos") if invented[-1]["pos"] else invented[-1].end("shape")
    return "".join(pieces) + text[last:]
