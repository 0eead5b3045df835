"""Using a trained model: exports that know their model, load_model, chat (greedy = the eval callbacks), bundles."""

import base64
import json
import shutil
from pathlib import Path

import pytest
import torch

from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.data.records import Record
from anymal_lit.inference import MessageError, chat, load_model
from anymal_lit.inference.bundle import export_bundle
from anymal_lit.inference.chat import prepare_batch
from anymal_lit.inference.model_config import map_paths
from anymal_lit.stages.export import read_export_meta

pytestmark = pytest.mark.integration


def data_url(path: str, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def question_messages(record) -> list[dict]:
    """A VQA record's prompt as OpenAI-style parts: the image (inline), then the text after ``<image>\\n``."""
    (_, path), text = record.media[0], record.messages[0]["content"]
    assert text.startswith("<image>\n")
    parts = [{"type": "image_url", "image_url": {"url": data_url(path)}}, {"type": "text", "text": text[8:]}]
    return [{"role": "user", "content": parts}]


def eval_generations(model, jsonl: Path, limit: int, max_new_tokens: int = 8) -> dict[str, str]:
    """What the evaluation callbacks generate: the data module's generation loader, batched greedy decoding."""
    data = ConversationDataModule(eval_batch_size=8)
    data.bind(model.llm.tokenizer, model.media_processors(), chat_placeholders(model))
    out = {}
    for batch in data.dataloader(str(jsonl), 8, generation=True):
        out.update(zip(batch["ids"], model.generate(batch, max_new_tokens=max_new_tokens)))
        if len(out) >= limit:
            break
    return out


def chat_placeholders(model) -> dict[str, str]:
    from anymal_lit.inference.chat import placeholders

    return placeholders(model)


@pytest.fixture(scope="module")
def dpo_model(trained_exports):
    return load_model(trained_exports["dpo"])


def test_exports_record_the_model_and_load_without_the_yaml(trained_exports, dpo_model):
    meta = read_export_meta(trained_exports["dpo"])
    llm = meta["model"]["init_args"]["llm"]["init_args"]
    assert Path(llm["pretrained"]).is_absolute() and Path(llm["pretrained"]).is_dir()
    assert set(meta["model"]["init_args"]["encoders"]) == {"image", "audio", "video", "imu"}
    assert meta["lora"]["r"] == 8 and "data" in meta
    # DPO trains only LoRA, yet its export holds the projectors too (those of the SFT export it started from)
    from safetensors.torch import load_file

    dpo = load_file(str(trained_exports["dpo"] / "trainable.safetensors"))
    sft = load_file(str(trained_exports["sft"] / "trainable.safetensors"))
    projector_keys = [k for k in sft if k.startswith("projectors.")]
    assert projector_keys and all(torch.equal(dpo[k], sft[k]) for k in projector_keys)
    own = dict(dpo_model.named_parameters())
    assert all(torch.equal(own[k], v) for k, v in dpo.items())  # every exported tensor is in the loaded model
    assert not dpo_model.training and not any(p.requires_grad for p in dpo_model.parameters())


def test_greedy_chat_equals_what_the_eval_callbacks_generate(tiny_world, dpo_model):
    from anymal_lit.data.records import read_records

    jsonl = tiny_world / "image_vqa_val.jsonl"
    expected = eval_generations(dpo_model, jsonl, limit=8)
    assert all(expected.values())  # the shipped chat LM answers something
    records = {r.id: r for r in read_records(jsonl, chat_placeholders(dpo_model))}
    for rid, text in expected.items():
        assert chat(dpo_model, question_messages(records[rid]), max_new_tokens=8) == text
    messages = question_messages(records[next(iter(expected))])
    streamed = list(chat(dpo_model, messages, max_new_tokens=8, stream=True))
    assert "".join(streamed).strip() == chat(dpo_model, messages, max_new_tokens=8)


def test_chat_takes_every_modality_in_one_message_and_several_turns(tiny_world, dpo_model):
    def first(name: str, key: str) -> str:
        record = json.loads((tiny_world / name).read_text().splitlines()[0])
        path = record[key] if isinstance(record[key], str) else record[key][0]
        return str((tiny_world / name).parent / path)

    parts = [
        {"type": "text", "text": "Describe all of these."},
        {"type": "imu", "imu": first("imu_caption_val.jsonl", "imu")},
        {"type": "image_url", "image_url": {"url": first("image_caption_val.jsonl", "image")}},
        {"type": "input_audio", "input_audio": {
            "data": base64.b64encode(Path(first("audio_caption_val.jsonl", "audio")).read_bytes()).decode(),
            "format": "wav"}},
        {"type": "video", "video": first("video_caption_val.jsonl", "video")},
    ]  # fmt: skip
    reply = chat(dpo_model, [{"role": "user", "content": parts}], max_new_tokens=6)
    assert isinstance(reply, str) and reply
    turns = [{"role": "user", "content": parts}, {"role": "assistant", "content": reply},
             {"role": "user", "content": "And what colour is it?"}]  # fmt: skip
    assert isinstance(chat(dpo_model, turns, max_new_tokens=6), str)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"type": "pdf", "pdf": "x"}], "unknown part type 'pdf'"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], "undecodable base64"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}], "image"),
        ([{"type": "image_url", "image_url": {"url": "no/such/file.png"}}], "not found"),
        ([{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}], "remote URLs"),
        ("What is <image>?", "send media as content parts"),
        ([], "non-empty list of parts"),
    ],
)
def test_bad_messages_are_named(dpo_model, content, message):
    with pytest.raises(MessageError, match=message):
        chat(dpo_model, [{"role": "user", "content": content}], max_new_tokens=2)


@pytest.mark.slow
@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_bundle_generates_what_the_trained_model_does_from_anywhere(tmp_path, tiny_world, trained_exports, dpo_model,
                                                                    merge):  # fmt: skip
    bundle = export_bundle(trained_exports["dpo"], tmp_path / "bundle", merge_lora=merge)
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle, moved)
    shutil.rmtree(bundle)
    meta = json.loads((moved / "bundle.json").read_text())
    assert meta["lora_merged"] == merge and (moved / "lora").is_dir() != merge
    paths = []
    map_paths(meta["model"], lambda p: paths.append(p) or p)
    assert paths and not meta["external"] and not any(Path(p).is_absolute() for p in paths)  # all inside the bundle
    assert (moved / "README.md").read_text().startswith("# AnyMAL model")
    loaded = load_model(moved)
    jsonl = tiny_world / "image_vqa_val.jsonl"
    assert eval_generations(loaded, jsonl, limit=12) == eval_generations(dpo_model, jsonl, limit=12)


def test_load_model_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a stage export"):
        load_model(tmp_path)
    (tmp_path / "export.json").write_text(json.dumps({"stage": "align", "tensors": []}))
    with pytest.raises(ValueError, match="records no model configuration"):
        load_model(tmp_path)


def test_sampled_replies_are_seeded_and_written_back_with_each_row(trained_exports, dpo_model, tiny_world, tmp_path):
    from anymal_lit.data.records import read_records
    from anymal_lit.inference.sampling import sample_replies
    from tests.conftest import run_cli as cli_run

    records = read_records(tiny_world / "image_caption_val.jsonl", chat_placeholders(dpo_model))[:3]
    kwargs = {"num_samples": 3, "max_new_tokens": 8, "progress": False}
    first = sample_replies(dpo_model, records, seed=1, **kwargs)
    assert [len(r) for r in first] == [3, 3, 3]
    assert sample_replies(dpo_model, records, seed=1, **kwargs) == first  # the same seed gives the same replies
    assert sample_replies(dpo_model, records, seed=2, **kwargs) != first
    greedy = sample_replies(dpo_model, records, temperature=0, **kwargs)
    batch = prepare_batch(dpo_model, [Record(r.id, r.messages[:-1], r.media, r.source) for r in records])
    assert greedy == [[text] * 3 for text in dpo_model.generate(batch, max_new_tokens=8)]  # temperature 0: greedy
    out = tmp_path / "samples.jsonl"
    cli_run("sample", "--model", str(trained_exports["dpo"]), "--data", str(tiny_world / "image_caption_val.jsonl"),
            "--out", str(out), "--limit", "2", "--num-samples", "2", "--max-new-tokens", "4", cwd=tmp_path)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = [json.loads(line) for line in (tiny_world / "image_caption_val.jsonl").read_text().splitlines()][:2]
    assert [{k: v for k, v in r.items() if k != "samples"} for r in rows] == source  # every field kept
    assert all(len(r["samples"]) == 2 for r in rows)
