"""TensorBoard: one figure per evaluated sample (media with prompt, answer and references), no empty hp_metric."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anymal_lit.callbacks import CaptionEvalCallback
from anymal_lit.callbacks.sample_figures import sample_figure
from anymal_lit.data import ImageTextDataModule
from anymal_lit.stages import AlignmentStage
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "experiments").glob("*/*.yaml"))


def logger_args(path: Path) -> dict:
    logger = yaml.safe_load(path.read_text())["trainer"]["logger"]
    assert logger["class_path"].endswith("TensorBoardLogger"), path
    return logger["init_args"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_yamls_turn_off_the_empty_hp_metric(path):
    if yaml.safe_load(path.read_text())["trainer"].get("logger") is False:
        return  # no logger at all (e.g. the toy evaluation suite): nothing to chart
    assert logger_args(path)["default_hp_metric"] is False


def test_sample_figure_has_one_panel_per_medium_and_the_texts():
    trace = np.random.default_rng(0).normal(size=(6, 50))
    panels = [("image", np.zeros((8, 8, 3), np.uint8)), ("lines", (np.arange(50), trace, "sample"))]
    fig = sample_figure(panels, "What am I doing?", "cycling quickly", ["cycling fast", "riding a bike"])
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 6  # the IMU trace's six channels
    text = fig.texts[0].get_text()
    assert (
        "prompt: What am I doing?" in text and "model: cycling quickly" in text and "reference: riding a bike" in text
    )


def test_fit_logs_sample_figures_and_no_hp_metric(tmp_path, tiny_world):
    torch.manual_seed(0)
    args = {**logger_args(ROOT / "experiments/demo/align_image.yaml"), "save_dir": str(tmp_path)}
    callback = CaptionEvalCallback(
        data=str(tiny_world / "image_caption_val.jsonl"),
        references=str(tiny_world / "image_caption_val_coco.json"),
        with_meteor=False, limit=2, batch_size=2, max_new_tokens=4, num_logged_samples=2,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=1, logger=TensorBoardLogger(**args), callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    stage = AlignmentStage(build_model(tiny_world), optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1))
    trainer.fit(stage, ImageTextDataModule(train_file=str(tiny_world / "image_caption_train.jsonl"), batch_size=2))
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"samples/image_caption_before/0", "samples/image_caption_before/1"} <= set(tags["images"])
    assert "hp_metric" not in tags["scalars"]
    assert not tags["tensors"] or all("text" not in t for t in tags["tensors"])  # no separate TEXT-tab sample


def test_every_kind_of_scoring_target_is_shown_as_reference_lines():
    from anymal_lit.callbacks.caption_eval import _reference_texts

    assert _reference_texts(["a red circle", "a circle"]) == ["a red circle", "a circle"]  # captions, VQA answers
    choice = {"index": 3, "options": {"A": "two", "B": "three"}, "answer": "B", "category": "count"}
    assert _reference_texts(choice) == ["B. three"]  # MMBench / AI2D / MMMU targets are dicts
    assert _reference_texts({"question_type": "open", "answers": ["3.5", "3.50"]}) == ["3.5", "3.50"]
    assert _reference_texts(1) == ["1"] and _reference_texts(None) == []
