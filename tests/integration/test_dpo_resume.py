"""A DPO run with a precomputed reference, killed mid-epoch and resumed, keeps the reference it started with."""

import shutil

import lightning.pytorch as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import SingleDeviceStrategy

from anymal_lit.data import PreferenceDataModule
from anymal_lit.stages import DPOStage
from anymal_lit.stages.dpo_reference import REFERENCE_FILE, split_loaders
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model
from tests.integration.test_resume import Record
from tests.unit.test_dpo_reference import preference_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(world, files, ckpt_dir, steps: int, stop_at: int | None = None, resume: str | None = None):
    L.seed_everything(0)
    # shuffled pairs and LoRA dropout draw random numbers; lr high enough that two steps move the policy
    stage = DPOStage(build_model(world), optimizer=OptimizerSettings(lr=5e-2, warmup_steps=1), reference="precomputed")
    dm = PreferenceDataModule(train_file=files["train"], val_file=files["val"], batch_size=2)  # 4 steps per epoch
    record = Record(stop_at)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[record, ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)],
    )  # fmt: skip
    try:
        trainer.fit(stage, datamodule=dm, ckpt_path=resume)
    except SystemExit:  # the interrupt, after Lightning shut down
        assert stop_at is not None
    return stage, record.losses


def test_resumed_dpo_keeps_the_checkpointed_reference_and_matches_the_uninterrupted_run(
    tiny_world, tmp_path, monkeypatch
):
    files = preference_files(tiny_world, tmp_path, train=8, val=4)
    full, full_losses = run(tiny_world, files, tmp_path / "full", steps=4)
    run(tiny_world, files, tmp_path / "cut", steps=4, stop_at=2)
    (tmp_path / "cut" / "export" / REFERENCE_FILE).unlink()  # the table can only come from the checkpoint now
    shutil.copytree(tmp_path / "cut", tmp_path / "cut_deferred")
    resumed, losses = run(tiny_world, files, tmp_path / "cut", steps=4, resume=str(tmp_path / "cut" / "last.ckpt"))
    assert sorted(losses) == [2, 3, 4]
    for step, (loss, ids) in losses.items():
        assert ids == full_losses[step][1], f"step {step}: different batch after resume"
        assert loss == full_losses[step][0], f"step {step}: loss {loss} != {full_losses[step][0]}"
    assert resumed.reference_model.restored and len(resumed.reference_logps) == 12
    assert resumed.reference_logps == full.reference_logps
    # what recomputing would have given: the trained policy is no longer the reference
    recomputed = resumed.reference_model.compute(resumed, split_loaders(resumed))
    assert recomputed.keys() == resumed.reference_logps.keys()
    assert all(abs(recomputed[k][0] - v[0]) > 1e-3 for k, v in resumed.reference_logps.items())

    # FSDP and DeepSpeed restore a checkpoint only after on_fit_start (the weights are still the initial ones then)
    monkeypatch.setattr(SingleDeviceStrategy, "restore_checkpoint_after_setup", property(lambda self: True))
    deferred, losses = run(
        tiny_world, files, tmp_path / "cut_deferred", steps=4, resume=str(tmp_path / "cut_deferred" / "last.ckpt")
    )
    assert {step: loss for step, (loss, _) in losses.items()} == {s: full_losses[s][0] for s in (2, 3, 4)}
    assert deferred.reference_model.restored and deferred.reference_logps == full.reference_logps
