"""WebDataset shards: JSONL -> tar round trip, deterministic resampled streaming, exact resume, bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from anymal_lit.cli import main
from anymal_lit.data import ConversationDataModule, RecordError, WebDataModule, write_shards
from anymal_lit.data.webdataset import shard_record_json
from anymal_lit.stages import AlignmentStage
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model


def bound(module: ConversationDataModule, tiny_world: Path, processors: dict) -> ConversationDataModule:
    tok = ConversationDataModule(tokenizer=str(tiny_world / "models" / "tiny-lm")).tokenizer
    module.bind(tok, processors, {"image": "<image>", "imu": "<imu>"})
    return module


def web(tiny_world, processors, shards, **kw) -> WebDataModule:
    kw = {"samples_per_epoch": 24, "shuffle_buffer": 8, "batch_size": 4, **kw}
    return bound(WebDataModule(train_shards=shards, **kw), tiny_world, processors)


def ids(loader) -> list[list[str]]:
    return [batch["ids"] for batch in loader]


@pytest.fixture(scope="module")
def shards(tiny_world: Path, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("shards")
    written = write_shards(tiny_world / "interleaved_train.jsonl", str(out / "train-%06d.tar"), maxcount=20)
    assert [Path(p).name for p in written] == [f"train-{i:06d}.tar" for i in range(len(written))]
    return str(out / f"train-{{000000..{len(written) - 1:06d}}}.tar")


def test_shards_hold_every_record_and_its_media(tiny_world, tmp_path):
    src = tiny_world / "interleaved_train.jsonl"
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    written = write_shards(src, str(tmp_path / "s-%06d.tar"), maxcount=20)
    assert len(written) == -(-len(lines) // 20)
    stored = [r for path in written for r in shard_record_json(path)]
    assert [r["id"] for r in stored] == [r["id"] for r in lines]
    assert stored[0]["image"] == ["m0.png"] and stored[0]["imu"] == ["m1.csv"]
    with tarfile.open(written[0]) as tar:
        png = tar.extractfile("000000000.m0.png").read()
    assert png == (tiny_world / lines[0]["image"]).read_bytes()


def test_streamed_samples_equal_the_jsonl_samples(tiny_world, processors, shards):
    jsonl = bound(ConversationDataModule(), tiny_world, processors).dataset(str(tiny_world / "interleaved_train.jsonl"))
    by_id = {jsonl.records[i].id: jsonl[i] for i in range(len(jsonl))}
    stream = web(tiny_world, processors, shards).stream()
    seen = list(stream)
    assert len(seen) == 24
    for sample in seen:
        ref = by_id[sample["id"]]
        assert torch.equal(sample["input_ids"], ref["input_ids"]) and torch.equal(sample["labels"], ref["labels"])
        assert [m for m, _ in sample["media"]] == ["image", "imu"] == [m for m, _ in ref["media"]]
        for (_, got), (_, want) in zip(sample["media"], ref["media"]):
            assert torch.equal(got, want)


def test_stream_is_deterministic_per_seed_and_pass_and_resamples_each_epoch(tiny_world, processors, shards):
    a = web(tiny_world, processors, shards).train_dataloader()
    b = web(tiny_world, processors, shards).train_dataloader()
    first = ids(a)
    assert first == ids(b) and len(first) == 6 and all(len(x) == 4 for x in first)
    assert ids(a) != first  # the next epoch draws shards and shuffles afresh
    other = web(tiny_world, processors, shards, seed=1).train_dataloader()
    assert ids(other) != first


def test_replicas_read_disjoint_shards(tiny_world, processors, shards):
    module = web(tiny_world, processors, shards)
    seen = {}
    for rank in (0, 1):
        stream = module.stream()
        stream.replicas, stream.rank = 2, rank
        assert len(stream) == 12  # samples_per_epoch is shared by the 2 data-parallel replicas
        seen[rank] = [s["id"] for s in stream]
    assert len(seen[0]) == len(seen[1]) == 12 and not set(seen[0]) & set(seen[1])


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_mid_epoch_continues_the_stream_exactly(tiny_world, processors, shards, workers):
    full = ids(web(tiny_world, processors, shards, num_workers=workers).train_dataloader())
    loader = web(tiny_world, processors, shards, num_workers=workers).train_dataloader()
    it = iter(loader)
    head = [next(it)["ids"] for _ in range(2)]
    state = loader.state_dict()
    del it, loader
    resumed = web(tiny_world, processors, shards, num_workers=workers).train_dataloader()
    assert isinstance(resumed, StatefulDataLoader)
    resumed.load_state_dict(state)
    assert head + ids(resumed) == full


def test_bad_media_in_a_shard_names_the_shard_and_member_or_is_skipped(tiny_world, processors, tmp_path):
    src = tmp_path / "recs.jsonl"
    (tmp_path / "bad.png").write_bytes(b"not a png")
    good = json.loads((tiny_world / "image_caption_train.jsonl").read_text().splitlines()[0])
    good["image"] = str(tiny_world / good["image"])
    bad = {**good, "id": "broken", "image": str(tmp_path / "bad.png")}
    src.write_text("\n".join(json.dumps(r) for r in [good, bad, good]) + "\n")
    shard = write_shards(src, str(tmp_path / "s-%06d.tar"))[0]
    with pytest.raises(RecordError, match=r"broken.*s-000000\.tar.*000000001\.m0\.png"):
        list(web(tiny_world, processors, shard, samples_per_epoch=3, shuffle_buffer=1).stream())
    module = web(tiny_world, processors, shard, samples_per_epoch=6, shuffle_buffer=1, skip_bad_records=True)
    batches = list(module.train_dataloader())
    assert sum(b.get("skipped", 0) for b in batches) >= 1
    assert all(i != "broken" for b in batches for i in b.get("ids", []))


def test_truncated_shard_is_an_error_naming_it(tiny_world, processors, shards, tmp_path):
    first = shards.split("{")[0] + "000000.tar"
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(first).read_bytes()[:3000])
    with pytest.raises(Exception, match="cut.tar"):
        list(web(tiny_world, processors, str(cut), samples_per_epoch=8).stream())


def test_frame_folders_cannot_go_into_a_shard(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "r.jsonl").write_text(
        json.dumps({"id": "v", "video": "frames", "conversations": [{"from": "human", "value": "<video> hi"}]}) + "\n"
    )
    with pytest.raises(RecordError, match="'v'.*folder"):
        write_shards(tmp_path / "r.jsonl", str(tmp_path / "s-%06d.tar"))


def test_convert_cli_and_training_from_shards(tiny_world, tmp_path, capsys):
    main(["convert", "webdataset", "--records", str(tiny_world / "image_caption_train.jsonl"),
          "--out", str(tmp_path / "cap-%06d.tar"), "--maxcount", "32"])  # fmt: skip
    assert "wrote 2 shard(s)" in capsys.readouterr().out
    L.seed_everything(0)
    stage = AlignmentStage(build_model(tiny_world), optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1))
    data = WebDataModule(train_shards=str(tmp_path / "cap-{000000..000001}.tar"), samples_per_epoch=8, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    before = {k: v.clone() for k, v in stage.model.projectors.state_dict().items()}
    trainer.fit(stage, datamodule=data)
    assert trainer.global_step == 4
    after = stage.model.projectors.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "export" / "trainable.safetensors").is_file()
