"""Write the toy world to disk: real PNG + JSONL files, COCO-format references and the tiny pretrained models."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anymal_lit.data import benchmarks
from anymal_lit.encoders.image import ImageProcessor
from anymal_lit.metrics.choice import circular_variants
from anymal_lit.toyworld import benchmark_files, media_world, shapes, signals
from anymal_lit.toyworld.tiny_models import (
    clip_tokenizer,
    pretrain_lm,
    save_open_clip,
    tiny_clip_config,
    train_tokenizer,
    warm_up_clip,
)

log = logging.getLogger(__name__)

SHIPPED_LM = Path(__file__).parent / "assets" / "tiny-lm"
"""The tiny LM the kit ships (HF format + ``recipe.json``). Trained by the recipe :func:`build_tiny_lm` runs
(``anymal-lit tiny-lm``), but not by that command: its pretraining and first chat round ran on a GPU, its other two
rounds through the kit's code with other draws (``recipe.json``, ``trained_on``), so a rebuild gives other weights."""
SHIPPED_CLIP = Path(__file__).parent / "assets" / "tiny-clip"
"""The tiny CLIP the kit ships (open_clip ``local-dir`` folder + ``recipe.json``): what :func:`build_tiny_clip` trains
on the default world (``WorldSpec(tiny_clip="train")``, ``anymal-lit toyworld --train-clip``), written by that code on
2 CPU cores (~11 minutes), time the demo does not spend."""
CLIP_RECIPE_FIELDS = ("seed", "image_train", "image_size", "clip_steps")
"""The :class:`WorldSpec` fields the tiny CLIP's training depends on (with :data:`WORLD_VERSION`'s pictures)."""

WORLD_VERSION = 14
CLIP_MEAN = (0.5, 0.5, 0.5)
CLIP_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class WorldSpec:
    """What to generate. Training effort is counted in steps, not seconds, so builds repeat under load.

    Args:
        seed: Seed of every random choice (scenes, rendering, texts, model init and training order).
        image_train: Training pictures.
        image_val: Validation pictures (5 reference captions each).
        image_size: Picture side in pixels (= the tiny CLIP's resolution).
        tiny_clip: ``"shipped"`` copies the kit's tiny CLIP (:data:`SHIPPED_CLIP`, trained by :func:`build_tiny_clip`
            on the default world's pictures); ``"train"`` trains one in place with ``clip_steps`` (~11 CPU minutes).
            A world whose pictures differ from those the shipped one saw (another seed, size or count) still gets the
            shipped one, as a real pretrained encoder never saw the user's pictures; ``world.json`` says which.
        tiny_lm: ``"shipped"`` copies the kit's tiny LM (:data:`SHIPPED_LM`, trained by the recipe of the ``lm_*``
            defaults below); ``"train"`` trains one in place with the ``lm_*`` fields (the defaults: ~16 CPU minutes,
            as ``anymal-lit tiny-lm``).
        lm_corpus: Conversations in the tiny LM's pretraining corpus.
        lm_steps: Pretraining steps of the tiny LM (its loss plateaus by ~400 steps; chat tuning follows).
        lm_chat: Conversations in the tiny LM's chat tuning (answers scored).
        lm_chat_steps: Chat-tuning steps per round, a quarter of each batch replaying the pretraining corpus
            (lettered answers about a description reach 1.0 after ~1000 of 2000 steps; 1000 steps without replay
            reached 0.34 on colour questions).
        lm_chat_rounds: Chat-tuning rounds, each a fresh draw of ``lm_chat`` conversations with its own warm-up and
            cosine. One round (the recipe before) left the LM answering "Where is the red cross?" about two-object
            descriptions at 0.53; two more took that to 1.0, sizes 0.76 -> 1.0, and MMBench circular after the
            demo's SFT from ~0.55 to 0.69-0.77 (see CHANGELOG.md).
        lm_chat_final_short: Share of short-answer questions in the last round (the others: 0.3, with 0.3 pure letter
            look-ups, which the LM has learned by then; the last round gives their share to short answers).
        clip_steps: Contrastive warm-up steps of the tiny CLIP (300 -> 900 steps took aligned caption CIDEr from 3.0
            to 4.4 and shape accuracy from 0.32 to 0.68: an encoder that knows the world is what alignment needs;
            700 -> 1000 took the demo's image caption CIDEr from 4.54 to 5.08 with the shipped LM). Used with
            ``tiny_clip="train"``; the shipped CLIP was trained with this default (its ``recipe.json``): shipped, its
            training no longer counts against the demo's time, so it trains 3x longer than the world build could.
        audio_train / audio_val: Sounds (1 s each; 5 reference captions per val sound).
        imu_train / imu_val: IMU traces (2-4 s).
        video_train / video_val: Videos of a moving shape (8 frames, 2 s).
        sft_padded_captions: Share of the instruction data's captions of one-object pictures that go on to name a
            second object the picture does not hold, as careless annotators (or the LLM writing LLaVA-style
            instruction data) pad a description; the alignment captions stay true. The SFT model learns the habit
            and DPO has it to unlearn: without it the SFT model's hallucinations were all misperceived shapes that
            it believed (the correct caption less likely than its own on 99 of 99 hallucinated validation
            captions, by 1.2 nats median), which no preference tuning of the LLM's adapter cut (CHANGELOG.md).
        clap_steps: Contrastive warm-up steps of the tiny CLAP audio tower.
        imu_steps: Contrastive warm-up steps of the tiny IMU encoder.
    """

    seed: int = 0
    image_train: int = 4000
    image_val: int = 200
    image_size: int = 64
    tiny_clip: str = "shipped"
    tiny_lm: str = "shipped"
    lm_corpus: int = 20000
    lm_steps: int = 800
    lm_chat: int = 20000
    lm_chat_steps: int = 2000
    lm_chat_rounds: int = 3
    lm_chat_final_short: float = 0.5
    clip_steps: int = 3000
    sft_padded_captions: float = 0.7
    audio_train: int = 2000
    audio_val: int = 100
    imu_train: int = 2000
    imu_val: int = 100
    video_train: int = 1000
    video_val: int = 100
    clap_steps: int = 200
    imu_steps: int = 300


def lm_conversations(rng: np.random.Generator, n: int) -> list[list[dict[str, str]]]:
    """The tiny LM's corpus: descriptions in context followed by a caption, a question and its answer, or a lettered
    multiple-choice question and its letter.

    Restating and querying what the context says teaches the frozen LM to use its context, the ability that
    projected media tokens exploit after alignment. A fifth of the corpus is about sounds, motions and videos (restated
    as captions of that modality; with half the corpus on them, image QA after SFT fell to the blind baseline), the rest
    about pictures: captions, short-answer questions (half with VQAv2's answer instruction) and MMBench-style lettered
    questions (half answered from the description, half pure look-ups: "Which option is square?"), so the tokenizer
    learns the benchmarks' instructions as words (MMBench's was ~40 byte-level tokens, now 12). Pretraining does not
    teach the letter look-up itself; :func:`lm_chat_conversations` does.
    """
    others = (
        (signals.sample_sound, signals.sound_caption, signals.AUDIO_PROMPTS),
        (signals.sample_motion, signals.imu_caption, signals.IMU_PROMPTS),
        (signals.sample_movie, signals.video_caption, signals.VIDEO_PROMPTS),
    )
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.2:
            sample, describe, prompts = others[int(rng.integers(len(others)))]
            thing = sample(rng)
            prompt, desc, answer = str(rng.choice(prompts)), describe(thing, rng), describe(thing, rng)
            content = f"{desc}\n{prompt}"
        else:
            content, answer = _about_a_picture(rng, kind, captions_below=0.45, answers_below=0.7, look_ups_below=0.85)
        out.append([{"role": "user", "content": content}, {"role": "assistant", "content": answer}])
    return out


CHAT_SHORT_ANSWERS = 0.3
"""Share of short-answer questions in a chat-tuning round (:func:`lm_chat_conversations`), but the last."""


def lm_chat_conversations(
    rng: np.random.Generator, n: int, short_answers: float = CHAT_SHORT_ANSWERS
) -> list[list[dict[str, str]]]:
    """The tiny LM's chat tuning (answers scored, like a chat LLM's instruction tuning) about descriptions in context:
    ``short_answers`` short-answer questions (half with VQAv2's answer instruction), ``0.6 - short_answers`` pure
    letter look-ups, 3/10 lettered questions about a description, 1/10 the pretraining mix.

    Pretraining alone never taught the look-up (1200 steps with 15 % pure look-ups, every token or answers scored:
    letter accuracy 0.25-0.28, chance); this mix teaches it in ~500 steps (pure look-ups 1.0 after 1000).
    """
    if not 0 <= short_answers <= 0.6:
        raise ValueError(f"short_answers must be in [0, 0.6] (the rest of 0.6: letter look-ups), got {short_answers}")
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.1:
            out += lm_conversations(rng, 1)
            continue
        content, answer = _about_a_picture(
            rng, kind, captions_below=0.0, answers_below=0.1 + short_answers, look_ups_below=0.7
        )
        out.append([{"role": "user", "content": content}, {"role": "assistant", "content": answer}])
    return out


def _about_a_picture(
    rng: np.random.Generator, kind: float, captions_below: float, answers_below: float, look_ups_below: float
) -> tuple[str, str]:
    """A scene's description and, by ``kind`` (uniform in [0, 1)), a caption request, a short-answer question (half
    with VQAv2's answer instruction), a pure letter look-up ("Which option is square?", no description) or an
    MMBench-style lettered question; returns (user turn, answer)."""
    scene = shapes.sample_scene(rng)
    desc = shapes.caption(scene, rng)
    if kind < captions_below:
        prompt = str(rng.choice(shapes.CAPTION_PROMPTS))
        return f"{desc}\n{prompt}", shapes.caption(scene, rng)
    if kind < answers_below:
        question, answer = shapes.questions(scene, rng)[0]
        return f"{desc}\n{question}" + (f"\n{benchmarks.VQA_PROMPT}" if rng.random() < 0.5 else ""), answer
    item = multiple_choice_item(scene, rng)
    if kind < look_ups_below:
        question = f"Which option is {item['options'][item['answer']]}?"
        return benchmarks.multiple_choice_prompt(question, item["options"]), item["answer"]
    return f"{desc}\n{benchmarks.multiple_choice_prompt(item['question'], item['options'])}", item["answer"]


def build_tiny_lm(out: str | Path, spec: WorldSpec = WorldSpec()) -> dict:
    """The tiny LM and its tokenizer in HF format under ``out``: copied from :data:`SHIPPED_LM` when
    ``spec.tiny_lm == "shipped"``, else trained here (tokenizer on the pretraining corpus, ``spec.lm_steps`` of
    pretraining, then ``spec.lm_chat_rounds`` rounds of ``spec.lm_chat_steps`` chat-tuning steps) and described in
    ``out/recipe.json``. Returns the recipe."""
    out = Path(out)
    if spec.tiny_lm == "shipped":
        shutil.copytree(SHIPPED_LM, out, dirs_exist_ok=True)
        return json.loads((out / "recipe.json").read_text())
    if spec.tiny_lm != "train":
        raise ValueError(f"WorldSpec.tiny_lm must be 'shipped' or 'train', got {spec.tiny_lm!r}")
    start = time.time()
    corpus = lm_conversations(np.random.default_rng(spec.seed + 1), spec.lm_corpus)
    prompts = shapes.CAPTION_PROMPTS + signals.AUDIO_PROMPTS + signals.IMU_PROMPTS + signals.VIDEO_PROMPTS
    tokenizer = train_tokenizer([m["content"] for conv in corpus for m in conv] + list(prompts))
    lm, lm_losses = pretrain_lm(tokenizer, corpus, spec.lm_steps, seed=spec.seed)
    chat_losses: list[float] = []
    for round_ in range(spec.lm_chat_rounds):
        short = spec.lm_chat_final_short if round_ == spec.lm_chat_rounds - 1 else CHAT_SHORT_ANSWERS
        log.info("tiny LM chat tuning, round %d/%d (short answers %.2f)", round_ + 1, spec.lm_chat_rounds, short)
        chat = lm_chat_conversations(np.random.default_rng(spec.seed + 3 + 100 * round_), spec.lm_chat, short)
        lm, losses = pretrain_lm(
            tokenizer,
            chat,
            spec.lm_chat_steps,
            lr=1e-3,
            seed=spec.seed + round_,
            answer_loss_only=True,
            model=lm,
            warmup_steps=30,
            replay=corpus,
        )
        chat_losses += losses
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    recipe = {
        "spec": {k: v for k, v in asdict(spec).items() if k == "seed" or k.startswith("lm_")},
        "seconds": time.time() - start,
        "lm_loss": {"first": lm_losses[0], "last": float(np.mean(lm_losses[-50:]))},
        "lm_chat_loss": {"first": chat_losses[0], "last": float(np.mean(chat_losses[-50:]))},
        "probe": probe_tiny_lm(lm, tokenizer),
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    return recipe


def build_tiny_clip(out: str | Path, root: str | Path, train_rows: list[dict], spec: WorldSpec = WorldSpec()) -> dict:
    """The tiny CLIP as an open_clip ``local-dir`` folder under ``out``: copied from :data:`SHIPPED_CLIP` when
    ``spec.tiny_clip == "shipped"``, else trained here for ``spec.clip_steps`` on the world's training pictures
    (``train_rows``, under ``root``) and their captions, its text tower over the world's tokenizer (the tiny LM's, in
    ``root/models/tiny-lm``). Returns the recipe (``out/recipe.json``)."""
    out = Path(out)
    if spec.tiny_clip == "shipped":
        recipe = json.loads((SHIPPED_CLIP / "recipe.json").read_text())
        if recipe["spec"]["image_size"] != spec.image_size:
            raise ValueError(
                f"the shipped tiny CLIP reads {recipe['spec']['image_size']}-px pictures, this world's are "
                f"{spec.image_size} px: use WorldSpec(tiny_clip='train')"
            )
        shutil.copytree(SHIPPED_CLIP, out, dirs_exist_ok=True)
        same = all(recipe["spec"][k] == v for k, v in asdict(spec).items() if k in CLIP_RECIPE_FIELDS)
        return {**recipe, "trained_on_these_pictures": same and recipe.get("world_version") == WORLD_VERSION}
    if spec.tiny_clip != "train":
        raise ValueError(f"WorldSpec.tiny_clip must be 'shipped' or 'train', got {spec.tiny_clip!r}")
    from transformers import AutoTokenizer

    start = time.time()
    tokenizer = clip_tokenizer(AutoTokenizer.from_pretrained(Path(root) / "models" / "tiny-lm"))
    cfg = tiny_clip_config(tokenizer, spec.image_size)
    processor = ImageProcessor(spec.image_size, CLIP_MEAN, CLIP_STD)
    images = torch.cat([processor(str(Path(root) / r["image"])) for r in train_rows])
    captions = [r["conversations"][-1]["value"] for r in train_rows]
    clip, losses = warm_up_clip(cfg, images, captions, tokenizer, spec.clip_steps, seed=spec.seed)
    save_open_clip(clip, cfg, out, CLIP_MEAN, CLIP_STD, tokenizer)
    recipe = {
        "spec": {k: v for k, v in asdict(spec).items() if k in CLIP_RECIPE_FIELDS},
        "world_version": WORLD_VERSION,
        "seconds": time.time() - start,
        "clip_loss": {"first": losses[0], "last": float(np.mean(losses[-50:]))},
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    return recipe


@torch.no_grad()
def probe_tiny_lm(model: torch.nn.Module, tokenizer, count: int = 200, seed: int = 999) -> dict[str, float]:
    """Greedy answers of a tiny LM about ``count`` held-out descriptions in plain text: exact-match accuracy of the
    lettered (MMBench-style) question and of the short answers, on one-object and two-object scenes
    (``lettered/one_object``, ``short/two_objects``, ...)."""
    rng = np.random.default_rng(seed)
    prompts, kinds, answers = [], [], []
    for _ in range(count):
        scene = shapes.sample_scene(rng)
        desc, objects = shapes.caption(scene, rng), "one_object" if len(scene.objects) == 1 else "two_objects"
        item = multiple_choice_item(scene, rng)
        asked = [(benchmarks.multiple_choice_prompt(item["question"], item["options"]), item["answer"], "lettered")]
        asked += [(f"{q}\n{benchmarks.VQA_PROMPT}", a, "short") for q, a in shapes.questions(scene, rng)]
        for question, answer, kind in asked:
            prompts.append([{"role": "user", "content": f"{desc}\n{question}"}])
            kinds.append(f"{kind}/{objects}")
            answers.append(answer)
    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    hits: dict[str, list[int]] = {}
    for i in range(0, len(prompts), 64):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[i : i + 64]
        ]
        enc = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        said = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for kind, answer, text in zip(kinds[i : i + 64], answers[i : i + 64], said):
            hits.setdefault(kind, []).append(text.strip() == answer)
    tokenizer.padding_side = side
    model.train(was_training)
    return {kind: float(np.mean(h)) for kind, h in sorted(hits.items())}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_images(root: Path, spec: WorldSpec, rng: np.random.Generator) -> dict[str, list]:
    """Pictures + caption JSONL for train and val, COCO references and the scenes of the val set."""
    out: dict[str, list] = {}
    for split, count in (("train", spec.image_train), ("val", spec.image_val)):
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        rows, coco_images, coco_anns, scenes = [], [], [], {}
        for i in tqdm(range(count), desc=f"toy world: {split} images", leave=False):
            scene = shapes.sample_scene(rng)
            shapes.render(scene, rng, spec.image_size).save(folder / f"{i:06d}.png")
            refs = shapes.references(scene, rng)
            prompt = shapes.CAPTION_PROMPTS[0] if split == "val" else str(rng.choice(shapes.CAPTION_PROMPTS))
            target = refs[0] if split == "val" else shapes.caption(scene, rng)
            rows.append(
                {
                    "id": str(i),
                    "image": f"images/{split}/{i:06d}.png",
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{prompt}"},
                        {"from": "gpt", "value": target},
                    ],
                }
            )
            coco_images.append({"id": i, "file_name": f"images/{split}/{i:06d}.png"})
            coco_anns += [{"id": len(coco_anns) + j, "image_id": i, "caption": c} for j, c in enumerate(refs)]
            scenes[str(i)] = scene.to_dict()
        _write_jsonl(root / f"image_caption_{split}.jsonl", rows)
        coco = {"images": coco_images, "annotations": coco_anns, "type": "captions"}
        (root / f"image_caption_{split}_coco.json").write_text(json.dumps(coco))
        (root / f"image_scenes_{split}.json").write_text(json.dumps(scenes))
        out[split] = rows
    return out


def _conversation(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    turns = [{"from": "human", "value": prompt}]
    return turns + ([{"from": "gpt", "value": answer}] if answer is not None else [])


def write_instructions(
    root: Path, rng: np.random.Generator, padded_share: float = 0.0, padding_rng: np.random.Generator | None = None
) -> None:
    """SFT conversations (short-answer questions and captions) and preference pairs over the same pictures.

    Val questions carry ``answers`` (10 copies of the true answer, VQAv2-style) for VQA accuracy; preference pairs
    reject a caption with one wrong attribute, a hallucinated or missing object, or a wrong short answer.
    ``padded_share`` of the training captions of one-object pictures go on to name an object the picture does not
    hold (:func:`~anymal_lit.toyworld.shapes.phantom_object`), drawn from ``padding_rng`` so that ``rng``'s draws,
    and every other file, stay what they are without it.
    """
    for split in ("train", "val"):
        scenes = json.loads((root / f"image_scenes_{split}.json").read_text())
        sft, prefs = [], []
        for rid, data in scenes.items():
            scene = shapes.Scene.from_dict(data)
            image = f"images/{split}/{int(rid):06d}.png"
            qa = shapes.questions(scene, rng)
            for j, (question, answer) in enumerate(qa[: 2 if split == "train" else 1]):
                row = {
                    "id": f"{rid}-q{j}",
                    "image": image,
                    "conversations": _conversation(f"<image>\n{question}", answer),
                }
                sft.append({**row, "answers": [answer] * 10, "question_type": question.split()[0].lower()})
            if split == "train":
                question, answer = qa[-1]
                sft.append(
                    {
                        "id": f"{rid}-v",
                        "image": image,
                        "conversations": _conversation(f"<image>\n{question}\n{benchmarks.VQA_PROMPT}", answer),
                    }
                )
                item = multiple_choice_item(scene, rng)
                prompt = benchmarks.multiple_choice_prompt(item["question"], item["options"])
                sft.append(
                    {
                        "id": f"{rid}-m",
                        "image": image,
                        "conversations": _conversation(f"<image>\n{prompt}", item["answer"]),
                    }
                )
            if split == "train" and rng.random() < 0.5:
                prompt = f"<image>\n{rng.choice(shapes.CAPTION_PROMPTS)}"
                text = shapes.caption(scene, rng)
                if padding_rng is not None and len(scene.objects) == 1 and padding_rng.random() < padded_share:
                    phantom = shapes.phantom_object(scene, padding_rng)
                    text = f"{text} and {shapes.object_phrase(phantom, padding_rng)}"
                sft.append({"id": f"{rid}-c", "image": image, "conversations": _conversation(prompt, text)})
            template = int(rng.integers(len(shapes.CAPTION_PROMPTS)))
            caption_rng = np.random.default_rng(rng.integers(1 << 31))
            chosen = shapes.caption(scene, np.random.default_rng(caption_rng.integers(1 << 31)), template)
            rejected = shapes.caption(
                shapes.corrupt(scene, rng), np.random.default_rng(caption_rng.integers(1 << 31)), template
            )
            prompt = f"<image>\n{shapes.CAPTION_PROMPTS[0]}"
            prefs.append(
                {
                    "id": f"{rid}-pc",
                    "image": image,
                    "conversations": _conversation(prompt),
                    "chosen": chosen,
                    "rejected": rejected,
                }
            )
            question, answer = qa[-1]
            prefs.append(
                {
                    "id": f"{rid}-pq",
                    "image": image,
                    "conversations": _conversation(f"<image>\n{question}"),
                    "chosen": answer,
                    "rejected": shapes.wrong_answer(answer, rng),
                }
            )
        _write_jsonl(root / f"image_sft_{split}.jsonl", sft)
        _write_jsonl(root / f"image_preference_{split}.jsonl", prefs)


MC_KINDS = {"colour": list(shapes.COLOURS), "shape": list(shapes.SHAPES), "position": list(shapes.POSITIONS)}


def multiple_choice_item(scene: shapes.Scene, rng: np.random.Generator) -> dict:
    """A 4-option question about one object's colour, shape or position (objects named by colour or shape)."""
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    kind = str(rng.choice(list(MC_KINDS)))
    question = {
        "colour": f"What colour is the {obj.shape}?" if sum(o.shape == obj.shape for o in scene.objects) == 1 else None,
        "shape": f"What shape is the {obj.colour} object?",
        "position": f"Where is the {obj.colour} {obj.shape}?",
    }[kind] or f"What shape is the {obj.colour} object?"
    kind = "shape" if question.startswith("What shape") else kind
    truth = getattr(obj, kind)
    distractors = [str(v) for v in rng.permutation([v for v in MC_KINDS[kind] if v != truth])[:3]]
    texts = [truth, *distractors]
    order = rng.permutation(4)
    options = {letter: texts[i] for letter, i in zip("ABCD", order)}
    answer = next(k for k, v in options.items() if v == truth)
    return {"question": question, "options": options, "answer": answer, "category": kind}


def human_answers(answer: str, rng: np.random.Generator) -> list[str]:
    """Ten VQAv2-style human answers: mostly the answer, some written differently (digits, articles, case)."""
    variants = {"one": ["1", "one", "One"], "two": ["2", "two", "2 shapes"]}.get(
        answer, [answer, f"the {answer}", answer.capitalize()]
    )
    return [answer if rng.random() < 0.6 else str(rng.choice(variants)) for _ in range(10)]


def write_benchmarks(root: Path, rng: np.random.Generator) -> None:
    """Val eval sets in the real formats (VQAv2 JSON, MMBench TSV), then read back through the kit's readers."""
    scenes = json.loads((root / "image_scenes_val.json").read_text())
    questions, annotations, mc_rows = [], [], []
    for rid, data in scenes.items():
        scene = shapes.Scene.from_dict(data)
        question, answer = shapes.questions(scene, rng)[0]
        qid = int(rid) * 10
        questions.append({"question_id": qid, "image_id": int(rid), "question": question})
        answers = human_answers(answer, rng)
        annotations.append(
            {
                "question_id": qid,
                "image_id": int(rid),
                "multiple_choice_answer": answer,
                "question_type": question.split()[0].lower(),
                "answer_type": "number" if answer in shapes.COUNT_WORDS.values() else "other",
                "answers": [
                    {"answer": a, "answer_id": j + 1, "answer_confidence": "yes"} for j, a in enumerate(answers)
                ],
            }
        )
        item = multiple_choice_item(scene, rng)
        base = {**item, "index": int(rid), "hint": "", "image_path": str(root / f"images/val/{int(rid):06d}.png")}
        mc_rows += circular_variants(base)
    (root / "vqa_val_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "vqa_val_annotations.json").write_text(json.dumps({"annotations": annotations}))
    benchmark_files.write_mmbench_tsv(mc_rows, root / "mmbench_val.tsv")
    vqa = benchmarks.vqa_records(
        root / "vqa_val_questions.json", root / "vqa_val_annotations.json", root / "images/val", "{image_id:06d}.png"
    )
    benchmarks.write_jsonl(vqa, root / "image_vqa_val.jsonl")
    benchmarks.write_jsonl(
        benchmarks.mmbench_records(root / "mmbench_val.tsv", root / "mmbench_images"), root / "image_mmbench_val.jsonl"
    )


def build_world(root: str | Path, spec: WorldSpec = WorldSpec(), force: bool = False) -> Path:
    """Generate the world under ``root`` (skipped when a world of the same spec is already there)."""
    root = Path(root)
    manifest = root / "world.json"
    wanted = {"version": WORLD_VERSION, **asdict(spec)}
    if manifest.exists() and not force and json.loads(manifest.read_text()).get("spec") == wanted:
        log.info("toy world at %s is up to date", root)
        if not (root / "paper_benchmarks").is_dir():  # a world built before these files existed: add them (~1 s)
            benchmark_files.write_paper_benchmarks(root, np.random.default_rng(spec.seed + 5))
        return root
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    rng = np.random.default_rng(spec.seed)
    start = time.time()
    rows = write_images(root, spec, rng)
    write_instructions(root, rng, spec.sft_padded_captions, np.random.default_rng(spec.seed + 11))
    write_benchmarks(root, rng)
    timings["images_s"] = time.time() - start

    start = time.time()
    media_rng = np.random.default_rng(spec.seed + 2)
    sounds = media_world.write_sounds(root, {"train": spec.audio_train, "val": spec.audio_val}, media_rng)
    motions = media_world.write_motions(
        root, {"train": spec.imu_train, "val": spec.imu_val}, media_rng, val_seed=spec.seed + 7
    )
    media_world.write_videos(root, {"train": spec.video_train, "val": spec.video_val}, spec.image_size, media_rng)
    media_world.write_interleaved(root, rows, motions, media_rng)
    # their own rng, so adding them left every other file of the world unchanged
    benchmark_files.write_paper_benchmarks(root, np.random.default_rng(spec.seed + 5))
    timings["media_s"] = time.time() - start

    start = time.time()
    lm_report = build_tiny_lm(root / "models" / "tiny-lm", spec)
    timings["lm_s"] = time.time() - start

    start = time.time()
    clip_report = build_tiny_clip(root / "models" / "tiny-clip", root, rows["train"], spec)
    timings["clip_s"] = time.time() - start

    start = time.time()
    clap_losses = media_world.build_tiny_clap(root, sounds["train"], spec.clap_steps, spec.seed)
    timings["clap_s"] = time.time() - start
    start = time.time()
    imu_losses = media_world.build_tiny_imu(root, motions["train"], spec.imu_steps, spec.seed)
    timings["imu_s"] = time.time() - start

    report = {
        "spec": wanted,
        "timings": timings,
        "tiny_lm": lm_report,
        "tiny_clip": clip_report,
        "clap_loss": {"first": clap_losses[0], "last": float(np.mean(clap_losses[-50:]))},
        "imu_loss": {"first": imu_losses[0], "last": float(np.mean(imu_losses[-50:]))},
    }
    manifest.write_text(json.dumps(report, indent=2))
    log.info("toy world written to %s: %s", root, report)
    return root
