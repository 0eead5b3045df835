"""The answer-rule callback (ChartQA / MMMU / MathVista targets and scores), the paper's Tables 1/3/4 layout of a
scorecard, and the eval_*.yaml recipes that fill it."""

from __future__ import annotations

import contextlib
import io
import json
import os
from types import SimpleNamespace

import pytest
import yaml

from anymal_lit.callbacks import AnswerEvalCallback, PaperTablesCallback, paper_tables
from anymal_lit.callbacks.paper_tables import PAPER_TABLES
from anymal_lit.data.prompts import apply_prompt, get_prompt
from anymal_lit.data.records import Record
from tests.conftest import REPO


def record(rid: str, reply: str = "x", **extra) -> Record:
    messages = [{"role": "user", "content": "<image>\nQ?"}, {"role": "assistant", "content": reply}]
    return Record(rid, messages, [("image", "/x/p.png")], f"t.jsonl:{rid}", extra)


def scored(callback: AnswerEvalCallback, records: list[Record], predictions: list[str]) -> dict[str, float]:
    metric = callback.new_metric()
    metric.update([r.id for r in records], predictions, [callback.target(r) for r in records])
    return metric.score(*metric.gathered())


def test_relaxed_rule_scores_chartqa_answers_within_five_percent():
    callback = AnswerEvalCallback("chartqa.jsonl", rule="relaxed")
    records = [record("c1", answers=["24"]), record("c2", answers=["Yes"]), record("c3", answers=["10%"]),
               record("c4", reply="7")]  # fmt: skip
    assert callback.name == "chartqa"
    assert callback.target(records[3]) == ["7"]  # no answers: the final assistant turn
    scores = scored(callback, records, ["25", "yes", "0.12", "7.7"])  # 4.2 % off: right; 20 %, 10 % off: wrong
    assert scores["relaxed_accuracy"] == pytest.approx(2 / 4)


def test_mmmu_rule_parses_letters_and_open_answers():
    callback = AnswerEvalCallback("mmmu.jsonl", rule="mmmu")
    mc = record("m1", options={"A": "cat", "B": "dog"}, answer="B", question_type="multiple-choice", category="Art")
    open_q = record("m2", question_type="open", answer="3.5", answers=["3.5"], category="Math")
    tsv = record("m3", options={"A": "cat", "B": "dog"}, answer="A")  # VLMEvalKit's TSV: no question_type
    assert callback.target(mc) == {"question_type": "multiple-choice", "answer": "B",
                                   "options": {"A": "cat", "B": "dog"}, "subject": "Art"}  # fmt: skip
    assert callback.target(open_q)["answer"] == ["3.5"]
    assert callback.target(tsv)["question_type"] == "multiple-choice"
    scores = scored(callback, [mc, open_q, tsv], ["I think (B)", "so the answer is 3.50", "B"])
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert (scores["accuracy/Art"], scores["accuracy/Math"], scores["random_fallback"]) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="'m4'.*answer"):
        callback.target(record("m4", options={"A": "cat"}, answer="C"))


def test_mathvista_rule_compares_option_text_and_rounded_values():
    callback = AnswerEvalCallback("mathvista.jsonl", rule="mathvista", name="mathvista")
    choice = record("v1", question_type="multi_choice", answer_type="text", options={"A": "purple", "B": "green"},
                    answer="B")  # fmt: skip
    count = record("v2", question_type="free_form", answer_type="integer", answer="2")
    ratio = record("v3", question_type="free_form", answer_type="float", answer="1.5", precision="1.0")  # TSV text
    target = callback.target(choice)
    assert (target["answer"], target["choices"]) == ("green", ["purple", "green"])  # the letter -> its option
    assert callback.target(ratio)["precision"] == 1
    scores = scored(callback, [choice, count, ratio], ["(B)", "There are 2 shapes.", "1.52"])
    assert scores["accuracy"] == 1.0
    assert scores["accuracy_no_llm"] == pytest.approx(2 / 3)  # "There are 2 shapes." needs upstream's LLM
    with pytest.raises(ValueError, match="'v4'.*answer_type"):
        callback.target(record("v4", question_type="free_form", answer="2"))


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule must be one of"):
        AnswerEvalCallback("x.jsonl", rule="bleu")


def test_the_mmmu_prompt_gives_open_questions_the_open_template():
    question = "<image> What is 2 + 1.5?"
    open_q = apply_prompt(record("m2", question=question, question_type="open", answers=["3.5"]), "mmmu")
    mc = apply_prompt(record("m1", question="<image> Which?", options={"A": "cat", "B": "dog"}, answer="B"), "mmmu")
    assert open_q.messages[0]["content"] == get_prompt("mmmu_open").system
    assert mc.messages[0]["content"] == get_prompt("mmmu").system and "B. dog" in mc.messages[1]["content"]


CARD = {
    "stages": {
        "align": {"image_caption": {"cider": 0.5}},  # no benchmark of the tables: no row
        "sft": {
            "mmmu": {"accuracy": 0.25, "accuracy/Art": 1.0},
            "vqav2": {"vqa_official": 0.7512, "vqa_always": 0.9},
            "textvqa": {"vqa_official": 0.1, "vqa_always": 0.5},
            "mvbench": {"accuracy": 0.4},
            "audiocaps": {"cider": 0.778},
        },
        "dpo": {"hateful_memes": {"auroc": 0.6}},
    }
}
TABLES = """### Table 1: image understanding

| Model | MMMU (val, acc) | VQAv2 (acc) | TextVQA (acc) | MMBench (circular) | AI2D (acc) | MathVista (acc) | ChartQA (relaxed acc) | OK-VQA (acc) | VizWiz (acc) | Hateful Memes (AUROC) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| M (sft) | 25.0 | 75.1 | 50.0 | - | - | - | - | - | - | - |
| M (dpo) | - | - | - | - | - | - | - | - | - | 60.0 |

### Table 3: video QA

| Model | EgoSchema (acc) | MVBench (acc) |
|---|---:|---:|
| M (sft) | - | 40.0 |
| M (dpo) | - | - |

### Table 4: audio captioning

| Model | AudioCaps (CIDEr) | AudioCaps (SPICE) |
|---|---:|---:|
| M (sft) | 77.8 | - |
| M (dpo) | - | - |
"""  # noqa: E501


def test_paper_tables_lay_a_scorecard_out_as_tables_1_3_and_4():
    assert paper_tables(CARD, model="M") == TABLES


def test_the_callback_prints_the_tables_and_writes_them_beside_the_scorecard(tmp_path, capsys):
    card = tmp_path / "eval" / "scorecard.json"
    card.parent.mkdir()
    card.write_text(json.dumps(CARD))
    PaperTablesCallback(str(card), model="M").on_validation_end(SimpleNamespace(sanity_checking=False), None)
    assert capsys.readouterr().out.strip() == TABLES.strip()
    assert (tmp_path / "eval" / "paper_tables.md").read_text() == TABLES


def parsed(path, tmp_path) -> dict:
    """``anymal-lit validate -c <recipe> --print_config`` in this process, as YAML."""
    from anymal_lit.lightning_cli import AnyMALCLI

    out, here = io.StringIO(), os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            AnyMALCLI(args=["validate", "-c", str(path), "--print_config"])
    finally:
        os.chdir(here)
    assert exit_info.value.code in (0, None), out.getvalue()[-3000:]
    return yaml.safe_load(out.getvalue())


RECIPES = {
    "anymal_paper/eval_image.yaml": "Table 1: image understanding",
    "anymal_paper/eval_video.yaml": "Table 3: video QA",
    "anymal_paper/eval_audio.yaml": "Table 4: audio captioning",
    "demo/eval_paper.yaml": None,  # all three
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_eval_recipes_parse_and_name_every_column_of_their_tables(recipe, tmp_path):
    config = parsed(REPO / "experiments" / recipe, tmp_path)
    callbacks = config["trainer"]["callbacks"]
    assert callbacks[-1]["class_path"] == "anymal_lit.callbacks.PaperTablesCallback"  # after what it reads
    evals = {c["init_args"]["name"]: c["init_args"] for c in callbacks if "data" in c["init_args"]}
    scorecards = {c["init_args"]["scorecard"] for c in callbacks}
    assert len(scorecards) == 1  # the tables read the scorecard every callback writes to
    tables = [RECIPES[recipe]] if RECIPES[recipe] else list(PAPER_TABLES)
    assert {c.benchmark for t in tables for c in PAPER_TABLES[t]} <= set(evals)
    for name, args in evals.items():
        assert args["prompt"] is not None, name  # the paper's prompt for every benchmark
        get_prompt(args["prompt"])
