"""The JSONL format, bad-input handling and label masking by token ids."""

import json
import logging

import pytest
import torch
from transformers import AutoTokenizer

from anymal_lit.data import ChatTokenizer, ImageTextDataModule, RecordError, read_records
from anymal_lit.data.collate import ConversationDataset, PaddingCollator
from anymal_lit.encoders import ImageProcessor
from anymal_lit.losses import IGNORE_INDEX
from tests.conftest import SHIPPED_LM

PH = {"image": "<image>"}


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def row(rid="a", image="img.png", prompt="<image>\nA short image caption:", answer="a red circle"):
    rec = {"id": rid, "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}
    if image is not None:
        rec["image"] = image
    return rec


@pytest.fixture()
def image_dir(tmp_path, image_data):
    (tmp_path / "img.png").write_bytes((image_data / "images/val/000000.png").read_bytes())
    return tmp_path


def test_llava_and_messages_formats_are_equivalent(image_dir):
    llava = row()
    msgs = {
        "id": "a",
        "image": "img.png",
        "messages": [
            {"role": "user", "content": "<image>\nA short image caption:"},
            {"role": "assistant", "content": "a red circle"},
        ],
    }
    a = read_records(write(image_dir, [llava], "a.jsonl"), PH)[0]
    b = read_records(write(image_dir, [msgs], "b.jsonl"), PH)[0]
    assert a.messages == b.messages and a.media == b.media
    assert a.media == [("image", str(image_dir / "img.png"))]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(image="missing.png"), r"record 'a' \(.*data.jsonl:1\): image file not found: .*missing.png"),
        (row(answer="  "), r"record 'a' \(.*data.jsonl:1\): empty assistant response"),
        (row(prompt="no placeholder here"), r"record 'a' .*0 <image> placeholder\(s\) but 1 image item"),
        (row(prompt="<image> <image>"), r"2 <image> placeholder\(s\) but 1 image item"),
        ('{"id": "a", "conversations": [', r"data.jsonl:1: invalid JSON"),
        ({"id": "a", "image": "img.png", "conversations": []}, r"non-empty 'conversations'"),
    ],
)
def test_bad_records_name_file_line_and_record(image_dir, bad, message):
    path = write(image_dir, [bad])
    with pytest.raises(RecordError, match=message):
        read_records(path, PH)


def test_bad_records_are_skipped_and_counted_when_asked(image_dir, caplog):
    path = write(image_dir, [row("ok"), row("gone", image="missing.png"), row("empty", answer="")])
    with caplog.at_level(logging.WARNING):
        records = read_records(path, PH, skip_bad_records=True)
    assert [r.id for r in records] == ["ok"]
    assert "skipped 2 of 3 records" in caplog.text


def test_corrupt_image_fails_at_load_naming_file_and_record(image_dir, caplog):
    (image_dir / "broken.png").write_bytes(b"not a png")
    path = write(image_dir, [row("good"), row("bad", image="broken.png")])
    chat = ChatTokenizer(AutoTokenizer.from_pretrained(SHIPPED_LM))
    proc = {"image": ImageProcessor(32, (0.5,) * 3, (0.5,) * 3)}
    dataset = ConversationDataset(read_records(path, PH), chat, proc)
    with pytest.raises(
        RecordError, match=r"record 'bad' \(.*data.jsonl:2\): image file cannot be decoded: .*broken.png"
    ):
        dataset[1]
    skipping = ConversationDataset(read_records(path, PH), chat, proc, skip_bad_records=True)
    with caplog.at_level(logging.WARNING):
        batch = PaddingCollator(chat.tokenizer.pad_token_id)([skipping[0], skipping[1]])
    assert batch["ids"] == ["good"] and batch["skipped"] == 1
    assert "broken.png" in caplog.text


def test_labels_cover_exactly_the_assistant_turns(image_dir):
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_LM)
    rec = {
        "id": "multi",
        "image": "img.png",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "<image>\nWhat colour is the circle?"},
            {"role": "assistant", "content": "red"},
            {"role": "user", "content": "And its size?"},
            {"role": "assistant", "content": "large"},
        ],
    }
    record = read_records(write(image_dir, [rec]), PH)[0]
    ids, labels = ChatTokenizer(tokenizer).training_example(record)
    spans, current = [], []
    for i, lab in zip(ids.tolist(), labels.tolist()):
        if lab != IGNORE_INDEX:
            assert lab == i
            current.append(i)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    spans += [tokenizer.decode(current)] if current else []
    assert [s.strip() for s in spans] == ["red<|end|>", "large<|end|>"]


def test_generation_prompt_ends_with_the_assistant_header(image_dir):
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_LM)
    record = read_records(write(image_dir, [row()]), PH)[0]
    prompt = tokenizer.decode(ChatTokenizer(tokenizer).generation_prompt(record))
    assert prompt.endswith("<|assistant|>\n") and "a red circle" not in prompt


def test_template_that_breaks_prefixes_is_refused(image_dir):
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_LM)
    # a template that renders the generation prompt differently from the start of the answered turn
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>Sure: {% endif %}"
    )
    record = read_records(write(image_dir, [row()]), PH)[0]
    with pytest.raises(RecordError, match="record 'a'.*prefix"):
        ChatTokenizer(tokenizer).training_example(record)


def test_too_long_text_is_an_error_not_a_silent_truncation(image_dir):
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_LM)
    record = read_records(write(image_dir, [row(answer="a red circle " * 50)]), PH)[0]
    with pytest.raises(RecordError, match="record 'a'.*exceed max_length=32"):
        ChatTokenizer(tokenizer, max_length=32).training_example(record)


def test_datamodule_batches(image_data):
    dm = ImageTextDataModule(
        train_file=str(image_data / "image_caption_train.jsonl"), batch_size=4, tokenizer=str(SHIPPED_LM)
    )
    dm.bind(dm.tokenizer, {"image": ImageProcessor(64, (0.5,) * 3, (0.25,) * 3)}, {"image": "<image>"})
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["media"]["image"]["pieces"].shape == (4, 3, 64, 64)
    assert torch.equal(batch["media"]["image"]["counts"], torch.ones(4, dtype=torch.long))
