"""On-policy preference pairs for the toy world: the instruction-tuned model's own hallucinations as rejected answers.

The world's built-in caption pairs reject a caption of a corrupted scene, an error the SFT model may never make, so
DPO has little to learn from them. Here the SFT model's sampled captions (``anymal-lit sample``) are labelled against
the scene: a sample naming an object the picture does not hold (:func:`~anymal_lit.toyworld.hallucination.hallucinated`)
becomes the rejected answer; the chosen one is its minimal correction (the same words, the wrong attributes made
true, as RLHF-V's corrected segments), else a sample that names every object correctly, else the world's reference
caption. Rows without a hallucinated sample keep the world's pair, and the question-answer pairs are kept as they are
(they guard the short answers while DPO works on captions).

Most of what the SFT model gets wrong about a picture of two objects is binding: the right shapes and colours, each
on the other object. :func:`binding_swap_pairs` writes that error for pictures nobody sampled: the world's caption
chosen, the same caption with the two objects' shapes or colours swapped rejected.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from anymal_lit.toyworld.hallucination import hallucinated
from anymal_lit.toyworld.shapes import Scene, corrected_caption, parse_caption

CAPTION_PAIR_SUFFIX = "-pc"
"""Id suffix of the world's caption preference pairs (``world.write_instructions``)."""


def caption_prompts(world: str | Path, out: str | Path, limit: int | None = None) -> Path:
    """The caption rows of the world's training preference pairs (the first ``limit``) as a JSONL to sample from;
    media paths stay relative to the world folder (sample with ``--media-root <world>``)."""
    rows = [json.loads(line) for line in (Path(world) / "image_preference_train.jsonl").open()]
    rows = [r for r in rows if r["id"].endswith(CAPTION_PAIR_SUFFIX)][:limit]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def label_pair(samples: list[str], scene: Scene) -> tuple[str | None, str | None]:
    """(chosen, rejected) among ``samples``: rejected is the first sample with a hallucinated object (None if none);
    chosen is its minimal correction (:func:`~anymal_lit.toyworld.shapes.corrected_caption`: the same words with the
    wrong attributes made true, RLHF-V's corrected segments), else the first sample that names exactly the scene's
    objects, all correctly (None if none)."""
    pairs = label_pairs(samples, scene)
    if pairs:
        return pairs[0]
    return None, None


def label_pairs(samples: list[str], scene: Scene) -> list[tuple[str | None, str]]:
    """:func:`label_pair` for every distinct hallucinated sample, in sample order: one (chosen, rejected) each."""
    parsed = [(text, parse_caption(text)) for text in samples]
    complete = next((text for text, mentions in parsed if _complete(mentions, scene)), None)
    pairs, seen = [], set()
    for text, mentions in parsed:
        if text in seen or not any(hallucinated(m, scene) for m in mentions):
            continue
        seen.add(text)
        fixed = corrected_caption(text, scene)
        if any(hallucinated(m, scene) for m in parse_caption(fixed)):
            fixed = complete
        pairs.append((fixed, text))
    return pairs


def _complete(mentions: list[dict[str, str | None]], scene: Scene) -> bool:
    """The caption names exactly the scene's objects, each correctly."""
    return len(mentions) == len(scene.objects) and not any(hallucinated(m, scene) for m in mentions)


def binding_swap_pairs(world: str | Path, skip: set[str], limit: int, seed: int = 0) -> list[dict]:
    """Caption pairs for up to ``limit`` two-object training pictures not in ``skip`` (picture ids), in the world's
    order: the world's caption chosen; rejected, the same caption with the objects' shapes or colours (one of the
    two that differ, drawn with ``seed``) swapped between them, so every word names something in the picture, bound
    to the wrong object. Ids ``<picture>-pb``, ``source: binding_swap``."""
    world = Path(world)
    scenes = {k: Scene.from_dict(v) for k, v in json.loads((world / "image_scenes_train.json").read_text()).items()}
    rng, pairs = random.Random(seed), []
    for line in (world / "image_preference_train.jsonl").open():
        row = json.loads(line)
        picture = row["id"].removesuffix(CAPTION_PAIR_SUFFIX)
        if len(pairs) == limit or not row["id"].endswith(CAPTION_PAIR_SUFFIX) or picture in skip:
            continue
        scene = scenes[picture]
        if len(scene.objects) != 2:
            continue
        first, second = scene.objects
        differing = [a for a in ("shape", "colour") if getattr(first, a) != getattr(second, a)]
        if not differing:
            continue
        attribute = rng.choice(differing)
        swapped = Scene((replace(first, **{attribute: getattr(second, attribute)}),
                         replace(second, **{attribute: getattr(first, attribute)})))  # fmt: skip
        rejected = corrected_caption(row["chosen"], swapped)
        if not any(hallucinated(m, scene) for m in parse_caption(rejected)):
            continue  # the caption does not name the swapped attribute
        pairs.append({**row, "id": f"{picture}-pb", "rejected": rejected, "source": "binding_swap"})
    return pairs


def omission_pair(pair: dict, scene: Scene) -> dict | None:
    """For a two-object picture whose caption pair chooses a complete, true caption: a pair with the same chosen
    caption that rejects it cut after its first object (the second deleted as
    :func:`~anymal_lit.toyworld.shapes.corrected_caption` deletes an invented one). The counterweight to pairs that
    reject an invented object: on those alone DPO learned to stop early, and dropped the second object of 51 of 112
    two-object validation pictures (seed 0, toy world v13). None for other pictures."""
    chosen = pair["chosen"]
    if len(scene.objects) != 2 or not _complete(parse_caption(chosen), scene):
        return None
    rejected = corrected_caption(chosen, Scene(scene.objects[:1]))
    return {**pair, "id": pair["id"].removesuffix(CAPTION_PAIR_SUFFIX) + "-po", "rejected": rejected,
            "source": "omission"}  # fmt: skip


def onpolicy_preferences(
    world: str | Path,
    samples: str | Path,
    out: str | Path,
    pairs_per_picture: int = 1,
    binding_swaps: int = 0,
    omissions: bool = False,
) -> dict[str, float]:
    """Write ``out``: for every picture sampled, its caption pair (the on-policy one where a sample hallucinated,
    else the world's; see the module doc) and its question-answer pair; with ``pairs_per_picture`` > 1, up to that
    many on-policy caption pairs per picture (one per distinct hallucinated sample, ids ``<id>-<k>`` after the
    first); with ``binding_swaps``, that many :func:`binding_swap_pairs` of pictures not sampled after them; with
    ``omissions``, every two-object picture also gets a pair rejecting its chosen caption cut after the first object
    (id ``<id>-po``, :func:`omission_pair`). Returns ``pairs``, ``onpolicy_pairs`` (rejected sampled),
    ``onpolicy_chosen`` (chosen sampled too), ``binding_swap_pairs``, ``omission_pairs`` and
    ``sample_hallucination_output`` (the share of samples with a hallucinated object: the SFT model's CHAIR-s when
    sampling)."""
    if pairs_per_picture < 1:
        raise ValueError(f"pairs_per_picture must be >= 1, got {pairs_per_picture}")
    world = Path(world)
    scenes = {k: Scene.from_dict(v) for k, v in json.loads((world / "image_scenes_train.json").read_text()).items()}
    sampled: dict[str, list[tuple[str | None, str]]] = {}
    texts = bad = 0
    for line in Path(samples).open():
        row = json.loads(line)
        scene = scenes[row["id"].removesuffix(CAPTION_PAIR_SUFFIX)]
        sampled[row["id"]] = label_pairs(row["samples"], scene)[:pairs_per_picture]
        texts += len(row["samples"])
        bad += sum(any(hallucinated(m, scene) for m in parse_caption(t)) for t in row["samples"])
    pictures = {rid.removesuffix(CAPTION_PAIR_SUFFIX) for rid in sampled}
    pairs, onpolicy, chosen_sampled, omitted = [], 0, 0, 0
    for line in (world / "image_preference_train.jsonl").open():
        row = json.loads(line)
        if row["id"].rsplit("-", 1)[0] not in pictures:
            continue
        labelled = sampled.get(row["id"], [])
        for k, (chosen, rejected) in enumerate(labelled):
            rid = row["id"] if k == 0 else f"{row['id']}-{k + 1}"
            pairs.append({**row, "id": rid, "chosen": chosen or row["chosen"], "rejected": rejected,
                          "source": "sft_sample"})  # fmt: skip
            chosen_sampled += chosen is not None
        onpolicy += len(labelled)
        if not labelled:
            pairs.append(row)
        if omissions and row["id"] in sampled:
            scene = scenes[row["id"].removesuffix(CAPTION_PAIR_SUFFIX)]
            omission = omission_pair(pairs[-1], scene)
            if omission is not None:
                pairs.append(omission)
                omitted += 1
    swaps = binding_swap_pairs(world, pictures, binding_swaps) if binding_swaps else []
    pairs += swaps
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return {
        "pairs": len(pairs),
        "onpolicy_pairs": onpolicy,
        "onpolicy_chosen": chosen_sampled,
        "binding_swap_pairs": len(swaps),
        "omission_pairs": omitted,
        "sample_hallucination_output": bad / max(1, texts),
    }
