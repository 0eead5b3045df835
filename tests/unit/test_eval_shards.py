"""Evaluation shards: every process generates for the same number of batches (generation under FSDP / ZeRO-3 is a
collective), and together they cover every record."""

from types import SimpleNamespace

import pytest

from anymal_lit.callbacks import QAEvalCallback


@pytest.mark.parametrize(("records", "world"), [(9, 2), (10, 4), (1, 2), (7, 3)])
def test_every_rank_gets_an_equal_share_covering_all_records(records, world):
    callback = QAEvalCallback(data="unused.jsonl", batch_size=2)
    loader = SimpleNamespace(dataset=list(range(records)), collate_fn=lambda rows: rows)
    datamodule = SimpleNamespace(dataloader=lambda *args, **kwargs: loader)
    shares = []
    for rank in range(world):
        trainer = SimpleNamespace(datamodule=datamodule, global_rank=rank, world_size=world)
        shares.append([row for batch in callback._loader(trainer) for row in batch])
    assert len({len(share) for share in shares}) == 1  # same length, so the same number of batches
    assert sorted({row for share in shares for row in share}) == list(range(records))


def test_a_record_without_a_target_fails_every_rank_before_generating():
    """A rank that met the bad record only while generating would leave the others waiting in a collective."""
    from anymal_lit.data.records import Record

    callback = QAEvalCallback(data="qa.jsonl", batch_size=2)
    good = Record("q0", [{"role": "user", "content": "?"}, {"role": "assistant", "content": "red"}], [], "qa.jsonl:1")
    bad = Record("q1", [{"role": "user", "content": "?"}], [], "qa.jsonl:2")

    def never(*args, **kwargs):
        raise AssertionError("generation started before every target was checked")

    datamodule = SimpleNamespace(records=lambda *args, **kwargs: [good, bad], dataloader=never)
    trainer = SimpleNamespace(datamodule=datamodule, global_rank=1, world_size=2)
    with pytest.raises(ValueError, match="'q1'.*no 'answers'"):
        callback.evaluate(trainer, SimpleNamespace(training=False))
