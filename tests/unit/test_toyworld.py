import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anymal_lit.data import benchmarks
from anymal_lit.metrics import mmbench_circular, vqa_accuracy
from anymal_lit.toyworld import WorldSpec, signals
from anymal_lit.toyworld.report import interleaved_report, object_count_report
from anymal_lit.toyworld.tiny_models import _batches, encode_conversations, pretrain_lm
from anymal_lit.toyworld.world import SHIPPED_LM, build_tiny_lm, lm_chat_conversations, lm_conversations, probe_tiny_lm


def test_chat_tuning_scores_only_the_answer_turn(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    conversations = lm_chat_conversations(np.random.default_rng(0), 6)
    ids, starts = encode_conversations(tokenizer, conversations, answer_loss_only=True)
    x, mask, labels = _batches(ids, starts, 64, tokenizer.pad_token_id, np.random.default_rng(0))()
    by_text = {tokenizer.apply_chat_template(c, tokenize=False): c for c in conversations}
    for row, labelled in zip(x, labels):
        whole = tokenizer.decode(row[row != tokenizer.pad_token_id])
        conversation = by_text[whole]
        prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
        scored = tokenizer.decode(row[labelled != -100])
        assert scored == whole[len(prompt) :]
        assert scored.startswith(conversation[-1]["content"] + tokenizer.eos_token)
    _, every = encode_conversations(tokenizer, conversations, answer_loss_only=False)
    assert every == [0] * len(conversations)
    assert torch.equal(mask.sum(1), (x != tokenizer.pad_token_id).sum(1))


class _Recorder(torch.nn.Module):
    """Stands in for the LM: records each forward's rows and labels; the loss is the row count, with a gradient (so a
    step's logged loss shows how the parts were weighed)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, input_ids, attention_mask, labels):
        self.seen.append((input_ids, labels))
        return type("Out", (), {"loss": self.w * 0 + float(len(input_ids))})()


def test_chat_tuning_with_replay_scores_a_quarter_of_each_batch_on_pretraining_text(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    chat = lm_chat_conversations(np.random.default_rng(0), 30)
    corpus = lm_conversations(np.random.default_rng(1), 30)
    texts = {tokenizer.apply_chat_template(c, tokenize=False) for c in corpus}
    model = _Recorder()
    _, losses = pretrain_lm(tokenizer, chat, 3, batch_size=8, answer_loss_only=True, model=model, replay=corpus)
    assert len(model.seen) == 6  # two forwards a step: chat rows, then replayed rows
    assert losses == pytest.approx([0.75 * 6 + 0.25 * 2] * 3)  # each part's mean loss weighed by its share of rows
    for (chat_x, chat_y), (replay_x, replay_y) in zip(model.seen[::2], model.seen[1::2]):
        assert len(chat_x) == 6 and len(replay_x) == 2
        real = replay_x != tokenizer.pad_token_id
        assert torch.equal(replay_y != -100, real)  # every token of a replayed row is scored
        assert all(tokenizer.decode(row[keep]) in texts for row, keep in zip(replay_x, real))
        assert ((chat_y != -100).sum(1) < (chat_x != tokenizer.pad_token_id).sum(1) / 2).all()  # answers only


def test_a_world_trained_lm_recipe_describes_the_saved_lm(tiny_world, tiny_llm_dir):
    """The recipe beside a trained LM is that LM's: its spec is the world's and its losses fell while it trained.
    (Its probe scores are not re-measured here: 600 greedy answers take minutes on a loaded CPU.)"""
    recipe = json.loads((tiny_llm_dir / "recipe.json").read_text())
    world_spec = json.loads((tiny_world / "world.json").read_text())["spec"]
    assert recipe["spec"] == {k: v for k, v in world_spec.items() if k == "seed" or k.startswith("lm_")}
    assert recipe["lm_loss"]["last"] < recipe["lm_loss"]["first"]
    assert recipe["lm_chat_loss"]["last"] < recipe["lm_chat_loss"]["first"]
    kinds = {f"{k}/{n}" for k in ("lettered", "short") for n in ("one_object", "two_objects")}
    assert set(recipe["probe"]) == kinds


def test_shipped_tiny_lm_answers_lettered_and_short_questions():
    """The stand-in for a pretrained chat LLM picks the letter of the option a description implies and answers short
    questions about one-object descriptions."""
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_LM)
    probe = probe_tiny_lm(model, AutoTokenizer.from_pretrained(SHIPPED_LM), count=60)
    assert probe["lettered/one_object"] >= 0.9 and probe["short/one_object"] >= 0.9
    with pytest.raises(ValueError, match="tiny_lm must be 'shipped' or 'train'"):
        build_tiny_lm("unused", WorldSpec(tiny_lm="download"))


def test_shipped_tiny_clip_matches_the_worlds_pictures_to_their_captions(tmp_path):
    """The stand-in for a pretrained CLIP loads through open_clip's own ``local-dir:`` path with its tokenizer (each
    caption closed by the token its text tower pools), and knows the world: among 64 fresh pictures and their
    captions, each picture's own caption is the nearest far above chance (1/64)."""
    import open_clip

    from anymal_lit.encoders.image import ImageProcessor
    from anymal_lit.toyworld import shapes
    from anymal_lit.toyworld.world import CLIP_MEAN, CLIP_STD, SHIPPED_CLIP, build_tiny_clip

    model = open_clip.create_model(f"local-dir:{SHIPPED_CLIP}").eval()
    tokenize = open_clip.get_tokenizer(f"local-dir:{SHIPPED_CLIP}")
    ids = tokenize(["a picture of a small red circle on the left"])
    last = ids[0, (ids[0] != tokenize.tokenizer.pad_token_id).sum() - 1]
    assert model.text_pool_type == "eos" and last == model.text_eos_id
    rng = np.random.default_rng(1234)
    scenes = [shapes.sample_scene(rng) for _ in range(64)]
    processor = ImageProcessor(64, CLIP_MEAN, CLIP_STD)
    for i, scene in enumerate(scenes):
        shapes.render(scene, rng).save(tmp_path / f"{i}.png")
    images = torch.cat([processor(str(tmp_path / f"{i}.png")) for i in range(len(scenes))])
    with torch.no_grad():
        similarity = (
            model.encode_image(images, normalize=True)
            @ model.encode_text(tokenize([shapes.caption(scene, rng) for scene in scenes]), normalize=True).T
        )
    top1 = (similarity.argmax(1) == torch.arange(len(scenes))).float().mean().item()
    assert top1 >= 0.3, top1
    copied = build_tiny_clip(tmp_path / "copy", tmp_path, [], WorldSpec())
    assert copied["trained_on_these_pictures"] and (tmp_path / "copy" / "open_clip_model.safetensors").is_file()
    assert not build_tiny_clip(tmp_path / "copy", tmp_path, [], WorldSpec(seed=1))["trained_on_these_pictures"]
    with pytest.raises(ValueError, match="use WorldSpec\\(tiny_clip='train'\\)"):
        build_tiny_clip(tmp_path / "clip", tmp_path, [], WorldSpec(image_size=32))
    with pytest.raises(ValueError, match="tiny_clip must be 'shipped' or 'train'"):
        build_tiny_clip(tmp_path / "clip", tmp_path, [], WorldSpec(tiny_clip="download"))


def test_chat_tuning_look_ups_answer_with_the_letter_of_the_named_option():
    conversations = lm_chat_conversations(np.random.default_rng(1), 400)
    lookups = [c for c in conversations if c[0]["content"].startswith("Which option is")]
    lettered = [c for c in conversations if c[0]["content"].endswith(benchmarks.MC_PROMPT)]
    assert len(lookups) > 60 and len(lettered) > len(lookups)
    for user, assistant in lookups:
        named = re.match(r"Which option is (\w+)\?", user["content"])[1]
        options = dict(re.findall(r"^([A-D])\. (\w+)$", user["content"], flags=re.M))
        assert options[assistant["content"]] == named and list(options.values()).count(named) == 1


def test_last_chat_round_gives_the_look_ups_share_to_short_answers():
    """The recipe's last chat-tuning round (``short_answers=0.5``) asks short questions about a description in half
    its rows and letter look-ups in a tenth; the earlier rounds three tenths each."""

    def shares(short: float) -> tuple[float, float]:
        conversations = lm_chat_conversations(np.random.default_rng(2), 2000, short)
        users = [c[0]["content"] for c in conversations]
        lookups = sum(u.startswith("Which option is") for u in users)
        media = {*signals.AUDIO_PROMPTS, *signals.IMU_PROMPTS, *signals.VIDEO_PROMPTS}  # the pretraining mix's
        questions = sum(
            u.split("\n")[1].split()[0] in ("What", "Where", "Is", "How")
            for u in users
            if "\n" in u and u.split("\n")[1] not in media
        )
        lettered = sum(u.endswith(benchmarks.MC_PROMPT) for u in users) - lookups  # about a description
        return lookups / len(users), (questions - lettered) / len(users)

    (lookups_default, short_default), (lookups_last, short_last) = shares(0.3), shares(0.5)
    assert lookups_default == pytest.approx(0.3, abs=0.04) and short_default == pytest.approx(0.3, abs=0.04)
    assert lookups_last == pytest.approx(0.1, abs=0.03) and short_last == pytest.approx(0.5, abs=0.04)
    with pytest.raises(ValueError, match="short_answers must be in"):
        lm_chat_conversations(np.random.default_rng(2), 10, 0.7)


def test_interleaved_report_scores_what_an_answer_says_not_its_wording(tiny_world, tmp_path):
    gold = {}
    for line in (tiny_world / "interleaved_val.jsonl").open():
        row = json.loads(line)
        gold[row["id"]] = row["conversations"][-1]["value"]
    swap = {"cycling": "riding a bike", "riding a bike": "cycling", "quickly": "at a fast pace"}
    swap |= {"at a fast pace": "quickly", "slowly": "at an easy pace", "at an easy pace": "slowly"}
    words = re.compile("|".join(map(re.escape, sorted(swap, key=len, reverse=True))))
    paraphrased = {k: words.sub(lambda m: swap[m[0]], v) for k, v in gold.items()}
    assert sum(paraphrased[k] != gold[k] for k in gold) >= len(gold) // 2  # exact match would fail these
    (tmp_path / "paraphrased.json").write_text(json.dumps(paraphrased))
    (tmp_path / "empty.json").write_text(json.dumps({k: "" for k in gold}))
    report = interleaved_report(tiny_world, tmp_path / "paraphrased.json", tmp_path / "empty.json")
    assert report["activity_accuracy"] == report["pace_accuracy"] == report["object_accuracy"] == 1.0
    assert report["activity_accuracy_before"] == report["object_accuracy_before"] == 0.0


def test_object_count_report_splits_scores_by_the_pictures_object_count(tiny_world, tmp_path):
    """Right on one-object pictures and wrong on two-object ones -> 1.0 / 0.0; the split recombines to the overall."""
    scenes = json.loads((tiny_world / "image_scenes_val.json").read_text())
    pictures = {"vqa": lambda r: r["image_id"], "mmbench": lambda r: r["index"] % 1_000_000}
    for bench, key in (("vqa", "vqa_official"), ("mmbench", "vanilla")):
        rows = [json.loads(line) for line in (tiny_world / f"image_{bench}_val.jsonl").open()]
        single = {r["id"]: len(scenes[str(pictures[bench](r))]["objects"]) == 1 for r in rows}
        assert 0 < sum(single.values()) < len(rows)
        wrong = "nothing" if bench == "vqa" else "E"
        half = {r["id"]: r["conversations"][-1]["value"] if single[r["id"]] else wrong for r in rows}
        (tmp_path / "half.json").write_text(json.dumps(half))
        (tmp_path / "empty.json").write_text(json.dumps({r["id"]: "" for r in rows}))
        report = object_count_report(tiny_world, bench, tmp_path / "half.json", tmp_path / "empty.json")
        assert report[f"{key}/one_object"] == 1.0 and report[f"{key}/two_objects"] == 0.0
        assert report[f"{key}/one_object_before"] == report[f"{key}/two_objects_before"] == 0.0
        if bench == "mmbench":
            assert report["circular/one_object"] == 1.0 and report["circular/two_objects"] == 0.0
        # right on every third record, whatever its picture: the two parts, weighted by size, give the overall score
        mixed = {r["id"]: r["conversations"][-1]["value"] if i % 3 == 0 else wrong for i, r in enumerate(rows)}
        (tmp_path / "mixed.json").write_text(json.dumps(mixed))
        report = object_count_report(tiny_world, bench, tmp_path / "mixed.json", None)
        if bench == "vqa":
            overall = np.mean([vqa_accuracy(mixed[r["id"]], r["answers"]) for r in rows])
        else:
            overall = mmbench_circular([{**r, "prediction": mixed[r["id"]]} for r in rows])["vanilla"]
        share = sum(single.values()) / len(rows)
        parts = share * report[f"{key}/one_object"] + (1 - share) * report[f"{key}/two_objects"]
        assert 0 < overall < 1 and parts == pytest.approx(overall)
    with pytest.raises(ValueError, match="benchmark must be 'vqa' or 'mmbench'"):
        object_count_report(tiny_world, "gqa", tmp_path / "half.json", None)


class _Wording:
    """A stand-in random generator that always picks option ``index`` (or the last): one fixed wording."""

    def __init__(self, index: int) -> None:
        self.index = index

    def choice(self, options):
        return options[min(self.index, len(options) - 1)]


@pytest.mark.parametrize("kind", ["imu", "audio"])
def test_a_right_caption_in_any_one_wording_clears_the_alignment_bar(kind):
    """The alignment target (CIDEr >= 3 and >= 3x the best constant caption) measures what a caption says: a caption
    right in every attribute clears it in every single wording the world's captions use, not only in a lucky one.
    (With two paraphrases per value, toy world v10, the IMU's right captions scored 2.1-4.4 against a bar of 3.9.)"""
    from pycocoevalcap.cider.cider import Cider

    from anymal_lit.metrics.caption import ptb_tokenize
    from anymal_lit.toyworld.constant_caption import best_constant_cider

    sample, caption, templates = {
        "imu": (signals.sample_motion, signals.imu_caption, signals.IMU_TEMPLATES),
        "audio": (signals.sample_sound, signals.sound_caption, signals.REFERENCE_TEMPLATES),
    }[kind]
    rng = np.random.default_rng(0)
    things = [sample(rng) for _ in range(100)]
    references = {str(i): [caption(t, rng) for _ in range(5)] for i, t in enumerate(things)}
    wordings = [(w, j) for w in range(2) for j in range(len(templates))]
    right = {f"{w}/{j}/{i}": [caption(t, _Wording(w), template=j)] for w, j in wordings for i, t in enumerate(things)}
    tokens = ptb_tokenize({**{f"ref/{k}": v for k, v in references.items()}, **right})
    gts = {k: tokens[f"ref/{k}"] for k in references}
    constant, _ = best_constant_cider(sorted({c for refs in references.values() for c in refs}), references)
    bar = max(3.0, 3 * constant)
    scores = {
        (w, j): Cider().compute_score(gts, {k: tokens[f"{w}/{j}/{k}"] for k in references})[0] for w, j in wordings
    }
    assert min(scores.values()) > bar, (bar, scores)


def test_the_imu_validation_set_holds_every_content_equally_and_leaves_the_later_draws_unchanged():
    balanced = signals.balanced_motions(100, seed=7)
    rng, plain = np.random.default_rng(2), np.random.default_rng(2)
    motions = [balanced(rng) for _ in range(100)]
    drawn = [signals.sample_motion(plain) for _ in range(100)]
    counts = {tuple(c.values()): 0 for c in signals.MOTION_CONTENTS}
    for motion in motions:
        counts[(motion.activity, motion.pace)] += 1
    assert len(counts) == 9 and set(counts.values()) == {11, 12}  # 100 = 9 x 11 + 1
    assert [m.seconds for m in motions] == [m.seconds for m in drawn]
    assert rng.random() == plain.random()  # the world's later files (videos, interleaved rows) stay as they were
    assert [(m.activity, m.pace) for m in motions[:9]] != [tuple(c.values()) for c in signals.MOTION_CONTENTS]


def test_padded_instruction_captions_name_one_invented_object_and_leave_every_other_row(tmp_path):
    """``WorldSpec.sft_padded_captions``: that share of the one-object pictures' instruction captions go on to name
    an object the picture does not hold (what the SFT model is to pick up and DPO to unlearn); nothing else changes,
    so the alignment data, the preference pairs and the evaluation files are the same with or without it."""
    from anymal_lit.toyworld import shapes
    from anymal_lit.toyworld.hallucination import hallucinated
    from anymal_lit.toyworld.world import write_instructions

    rng = np.random.default_rng(4)
    scenes = {split: {str(i): shapes.sample_scene(rng).to_dict() for i in range(n)}
              for split, n in (("train", 400), ("val", 20))}  # fmt: skip
    worlds = {}
    for name, share in (("true", 0.0), ("padded", 0.7)):
        root = tmp_path / name
        root.mkdir()
        for split, data in scenes.items():
            (root / f"image_scenes_{split}.json").write_text(json.dumps(data))
        write_instructions(root, np.random.default_rng(0), share, np.random.default_rng(11))
        worlds[name] = {f.name: f.read_text().splitlines() for f in root.glob("image_*.jsonl")}
    for name, lines in worlds["true"].items():
        if name != "image_sft_train.jsonl":
            assert worlds["padded"][name] == lines, name
    changed = padded = 0
    for true, other in zip(worlds["true"]["image_sft_train.jsonl"], worlds["padded"]["image_sft_train.jsonl"]):
        true, other = json.loads(true), json.loads(other)
        scene = shapes.Scene.from_dict(scenes["train"][true["id"].split("-")[0]])
        if not (true["id"].endswith("-c") and len(scene.objects) == 1):
            assert other == true
            continue
        changed += 1
        caption, said = true["conversations"][1]["value"], other["conversations"][1]["value"]
        if said == caption:
            continue
        padded += 1
        mentions = shapes.parse_caption(said)
        assert len(mentions) == 2 and not hallucinated(mentions[0], scene) and hallucinated(mentions[1], scene)
        assert shapes.corrected_caption(said, scene) == caption  # the correction deletes the invented object
    assert changed > 60 and 0.55 < padded / changed < 0.85, (padded, changed)
