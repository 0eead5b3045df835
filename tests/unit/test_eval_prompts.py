"""Evaluation callbacks select the paper's task prompts by name; the COCO prompt's JSON answers are parsed."""

from __future__ import annotations

import json

import pytest

from anymal_lit.callbacks import CaptionEvalCallback, QAEvalCallback
from anymal_lit.data import ConversationDataModule
from anymal_lit.data.prompts import get_prompt
from anymal_lit.metrics.caption import CaptionMetric
from anymal_lit.metrics.json_caption import JSONCaptionMetric
from tests.conftest import REPO

TOKENIZER = str(REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm")


@pytest.fixture()
def vqa_file(tmp_path):
    record = {"id": "q1", "image": "bus.png", "answers": ["red"] * 10,
              "conversations": [{"from": "human", "value": "<image>\nWhat colour is the bus?"},
                                {"from": "gpt", "value": "red"}]}  # fmt: skip
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (tmp_path / "bus.png").write_bytes(b"")  # never decoded here: only the conversation is checked
    return path


def test_a_prompt_rewrites_the_question_the_callbacks_generate_for(vqa_file):
    data = ConversationDataModule(tokenizer=TOKENIZER)
    plain = data.dataset(str(vqa_file), generation=True).records[0]
    prompted = data.dataset(str(vqa_file), generation=True, prompt="vqa").records[0]
    template = get_prompt("vqa")
    assert plain.messages[0]["role"] == "user"
    assert prompted.messages[0] == {"role": "system", "content": template.system}
    assert "What colour is the bus?" in prompted.messages[1]["content"]
    assert prompted.media == plain.media  # the same picture, in the same place


def test_callbacks_take_a_prompt_by_name_and_refuse_an_unknown_one(vqa_file):
    assert QAEvalCallback(data=str(vqa_file), prompt="vqa").prompt == "vqa"
    with pytest.raises(ValueError, match="unknown prompt 'vqa2'"):
        QAEvalCallback(data=str(vqa_file), prompt="vqa2")


def test_the_coco_prompt_scores_the_caption_read_out_of_the_json_answer(vqa_file):
    assert isinstance(CaptionEvalCallback(data=str(vqa_file), prompt="coco_caption").new_metric(), JSONCaptionMetric)
    plain = CaptionEvalCallback(data=str(vqa_file)).new_metric()
    assert isinstance(plain, CaptionMetric) and not isinstance(plain, JSONCaptionMetric)
