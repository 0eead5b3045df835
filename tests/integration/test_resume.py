"""Kill-and-resume: a run stopped mid-epoch and resumed from its last checkpoint reproduces the uninterrupted run."""

import lightning.pytorch as L
import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from anymal_lit.data import ImageTextDataModule, MixtureDataModule
from anymal_lit.stages import SFTStage
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model

pytestmark = pytest.mark.integration


class Record(Callback):
    def __init__(self, stop_at: int | None) -> None:
        self.stop_at, self.losses = stop_at, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = (outputs["loss"].item(), batch["ids"])
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            raise KeyboardInterrupt  # the job is killed (Lightning shuts down gracefully, no final checkpoint)


def mixture(world) -> MixtureDataModule:
    """Captions and instructions, weighted 2:1, 16 rows per epoch: 4 steps per epoch."""
    files = {"caption": "image_caption_train.jsonl", "sft": "image_sft_train.jsonl"}
    modules = {name: ImageTextDataModule(train_file=str(world / f)) for name, f in files.items()}
    return MixtureDataModule(modules, weights={"caption": 2, "sft": 1}, samples_per_epoch=16, batch_size=4)


def run(world, ckpt_dir, steps: int, stop_at: int | None = None, resume: str | None = None, data=None) -> dict:
    L.seed_everything(0)
    # SFT: shuffled data, LoRA dropout and NEFTune noise all draw random numbers
    stage = SFTStage(build_model(world), optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1), neftune_alpha=5.0)
    data = data or ImageTextDataModule(
        train_file=str(world / "image_caption_train.jsonl"), batch_size=4, num_workers=1
    )  # 64 records: 16 steps per epoch
    record = Record(stop_at)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record, ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)],
    )
    try:
        trainer.fit(stage, datamodule=data, ckpt_path=resume)
    except SystemExit:  # Lightning turns the interrupt into exit status 1 after shutting down
        assert stop_at is not None
    return record.losses


def test_resume_mid_epoch_matches_the_uninterrupted_run(tiny_world, tmp_path):
    full = run(tiny_world, tmp_path / "full", steps=9)
    cut = run(tiny_world, tmp_path / "cut", steps=9, stop_at=5)
    assert max(cut) == 5
    resumed = run(tiny_world, tmp_path / "cut", steps=9, resume=str(tmp_path / "cut" / "last.ckpt"))
    # killed during step 5's callbacks, before its checkpoint: the resumed run redoes step 5 from step 4's state
    assert sorted(resumed) == [5, 6, 7, 8, 9]
    for step, (loss, ids) in resumed.items():
        assert ids == full[step][1], f"step {step}: different batch after resume"
        assert loss == full[step][0], f"step {step}: loss {loss} != {full[step][0]}"


def test_mixture_resumed_in_a_later_epoch_keeps_that_epochs_order(tiny_world, tmp_path):
    # the mixture's order depends on the epoch; Lightning sets it only after a resumed run rebuilt its iterator
    full = run(tiny_world, tmp_path / "full", steps=10, data=mixture(tiny_world))
    run(tiny_world, tmp_path / "cut", steps=10, stop_at=7, data=mixture(tiny_world))  # during step 3 of epoch 1
    resumed = run(
        tiny_world, tmp_path / "cut", steps=10, resume=str(tmp_path / "cut" / "last.ckpt"), data=mixture(tiny_world)
    )
    assert sorted(resumed) == [7, 8, 9, 10]
    for step, (loss, ids) in resumed.items():
        assert ids == full[step][1], f"step {step}: different batch after resume"
        assert loss == full[step][0], f"step {step}: loss {loss} != {full[step][0]}"
