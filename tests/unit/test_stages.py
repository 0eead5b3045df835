import copy
import math

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from anymal_lit.data import ImageTextDataModule
from anymal_lit.stages import AlignmentStage, OptimizerSettings, load_export, lr_multiplier
from tests.conftest import build_random_model


def fit(tmp_path, data, steps=3, callbacks=(), **stage_kwargs):
    """An alignment stage of a random tiny model (seed 0: the same frozen LLM and encoder each call) and its trainer."""
    torch.manual_seed(0)
    stage = AlignmentStage(build_random_model(), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1), **stage_kwargs)
    dm = ImageTextDataModule(train_file=str(data / "image_caption_train.jsonl"), batch_size=4)
    trainer = L.Trainer(
        max_steps=steps,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True), *callbacks],
    )
    return stage, trainer, dm


def test_alignment_trains_only_the_projectors(tmp_path, image_data):
    stage, trainer, dm = fit(tmp_path, image_data)
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    trainer.fit(stage, dm)
    after = stage.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("projectors.") for k in changed)
    frozen = [k for k in before if not k.startswith("projectors.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # every frozen tensor, bit for bit


def test_checkpoint_and_export_hold_only_trainable_weights_and_chain(tmp_path, image_data):
    stage, trainer, dm = fit(tmp_path, image_data)
    trainer.fit(stage, dm)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    trainable = {f"model.{n}" for n, p in stage.model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable
    export = tmp_path / "ckpt" / "export"
    assert (export / "trainable.safetensors").is_file() and (export / "export.json").is_file()

    torch.manual_seed(123)  # a differently initialised projector
    chained = AlignmentStage(build_random_model(), init_from=str(export))
    for name, param in stage.model.projectors.named_parameters():
        assert torch.equal(param, dict(chained.model.projectors.named_parameters())[name]), name


class AtTrainStart(L.Callback):
    """Records the projector weights and the optimizer state when training (re)starts, i.e. after a restore."""

    def on_train_start(self, trainer, pl_module):
        self.weights = {f"model.projectors.{k}": v.clone() for k, v in pl_module.model.projectors.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())  # its tensors change in place later


def test_resume_restores_projector_and_optimizer_and_refuses_foreign_checkpoints(tmp_path, image_data):
    stage, trainer, dm = fit(tmp_path, image_data)
    fresh = {f"model.projectors.{k}": v.clone() for k, v in stage.model.projectors.state_dict().items()}
    trainer.fit(stage, dm)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    saved = ckpt["state_dict"]
    assert saved.keys() == fresh.keys()
    assert all(not torch.equal(saved[k], fresh[k]) for k in saved if k.endswith("latents"))  # it trained

    seen = AtTrainStart()
    resumed, trainer2, dm2 = fit(tmp_path / "again", image_data, steps=4, callbacks=[seen])
    assert all(torch.equal(resumed.model.state_dict()[k[6:]], fresh[k]) for k in fresh)  # a fresh init before
    trainer2.fit(resumed, dm2, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert seen.weights.keys() == saved.keys()
    for key, value in saved.items():  # the saved weights, bit for bit, when training goes on
        assert torch.equal(seen.weights[key], value), key
    saved_moments = ckpt["optimizer_states"][0]["state"]
    assert saved_moments and seen.optimizer["state"].keys() == saved_moments.keys()
    for index, state in saved_moments.items():
        assert seen.optimizer["state"][index]["step"] == 3
        assert torch.equal(seen.optimizer["state"][index]["exp_avg"], state["exp_avg"]), index
    assert trainer2.global_step == 4
    ckpt["state_dict"] = {}
    with pytest.raises(KeyError, match="lacks"):
        resumed.on_load_checkpoint(ckpt)


def test_export_with_wrong_shapes_is_refused(tmp_path, image_data):
    stage, trainer, dm = fit(tmp_path, image_data, steps=1)
    trainer.fit(stage, dm)
    other = build_random_model(num_latents=6)
    with pytest.raises(ValueError, match="shapes differ"):
        load_export(other, tmp_path / "ckpt" / "export")


def test_warmup_then_cosine_to_min_ratio():
    settings = OptimizerSettings(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, 100, settings) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, settings) == pytest.approx(1.0)
    assert lr_multiplier(55, 100, settings) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(100, 100, settings) == pytest.approx(0.1)
