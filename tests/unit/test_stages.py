import math

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from anymal_lit.data import ImageTextDataModule
from anymal_lit.stages import AlignmentStage, load_export, lr_multiplier
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model


def fit(tmp_path, world, steps=3, **stage_kwargs):
    torch.manual_seed(0)
    stage = AlignmentStage(build_model(world), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1), **stage_kwargs)
    dm = ImageTextDataModule(train_file=str(world / "image_caption_train.jsonl"), batch_size=4)
    trainer = L.Trainer(
        max_steps=steps,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
    )
    return stage, trainer, dm


def test_alignment_trains_only_the_projectors(tmp_path, tiny_world):
    stage, trainer, dm = fit(tmp_path, tiny_world)
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    trainer.fit(stage, dm)
    after = stage.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("projectors.") for k in changed)
    frozen = [k for k in before if not k.startswith("projectors.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # every frozen tensor, bit for bit


def test_checkpoint_and_export_hold_only_trainable_weights_and_chain(tmp_path, tiny_world):
    stage, trainer, dm = fit(tmp_path, tiny_world)
    trainer.fit(stage, dm)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    trainable = {f"model.{n}" for n, p in stage.model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable
    export = tmp_path / "ckpt" / "export"
    assert (export / "trainable.safetensors").is_file() and (export / "export.json").is_file()

    torch.manual_seed(123)  # a differently initialised projector
    chained = AlignmentStage(build_model(tiny_world), init_from=str(export))
    for name, param in stage.model.projectors.named_parameters():
        assert torch.equal(param, dict(chained.model.projectors.named_parameters())[name]), name


def test_resume_restores_projector_and_refuses_foreign_checkpoints(tmp_path, tiny_world):
    stage, trainer, dm = fit(tmp_path, tiny_world)
    trainer.fit(stage, dm)
    resumed, trainer2, dm2 = fit(tmp_path / "again", tiny_world, steps=4)
    trainer2.fit(resumed, dm2, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert trainer2.global_step == 4
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    ckpt["state_dict"] = {}
    with pytest.raises(KeyError, match="lacks"):
        resumed.on_load_checkpoint(ckpt)


def test_export_with_wrong_shapes_is_refused(tmp_path, tiny_world):
    stage, trainer, dm = fit(tmp_path, tiny_world, steps=1)
    trainer.fit(stage, dm)
    other = build_model(tiny_world, num_latents=6)
    with pytest.raises(ValueError, match="shapes differ"):
        load_export(other, tmp_path / "ckpt" / "export")


def test_warmup_then_cosine_to_min_ratio():
    settings = OptimizerSettings(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, 100, settings) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, settings) == pytest.approx(1.0)
    assert lr_multiplier(55, 100, settings) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(100, 100, settings) == pytest.approx(0.1)
