"""On-policy preference pairs for the toy world: the instruction-tuned model's own hallucinations as rejected answers.

The world's built-in caption pairs reject a caption of a corrupted scene, an error the SFT model may never make, so
DPO has little to learn from them. Here the SFT model's sampled captions (``anymal-lit sample``) are labelled against
the scene: a sample naming an object the picture does not hold (:func:`~anymal_lit.toyworld.hallucination.hallucinated`)
becomes the rejected answer; the chosen one is its minimal correction (the same words, the wrong attributes made
true, as RLHF-V's corrected segments), else a sample that names every object correctly, else the world's reference
caption. Rows without a hallucinated sample keep the world's pair, and the question-answer pairs are kept as they are
(they guard the short answers while DPO works on captions).
"""

from __future__ import annotations

import json
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
    rejected = complete = None
    for text in samples:
        mentions = parse_caption(text)
        if any(hallucinated(m, scene) for m in mentions):
            rejected = rejected or text
        elif len(mentions) == len(scene.objects) and complete is None:
            complete = text
    if rejected is not None:
        fixed = corrected_caption(rejected, scene)
        if fixed is not None and not any(hallucinated(m, scene) for m in parse_caption(fixed)):
            return fixed, rejected
    return complete, rejected


def onpolicy_preferences(world: str | Path, samples: str | Path, out: str | Path) -> dict[str, float]:
    """Write ``out``: for every picture sampled, its caption pair (the on-policy one where a sample hallucinated,
    else the world's; see the module doc) and its question-answer pair. Returns ``pairs``, ``onpolicy_pairs``
    (rejected sampled), ``onpolicy_chosen`` (chosen sampled too) and ``sample_hallucination_output`` (the share of
    samples with a hallucinated object: the SFT model's CHAIR-s when sampling)."""
    world = Path(world)
    scenes = {k: Scene.from_dict(v) for k, v in json.loads((world / "image_scenes_train.json").read_text()).items()}
    sampled: dict[str, tuple[str | None, str | None]] = {}
    texts = bad = 0
    for line in Path(samples).open():
        row = json.loads(line)
        scene = scenes[row["id"].removesuffix(CAPTION_PAIR_SUFFIX)]
        sampled[row["id"]] = label_pair(row["samples"], scene)
        texts += len(row["samples"])
        bad += sum(any(hallucinated(m, scene) for m in parse_caption(t)) for t in row["samples"])
    pictures = {rid.removesuffix(CAPTION_PAIR_SUFFIX) for rid in sampled}
    pairs, onpolicy, chosen_sampled = [], 0, 0
    for line in (world / "image_preference_train.jsonl").open():
        row = json.loads(line)
        if row["id"].rsplit("-", 1)[0] not in pictures:
            continue
        chosen, rejected = sampled.get(row["id"], (None, None))
        if rejected is not None:
            row = {**row, "chosen": chosen or row["chosen"], "rejected": rejected, "source": "sft_sample"}
            onpolicy += 1
            chosen_sampled += chosen is not None
        pairs.append(row)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return {
        "pairs": len(pairs),
        "onpolicy_pairs": onpolicy,
        "onpolicy_chosen": chosen_sampled,
        "sample_hallucination_output": bad / max(1, texts),
    }
