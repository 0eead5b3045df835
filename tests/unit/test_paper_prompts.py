"""The paper's prompts as named templates, the system message in the chat template, and the COCO JSON answers."""

import pytest
import torch

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.prompts import PROMPTS, RECONSTRUCTED, VERBATIM, apply_prompt, get_prompt, render_prompt
from anymal_lit.data.records import Record, RecordError
from anymal_lit.losses import IGNORE_INDEX
from anymal_lit.metrics.caption import caption_scores
from anymal_lit.metrics.json_caption import JSONCaptionMetric, parse_json_caption, parse_json_captions
from tests.conftest import REPO

TINY_LM = REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm"


def test_paper_wording_of_the_vqa_vizwiz_and_meme_prompts():
    system, user = render_prompt("textvqa", question="what is written on the sign?")
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"].startswith("You are a multimodal assistant, designed to provide direct answers")
    assert system["content"].endswith("*Do not* start your answer with 'Sure ...'.\n\nHere is the image: <image>")
    assert user["content"] == "In the image, what is written on the sign? Reply in one word."
    assert render_prompt("vizwiz", question="q?")[1]["content"].endswith(
        "Reply in one prahse/word or say 'unanswerable'"
    )
    meme_system, meme_user = render_prompt("hateful_memes", ocr="love the way you smell today")
    assert meme_system["content"].endswith(
        "Here is the meme: <image>\nThis meme contains text: 'love the way you smell today'"
    )
    assert meme_user["content"] == "Is this a hateful meme? Answer yes or no."
    assert '{"caption": "Body-Solid (Best Fitness) Inversion Table-2"}' in render_prompt("coco")[1]["content"]


def test_every_template_is_marked_verbatim_or_reconstructed_and_renders():
    reconstructed = {name for name, t in PROMPTS.items() if t.source == RECONSTRUCTED}
    assert reconstructed == {"multiple_choice", "mmmu", "mmmu_open", "chartqa", "mathvista"}
    assert all(t.source in (VERBATIM, RECONSTRUCTED) for t in PROMPTS.values())
    fields = {"question": "Q?", "options": {"B": "two", "A": "one"}, "ocr": "text", "context": "ctx"}
    for name in PROMPTS:
        system, user = render_prompt(name, **fields)
        placeholders = sum(system["content"].count(t) for t in ("<image>", "<audio>", "<video>", "<imu>"))
        assert placeholders == (0 if name.startswith("mmmu") else 1), name  # MMMU's question carries its images
    assert "Options: A. one\nB. two" in render_prompt("mmbench", **fields)[1]["content"]
    with pytest.raises(KeyError, match="question"):
        render_prompt("vqa")
    with pytest.raises(ValueError, match="unknown prompt"):
        get_prompt("no_such_task")


def test_apply_prompt_rewrites_the_conversation_and_keeps_media_and_answer():
    question = {"role": "user", "content": "<image>\nWhat colour is the bus?"}
    messages = [question, {"role": "assistant", "content": "red"}]
    record = Record("q1", messages, [("image", "/x/bus.jpg")], "f.jsonl:1")
    prompted = apply_prompt(record, "vqa")
    assert [m["role"] for m in prompted.messages] == ["system", "user", "assistant"]
    assert prompted.messages[1]["content"] == "In the image, What colour is the bus? Reply in one word."
    assert prompted.messages[2]["content"] == "red" and prompted.media == record.media
    audio = Record("a1", [{"role": "user", "content": "<audio>"}], [("audio", "/x/a.wav")], "f.jsonl:2")
    with pytest.raises(RecordError, match="'a1'.*holds 1 <image> but the record has 0 image"):
        apply_prompt(audio, "vqa")


def _tokenizer(template: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_LM))
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize(
    "template",
    [
        None,  # the shipped tiny LM's (the kit's) template: a system role of its own
        # a template without a system role that rejects it, and one that silently drops it
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}]\n{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]\n{% endif %}",
        "{% for m in messages %}{% if m['role'] != 'system' %}[{{ m['role'] }}]\n{{ m['content'] }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]\n{% endif %}",
    ],
)
def test_chat_template_places_the_system_message_before_the_question(template):
    tokenizer = _tokenizer(template)
    messages = [*render_prompt("vqa", question="what is it?"), {"role": "assistant", "content": "a cat"}]
    record = Record("r", messages, [], "f.jsonl:1")
    chat = ChatTokenizer(tokenizer)
    ids, labels = chat.training_example(record)
    text = tokenizer.decode(ids)
    assert "Here is the image" in text and text.index("designed to provide direct") < text.index("what is it?")
    assert tokenizer.decode(labels[labels != IGNORE_INDEX]).startswith("a cat")  # loss on the answer only
    prompt = chat.generation_prompt(record)
    assert torch.equal(prompt, ids[: len(prompt)])


def test_coco_json_answers_are_parsed_and_malformed_ones_counted():
    assert parse_json_caption('{"caption": "A man riding a horse."}') == ("A man riding a horse.", True)
    assert parse_json_caption('Sure! {"caption": "Two dogs."} Hope it helps') == ("Two dogs.", True)
    assert parse_json_caption('{"caption": "A man laying on top of a table.}') == (
        "A man laying on top of a table.",
        False,
    )
    assert parse_json_caption("A cat on a mat.") == ("A cat on a mat.", False)
    assert parse_json_caption('{"text": "x"}') == ('{"text": "x"}', False)  # no caption key: the raw text
    captions, malformed = parse_json_captions(['{"caption": "a b"}', "a c", '{"caption": 3}'])
    assert captions == ["a b", "a c", '{"caption": 3}'] and malformed == 2


def test_json_caption_metric_scores_the_parsed_captions():
    refs = {"1": ["a dog runs on the grass"], "2": ["a cat sleeps on a red sofa"]}
    raw = {"1": '{"caption": "a dog runs on grass"}', "2": "a cat sleeps on a sofa"}
    metric = JSONCaptionMetric(with_meteor=False)
    metric.update(list(raw), list(raw.values()), [refs[i] for i in raw])
    scores = metric.compute()
    expected = caption_scores({"1": "a dog runs on grass", "2": "a cat sleeps on a sofa"}, refs, False)
    assert scores["CIDEr"] == pytest.approx(expected["CIDEr"]) and scores["malformed_json"] == 0.5
