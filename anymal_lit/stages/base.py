"""The shared LightningModule of the three training stages."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_info

from anymal_lit.collectives import gathered_state
from anymal_lit.losses import IGNORE_INDEX
from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.stages.export import load_export, read_export_meta, trainable_state, write_export
from anymal_lit.stages.optimization import OptimizerSettings, build_optimizer
from anymal_lit.strategies import shard_fsdp2


def _rng_states() -> dict[str, Any]:
    """torch/numpy/python RNG states in types ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    states = _collect_rng_states()
    name, keys, pos, has_gauss, cached = states["numpy"]
    states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    name, keys, pos, has_gauss, cached = states["numpy"]
    _set_rng_states({**states, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)})


class AnyMALStage(L.LightningModule):
    """Shared training loop: encode -> project -> splice -> LLM loss, AdamW, checkpoints of trainable weights only.

    Subclasses choose what trains (:meth:`configure_trainable`) and may change the loss and schedule. Lightning
    checkpoints and the ``export/`` folder written beside them hold only the trainable parameters (the frozen LLM
    and encoders are rebuilt from their own checkpoints), so the next stage's ``init_from`` loads them.

    Args:
        model: The AnyMAL model (LLM, encoders, projectors).
        optimizer: AdamW and its learning-rate schedule.
        init_from: An export (folder or ``.safetensors``) of a previous stage to initialise the trainable weights.
    """

    stage_name = "stage"

    def __init__(
        self,
        model: AnyMALModel,
        optimizer: OptimizerSettings = OptimizerSettings(),
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.hparams["optimizer"] = optimizer.as_dict()  # plain data: checkpoints load with weights_only
        self.optimizer_settings = optimizer
        self.model = model
        self.configure_trainable()
        if init_from is not None:
            self.check_export(init_from, read_export_meta(init_from))
            load_export(self.model, init_from)
        self.strict_loading = False  # checkpoints hold only trainable weights (checked in on_load_checkpoint)
        self._sharded = False
        self._last_batch: dict[str, Any] | None = None  # replayed at zero weight when a batch is all skipped
        self.model_config: dict[str, Any] | None = None
        """The model's ``class_path``/``init_args`` (set by the CLI); exports record it for ``load_model``."""
        self.data_config: dict[str, Any] | None = None
        """The data module's ``class_path``/``init_args`` (set by the CLI); exports record it for model cards."""

    def check_export(self, path: str, meta: dict[str, Any]) -> None:
        """Refuse an ``init_from`` export (``meta``: its ``export.json``) this stage cannot continue; shapes are
        checked on loading, settings that leave the shapes alike are checked here."""

    def export_meta(self) -> dict[str, Any]:
        """What ``export.json`` records besides the tensors (the next stage's :meth:`check_export` reads it)."""
        meta = {"stage": self.stage_name, "global_step": self.global_step, "modalities": self.model.modalities}
        if self.model_config:
            meta["model"] = self.model_config
        if self.data_config:
            meta["data"] = self.data_config
        return meta

    @abstractmethod
    def configure_trainable(self) -> None:
        """Set ``requires_grad`` on exactly the parameters this stage trains."""

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "bind"):
            datamodule.bind(
                self.model.llm.tokenizer, self.model.media_processors(), self._placeholders(), dict(self.model.encoders)
            )

    def _placeholders(self) -> dict[str, str]:
        tokenizer = self.model.llm.tokenizer
        return {m: tokenizer.convert_ids_to_tokens(i) for m, i in self.model.llm.placeholder_ids.items()}

    # ---- steps -------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch, skipped = self.batch_to_train(batch)
        loss = self.model(batch)["loss"]
        if skipped:
            return loss * 0.0
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def batch_to_train(self, batch: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The batch this rank computes on, and whether its own batch was all skipped (bad samples).

        Logs ``train/skipped_records`` (summed over steps and ranks) on every step of every rank, so the epoch-end
        sync is a collective that all ranks join. A batch with no sample left cannot simply be dropped: under DDP
        the other ranks would wait for its gradients, under FSDP2 / ZeRO-3 for the parameter gathers of its forward
        and backward. So it is replaced by this rank's last batch (or a two-token text placeholder before the first
        one), whose loss the caller multiplies by 0: the same modules run and every trainable parameter gets a
        zero gradient, so the step equals one where this rank had no data. The last batch, rather than a text-only
        placeholder, also runs the media encoders that ZeRO-3 gathers module by module on the other ranks.
        """
        self.log("train/skipped_records", float(batch.get("skipped", 0)), reduce_fx="sum", on_step=False,
                 on_epoch=True, sync_dist=True, batch_size=1)  # fmt: skip
        if "input_ids" in batch:
            self._last_batch = batch
            return batch, False
        if self._last_batch is None:
            return self.placeholder_batch(), True
        return self._last_batch, True

    def placeholder_batch(self) -> dict[str, Any]:
        """Two identical rows of two tokens (one labelled), as one preference pair: a valid batch for every stage."""
        tokenizer = self.model.llm.tokenizer
        token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        input_ids = torch.full((2, 2), token, dtype=torch.long, device=self.device)
        labels = input_ids.clone()
        labels[:, 0] = IGNORE_INDEX
        mask = torch.ones_like(input_ids)
        return {"ids": ["placeholder"] * 2, "input_ids": input_ids, "attention_mask": mask, "labels": labels,
                "media": {}, "num_pairs": 1}  # fmt: skip

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:  # all skipped: the same forward on other data, unlogged (see batch_to_evaluate)
            self.model(self.batch_to_evaluate())
            return
        loss = self.model(batch)["loss"]
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:
            self.model(self.batch_to_evaluate())
            return
        loss = self.model(batch)["loss"]
        self.log("test/loss", loss, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def batch_to_evaluate(self) -> dict[str, Any]:
        """What a rank whose evaluation batch was all skipped computes on, without logging: under FSDP2 / ZeRO-3 the
        other ranks' forwards gather parameters, so this rank must run one too (its last training batch, else the
        text placeholder)."""
        return self._last_batch if self._last_batch is not None else self.placeholder_batch()

    # longest reply ``predict_step`` generates; ``anymal-lit predict --predictions.max_new_tokens N`` changes it
    predict_max_new_tokens: int = 64

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Greedy replies to the batch's prompts: ``[{"id", "index" (in the dataset), "prediction"}]``."""
        if "input_ids" not in batch:  # every record of the batch was skipped as bad
            return []
        texts = self.model.generate(batch, max_new_tokens=self.predict_max_new_tokens)
        rows = zip(batch["ids"], batch["index"].tolist(), texts)
        return [{"id": rid, "index": index, "prediction": text} for rid, index, text in rows]

    # ---- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}: nothing to train (no parameter requires grad)")
        opt, sched = build_optimizer(params, self.optimizer_settings, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints and exports -------------------------------------------------------------------------------
    def _trainable_keys(self) -> set[str]:
        return {f"model.{name}" for name in trainable_state(self.model)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self._trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        # this process's RNG streams (NEFTune noise, dropout), so a resumed run draws what the uninterrupted one would
        checkpoint[f"rng_states_rank{self.global_rank}"] = _rng_states()
        self.write_export()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # DeepSpeed restores the weights inside its engine and hands over the rest of the checkpoint only
        state = checkpoint.get("state_dict")
        missing = sorted(self._trainable_keys() - set(state)) if state is not None else []
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors of this stage, e.g. {missing[:3]}")
        self._resume_rng = checkpoint.get(f"rng_states_rank{self.global_rank}")

    def on_train_start(self) -> None:
        if getattr(self, "_resume_rng", None) is not None:  # restored last, after loaders and optimizers are built
            _restore_rng_states(self._resume_rng)
            self._resume_rng = None

    def export_dir(self) -> Path:
        """``export/`` beside the checkpoints (or in the log folder). Without a checkpoint folder this broadcasts
        (``Trainer.log_dir``), so call it on every rank, never inside a rank-0 branch."""
        callback = self.trainer.checkpoint_callback
        base = getattr(callback, "dirpath", None) or self.trainer.log_dir or self.trainer.default_root_dir
        return Path(base) / "export"

    def write_export(self) -> None:
        # under FSDP / ZeRO-3 every rank holds a shard: gather whole tensors on all ranks, rank 0 writes them. The
        # projectors are written even where they are frozen (DPO), so every export holds a whole usable model
        named = self.model.named_parameters()
        state = gathered_state({n: p for n, p in named if p.requires_grad or n.startswith("projectors.")})
        folder = self.export_dir()  # every rank: it may broadcast
        if self.trainer.is_global_zero:
            folder = write_export(state, folder, self.export_meta())
            rank_zero_info(f"exported trainable weights to {folder}")

    def configure_model(self) -> None:
        """Shard the model when the strategy is FSDP2 (``conf/strategy/fsdp.yaml``); other strategies need nothing."""
        if isinstance(getattr(self._trainer, "strategy", None), ModelParallelStrategy) and not self._sharded:
            if self.device_mesh["tensor_parallel"].size() > 1:  # conf/strategy/fsdp_tp.yaml: split layers first
                from anymal_lit.tensor_parallel import parallelize_llm

                parallelize_llm(self.model.llm.model, self.device_mesh["tensor_parallel"])
            shard_fsdp2(self.model, self.model.llm.model, self.device_mesh["data_parallel"])
            self._sharded = True

    def on_train_end(self) -> None:
        self.write_export()


class AlignmentStage(AnyMALStage):
    """Stage 1, modality alignment: only the projectors train; the LLM and the encoders stay frozen.

    Loss: next-token cross-entropy on the paired text (the caption), as in AnyMAL section 3.1. Arguments as
    :class:`AnyMALStage` (paper, 13B: lr 2e-4).
    """

    stage_name = "align"

    def configure_trainable(self) -> None:
        self.model.requires_grad_(False)
        self.model.projectors.requires_grad_(True)
