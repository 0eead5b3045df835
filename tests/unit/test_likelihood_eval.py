"""Scoring by likelihood on a tiny random-weight model: one batched forward gives what single-candidate forwards give,
and the evaluation callback turns it into Hateful Memes' AUROC and multiple-choice accuracy."""

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from anymal_lit.callbacks.likelihood_eval import LikelihoodEvalCallback
from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.collate import PaddingCollator, load_sample
from anymal_lit.data.prompts import render_prompt
from anymal_lit.data.records import Record
from anymal_lit.inference.likelihood import candidate_records, score_candidates
from anymal_lit.losses import IGNORE_INDEX, sequence_logps
from anymal_lit.metrics.ranking import binary_scores
from anymal_lit.stages.base import AnyMALStage
from tests.conftest import REPO

TINY_LM = REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm"
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def build_tiny(folder) -> SimpleNamespace:
    """A random 2-layer Llama on the kit's tiny tokenizer, a random 1-layer CLIP and four coloured images in
    ``folder`` (the same weights in every process: seeded)."""
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import OpenCLIPImageEncoder
    from anymal_lit.projectors import LinearProjector

    (folder / "clip.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    llm = CausalLM(
        config={"model_type": "llama", "vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                "max_position_embeddings": 512},
        tokenizer=str(TINY_LM),
    )  # fmt: skip
    encoder = OpenCLIPImageEncoder(model_config=str(folder / "clip.json"))
    model = AnyMALModel(llm, {"image": encoder}, {"image": LinearProjector(32, 32, num_tokens=2)}).eval()
    for i, colour in enumerate(["red", "blue", "green", "white"]):
        Image.new("RGB", (40, 40), colour).save(folder / f"img{i}.png")
    return SimpleNamespace(model=model, folder=folder, chat=ChatTokenizer(llm.tokenizer))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("likelihood"))


def _meme(folder, i: int, text: str) -> Record:
    return Record(f"m{i}", render_prompt("hateful_memes", ocr=text), [("image", str(folder / f"img{i}.png"))], "t")


def test_batched_candidate_scores_match_single_candidate_forwards(tiny):
    records = [_meme(tiny.folder, 0, "hello"), _meme(tiny.folder, 1, "a longer meme text here")]
    candidates = [["yes", "no"], ["yes", "no", "maybe not"]]
    processors = tiny.model.media_processors()
    summed = score_candidates(tiny.model, records, candidates, tiny.chat)
    meaned = score_candidates(tiny.model, records, candidates, tiny.chat, reduction="mean")
    for record, options, by_sum, by_mean in zip(records, candidates, summed, meaned):
        totals, counts = [], []
        for row in candidate_records(record, options):  # one forward per candidate, no padding
            batch = PaddingCollator(tiny.chat.tokenizer.pad_token_id)([load_sample(row, 0, tiny.chat, processors)])
            with torch.no_grad():
                out = tiny.model(batch, pack=False)
            totals.append(float(sequence_logps(out["logits"], out["labels"])[0]))
            counts.append(int((out["labels"][0, 1:] != IGNORE_INDEX).sum()))
        assert by_sum["logps"] == pytest.approx(totals, abs=1e-4)
        assert by_sum["probs"] == pytest.approx(torch.tensor(totals).softmax(0).tolist(), abs=1e-5)
        assert by_mean["logps"] == pytest.approx([t / c for t, c in zip(totals, counts)], abs=1e-4)
        assert len(set(counts)) > 1 or len(options) == 2  # "maybe not" is longer: the mean differs from the sum


def _evaluate(tiny, tmp_path, callback, lines, rank=0, world=1, skip_bad_records=False):
    from anymal_lit.data import ConversationDataModule

    data = tiny.folder / f"{callback.name}_rank{rank}.jsonl"  # ranks of a multi-process test write their own
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    callback.data = str(data)
    llm = tiny.model.llm
    datamodule = ConversationDataModule(skip_bad_records=skip_bad_records)
    placeholders = {m: llm.tokenizer.convert_ids_to_tokens(i) for m, i in llm.placeholder_ids.items()}
    datamodule.bind(llm.tokenizer, tiny.model.media_processors(), placeholders)
    trainer = SimpleNamespace(datamodule=datamodule, global_rank=rank, world_size=world, log_dir=str(tmp_path),
                              default_root_dir=str(tmp_path), logger=None)  # fmt: skip
    module = torch.nn.Module()
    module.model, module.device, module.stage_name = tiny.model, torch.device("cpu"), "sft"
    module.placeholder_batch = lambda: AnyMALStage.placeholder_batch(module)
    module.batch_to_evaluate = module.placeholder_batch  # no training batch yet (as in `anymal-lit validate`)
    module.train()
    scores = callback.evaluate(trainer, module)
    assert module.training  # the module's mode is restored
    return scores, datamodule


def test_callback_scores_hateful_memes_by_p_yes(tiny, tmp_path):
    lines = [{"id": f"m{i}", "image": f"img{i}.png", "messages": [{"role": "user", "content": "<image>"}],
              "text": f"meme text {i}", "label": i % 2} for i in range(4)]  # fmt: skip
    callback = LikelihoodEvalCallback("", name="hateful_memes", prompt="hateful_memes", batch_size=3,
                                      scorecard=str(tmp_path / "card.json"))  # fmt: skip
    scores, datamodule = _evaluate(tiny, tmp_path, callback, lines)
    records = [_meme(tiny.folder, i, f"meme text {i}") for i in range(4)]
    direct = score_candidates(tiny.model, records, [["yes", "no"]] * 4, tiny.chat)
    expected = binary_scores([r["probs"][0] for r in direct], [0, 1, 0, 1])
    assert scores["auroc"] == pytest.approx(expected["auroc"]) and scores["accuracy"] == expected["accuracy"]
    written = json.loads((tmp_path / "sft_hateful_memes.json").read_text())
    assert written["m0"]["probs"] == pytest.approx(direct[0]["probs"], abs=1e-6)
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["stages"]["sft"]["hateful_memes"]["auroc"] == pytest.approx(scores["auroc"])


def test_callback_picks_the_most_likely_option(tiny, tmp_path):
    options = {"A": "red", "B": "blue", "C": "green"}
    lines = [{"id": f"q{i}", "image": f"img{i}.png", "options": options, "answer": "ABC"[i], "category": f"c{i % 2}",
              "messages": [{"role": "user", "content": "<image>\nWhat colour is it?"}]} for i in range(3)]  # fmt: skip
    callback = LikelihoodEvalCallback("", name="colours", mode="choice", choice_text="text", prompt="multiple_choice")
    scores, datamodule = _evaluate(tiny, tmp_path, callback, lines)
    records = datamodule.records(callback.data, require_response=False)
    from anymal_lit.data.prompts import apply_prompt

    direct = score_candidates(
        tiny.model, [apply_prompt(r, "multiple_choice") for r in records], [list(options.values())] * 3, tiny.chat
    )
    hits = ["ABC"[max(range(3), key=lambda k: d["probs"][k])] == "ABC"[i] for i, d in enumerate(direct)]
    assert scores["accuracy"] == pytest.approx(sum(hits) / 3)
    assert scores["accuracy/c1"] == float(hits[1])


def test_callback_refuses_records_without_labels(tiny, tmp_path):
    lines = [{"id": "m0", "image": "img0.png", "messages": [{"role": "user", "content": "<image> hateful?"}]}]
    with pytest.raises(ValueError, match="'m0'.*needs \\['label'\\]"):
        _evaluate(tiny, tmp_path, LikelihoodEvalCallback("", name="nolabel"), lines)


MEMES = [{"id": f"m{i}", "image": image, "messages": [{"role": "user", "content": "<image>"}], "text": f"text {i}",
          "label": label} for i, (image, label) in enumerate(
              [("img0.png", 0), ("img1.png", 1), ("img2.png", 1), ("broken.png", 0), ("img3.png", 0)])]  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_two_processes_score_what_one_does(tiny, tmp_path):
    """Rank 0 scores m0, m2, m4 and rank 1 m1, m3 (broken: skipped, a placeholder forward instead) and m0 again (the
    padding repeat, counted once); the gathered scores equal one process's."""
    import os
    import subprocess
    import sys

    (tiny.folder / "broken.png").write_bytes(b"not a png")
    (tmp_path / "lines.json").write_text(json.dumps(MEMES))
    one, _ = _evaluate(tiny, tmp_path, LikelihoodEvalCallback("", name="memes", prompt="hateful_memes"), MEMES,
                       skip_bad_records=True)  # fmt: skip
    script = REPO / "tests/integration/scripts/likelihood_ddp.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "ranks"), str(tmp_path / "lines.json"), str(tmp_path / "out.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    assert two == pytest.approx(one, abs=1e-6) and one["num_records"] == 4
