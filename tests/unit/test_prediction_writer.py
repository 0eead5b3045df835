"""The predict writer's own logic, without a Trainer: each record once, in input order, with its references, and
the reply length it hands to generation."""

import json
from types import SimpleNamespace

import torch

from anymal_lit.callbacks import PredictionWriter
from anymal_lit.data.records import Record
from anymal_lit.stages import AlignmentStage


class EchoModel(torch.nn.Module):
    """Stands in for AnyMALModel: replies "reply-<index>" and remembers the reply lengths asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.projectors = torch.nn.Linear(1, 1)
        self.lengths: list[int] = []

    def generate(self, batch: dict, max_new_tokens: int = 32) -> list[str]:
        self.lengths.append(max_new_tokens)
        return [f"reply-{i}" for i in batch["index"].tolist()]


def batch(indices: list[int]) -> dict:
    return {"ids": [f"r{i}" for i in indices], "index": torch.tensor(indices), "input_ids": torch.ones(len(indices), 2)}


def test_writer_keeps_each_record_once_in_input_order_with_references(tmp_path):
    user = {"role": "user", "content": "<image>\nWhat colour?"}
    records = [
        Record("r0", [user, {"role": "assistant", "content": "red"}], [], "f:1", {"answers": ["red", "Red"]}),
        Record("r1", [user], [], "f:2", {}),  # an open question: no reference
        Record("r2", [user, {"role": "assistant", "content": "B"}], [], "f:3", {"options": {"A": "x"}, "answer": "B"}),
        Record("r3", [user, {"role": "assistant", "content": "blue"}], [], "f:4", {"prediction": "not this"}),
        Record("r4", [user, {"role": "assistant", "content": "a cat"}], [], "f:5", {"references": ["a cat"]}),
        Record("r5", [user], [], "f:6", {}),  # its media failed to load: skipped by the collator, no line
    ]
    stage = AlignmentStage(EchoModel())
    writer = PredictionWriter(path=str(tmp_path / "out" / "p.jsonl"), max_new_tokens=5)
    trainer = SimpleNamespace(
        log_dir=None,
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        predict_dataloaders=SimpleNamespace(dataset=SimpleNamespace(records=records)),
    )
    writer.on_predict_start(trainer, stage)
    # what two processes with a padding sampler produce: interleaved shards, record 0 repeated to even them out;
    # the last batch held only records that failed to load (r5 and the repeated r0)
    for i, indices in enumerate(([4, 0], [1, 3], [2, 0], [])):
        b = batch(indices) if indices else {"skipped": 2}
        writer.write_on_batch_end(trainer, stage, stage.predict_step(b, i), None, b, i)
    writer.on_predict_epoch_end(trainer, stage)

    assert stage.model.lengths == [5, 5, 5]  # --predictions.max_new_tokens reached generation
    lines = [json.loads(line) for line in (tmp_path / "out" / "p.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["r0", "r1", "r2", "r3", "r4"]
    assert lines[0] == {"id": "r0", "prediction": "reply-0", "reference": "red", "answers": ["red", "Red"]}
    assert lines[1] == {"id": "r1", "prediction": "reply-1"}
    assert lines[2] == {"id": "r2", "prediction": "reply-2", "reference": "B", "options": {"A": "x"}, "answer": "B"}
    assert lines[3]["prediction"] == "reply-3"  # a record's own key never replaces what was generated
    assert lines[4]["references"] == ["a cat"]
    assert writer.written == tmp_path / "out" / "p.jsonl"
    assert writer.counts == {"generated": 6, "written": 5, "skipped": 1}


def test_predict_generates_64_new_tokens_unless_told():
    stage = AlignmentStage(EchoModel())
    assert stage.predict_step(batch([0, 1]), 0) == [
        {"id": "r0", "index": 0, "prediction": "reply-0"},
        {"id": "r1", "index": 1, "prediction": "reply-1"},
    ]
    assert stage.model.lengths == [64]
    assert stage.predict_step({"skipped": 2}, 1) == []  # every record of the batch skipped as bad
