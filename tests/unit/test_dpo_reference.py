"""DPO's precomputed reference: one entry per split + id + content, read back from its JSON file when it matches."""

import json
import math
from pathlib import Path

import lightning.pytorch as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from anymal_lit.data import PreferenceDataModule
from anymal_lit.stages import DPOStage
from anymal_lit.stages.dpo_reference import REFERENCE_FILE, PrecomputedReference, read_table
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model


def preference_files(world: Path, tmp_path: Path, train: int, val: int) -> dict[str, str]:
    """The toy world's preference pairs, cut short; its train and val files use the same ids (``0-pc``, ...) for
    other pictures and responses."""
    files = {}
    for split, count in (("train", train), ("val", val)):
        rows = [json.loads(line) for line in (world / f"image_preference_{split}.jsonl").read_text().splitlines()]
        for row in rows:
            row["image"] = str(world / row["image"])
        path = tmp_path / f"prefs_{split}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows[:count]))
        files[split] = str(path)
    return files


def fit(world: Path, files: dict[str, str], root: Path, steps: int = 1, sanity: int = 0) -> tuple[DPOStage, list]:
    """A short precomputed-reference DPO fit; returns the stage and its ``(split, loss)`` steps."""
    L.seed_everything(0)
    stage = DPOStage(build_model(world), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1), reference="precomputed")
    steps_seen = []
    original = stage._dpo_step

    def record(batch, split):
        loss = original(batch, split)
        steps_seen.append((split, loss.item()))
        return loss

    stage._dpo_step = record
    dm = PreferenceDataModule(train_file=files["train"], val_file=files.get("val"), batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=sanity, val_check_interval=steps,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True)],
    )  # fmt: skip
    trainer.fit(stage, dm)
    return stage, steps_seen


def test_a_validation_set_uses_its_own_entries_where_ids_repeat_across_splits(tiny_world, tmp_path):
    files = preference_files(tiny_world, tmp_path, train=4, val=4)
    stage, steps = fit(tiny_world, files, tmp_path / "ckpt", steps=1, sanity=-1)
    table = stage.reference_logps
    assert len(table) == 4 + 4
    ids = {split: [json.loads(line)["id"] for line in open(files[split])] for split in ("train", "val")}
    shared = set(ids["train"]) & set(ids["val"])
    assert shared == {"0-pc", "0-pq", "1-pc", "1-pq"}  # the toy world reuses its ids across splits
    for rid in shared:
        (train_key,) = [k for k in table if k.startswith(f"train/{rid}/")]
        (val_key,) = [k for k in table if k.startswith(f"val/{rid}/")]
        assert train_key.split("/")[2] != val_key.split("/")[2]  # other content, other hash
        assert table[train_key] != table[val_key]
    # before any step the policy is the reference: with each split's own entries every loss is log 2 (the sanity
    # check runs in eval mode; the first training step's LoRA branch is still zero, so dropout cannot move it)
    sanity = [loss for split, loss in steps if split == "val"][:1]
    train = [loss for split, loss in steps if split == "train"]
    assert sanity and sanity[0] == pytest.approx(math.log(2), abs=1e-5)
    assert train[0] == pytest.approx(math.log(2), abs=1e-4)
    assert "val/dpo_loss" in stage.trainer.callback_metrics  # the validation after the step found its entries too
    # a pair of a split the table was not made for is named, not looked up elsewhere
    batch = next(iter(stage.trainer.datamodule.val_dataloader()))
    ref_c, _ = stage._reference_logps(batch, "val")
    assert ref_c.tolist() == [table[k][0] for k in table if k.startswith("val/")]
    with pytest.raises(KeyError, match=r"no precomputed DPO reference log-probs for 4 pair\(s\) of the test split"):
        stage._reference_logps(batch, "test")


@pytest.mark.slow
def test_the_saved_table_is_read_back_when_it_matches_and_recomputed_when_not(tiny_world, tmp_path, monkeypatch):
    files = preference_files(tiny_world, tmp_path, train=8, val=4)
    ckpt = tmp_path / "ckpt"
    first, first_steps = fit(tiny_world, files, ckpt, steps=2)
    path = ckpt / "export" / REFERENCE_FILE
    saved = json.loads(path.read_text())
    assert {k: tuple(v) for k, v in saved["logps"].items()} == first.reference_logps
    computed = []
    compute = PrecomputedReference.compute
    monkeypatch.setattr(PrecomputedReference, "compute", lambda self, *a: computed.append(1) or compute(self, *a))

    # same data, same init_from: the file is used as it is (values shifted here to see where they came from)
    doctored = {k: [c + 1.0, r] for k, (c, r) in saved["logps"].items()}
    path.write_text(json.dumps({**saved, "logps": doctored}))
    second, _ = fit(tiny_world, files, ckpt)
    assert not computed
    assert second.reference_logps == {k: tuple(v) for k, v in doctored.items()}

    # the same values read back give the same run as computing them (computing leaves the global RNG and every
    # module's train/eval mode as they were)
    path.write_text(json.dumps(saved))
    third, third_steps = fit(tiny_world, files, ckpt, steps=2)
    assert not computed and third_steps == first_steps

    # keys that do not match this run's pairs (here: an id whose content changed): recomputed, and the file rewritten
    path.write_text(
        json.dumps({**saved, "logps": {k.replace("train/0-pc/", "train/0-pc/0"): v for k, v in doctored.items()}})
    )
    again, _ = fit(tiny_world, files, ckpt)
    assert computed == [1] and again.reference_logps == first.reference_logps
    assert json.loads(path.read_text()) == saved
    # a table made from another init_from export is not read either
    needed = set(saved["logps"])
    assert read_table(path, None, needed) is not None
    assert read_table(path, "sha256 of another export", needed) is None
    assert read_table(path, None, needed | {"val/new/0123456789abcdef"}) is None
