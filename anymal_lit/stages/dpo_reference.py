"""Where DPO's reference log-probs come from: a frozen copy of the SFT adapter, or a table computed before training."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from anymal_lit.collectives import gather_objects
from anymal_lit.data.preference import pair_hash
from anymal_lit.models.anymal import AnyMALModel
from anymal_lit.models.lora import REFERENCE_ADAPTER, add_reference_adapter
from anymal_lit.stages.export import WEIGHTS_FILE

if TYPE_CHECKING:
    from anymal_lit.stages.dpo import DPOStage

REFERENCE_FILE = "reference_logps.json"
TABLE_FORMAT = "anymal-lit dpo reference logps v1"
CHECKPOINT_KEY = "dpo_reference_logps"


class DPOReference(nn.Module):
    """The reference model's summed log-probs of each pair's chosen and rejected response."""

    def logps(self, stage: DPOStage, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chosen, rejected)`` reference log-probs of the batch's ``num_pairs`` pairs, from ``split``'s data."""
        raise NotImplementedError

    def prepare(self, stage: DPOStage) -> None:
        """Called when fitting starts, before the first training step (the policy still equals the reference)."""

    def checkpoint_state(self) -> dict[str, Any] | None:
        """What a Lightning checkpoint must hold to resume with the same reference (None: nothing)."""
        return None

    def load_checkpoint_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`checkpoint_state` from a checkpoint."""


class FrozenAdapterReference(DPOReference):
    """The reference is a frozen copy of the SFT LoRA adapter (and of the projectors, if the policy's train) on the
    policy's own frozen base model: one extra no-grad forward per step, no second LLM in memory. It is rebuilt from
    ``init_from`` whenever the stage is built, so a resumed run has it too.

    Args:
        model: The policy's model; a frozen ``reference`` adapter is added to its LLM.
        copy_projectors: Keep a frozen copy of the projectors (when the policy trains its own).
    """

    def __init__(self, model: AnyMALModel, copy_projectors: bool = False) -> None:
        super().__init__()
        add_reference_adapter(model.llm)
        self.projectors = copy.deepcopy(model.projectors).requires_grad_(False) if copy_projectors else None

    @contextmanager
    def active(self, stage: DPOStage) -> Iterator[None]:
        """Swap in the reference adapter (and projectors) for a no-grad forward."""
        peft_model = stage.model.llm.model
        policy_projectors, neftune_alpha = stage.model.projectors, stage.model.neftune_alpha
        peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
        if self.projectors is not None:
            stage.model.projectors = self.projectors
        stage.model.neftune_alpha = 0.0  # NEFTune regularises the policy; the reference is the noiseless SFT model
        try:
            yield
        finally:
            stage.model.neftune_alpha = neftune_alpha
            stage.model.projectors = policy_projectors
            peft_model.set_adapter("default")
            stage.configure_trainable()

    def logps(self, stage: DPOStage, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), self.active(stage):
            return stage._logps(batch)


def pair_key(split: str, record_id: str, content_hash: str) -> str:
    """A table entry's key: the same id in two splits, or with other content, is another pair."""
    return f"{split}/{record_id}/{content_hash}"


class PrecomputedReference(DPOReference):
    """A table of reference log-probs computed once with the initial (= SFT, reference) weights when fitting starts,
    for every pair of every split the data module has (train, val, test), keyed by :func:`pair_key`.

    The table is written to ``reference_logps.json`` in the export folder and read back from there instead of being
    recomputed when it was made from the same ``init_from`` export and holds every pair of this run's data; it is
    also saved in every Lightning checkpoint, and a resumed run takes it from there (recomputing it from the
    already-trained policy would give another reference). Training then needs no reference forward at all.

    Args:
        init_from: The export the initial weights come from (its content identifies the table's reference).
    """

    def __init__(self, init_from: str | None = None) -> None:
        super().__init__()
        self.init_from = init_from
        self.table: dict[str, tuple[float, float] | None] = {}
        self.restored = False  # the table came from a checkpoint

    # ---- lookups -----------------------------------------------------------------------------------------------
    def logps(self, stage: DPOStage, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = batch["num_pairs"]
        keys = [pair_key(split, str(i), h) for i, h in zip(batch["ids"][:n], batch["pair_hashes"][:n])]
        missing = [k for k in keys if self.table.get(k) is None]
        if missing:
            raise KeyError(
                f"no precomputed DPO reference log-probs for {len(missing)} pair(s) of the {split} split, e.g. "
                f"{missing[0]!r} (split/id/content hash): the table covers the data module's files when fitting "
                "started; use `reference: adapter` to score other data"
            )
        ref = torch.tensor([self.table[k] for k in keys], device=stage.device, dtype=torch.float32)
        return ref[:, 0], ref[:, 1]

    # ---- when fitting starts -----------------------------------------------------------------------------------
    def prepare(self, stage: DPOStage) -> None:
        loaders = split_loaders(stage)
        needed = {pair_key(split, r.id, pair_hash(r)) for split, ls in loaders.items() for lo in ls
                  for r in lo.dataset.records}  # fmt: skip
        missing = needed - set(self.table)
        if not missing:
            self.table = {k: v for k, v in self.table.items() if k in needed}
            return
        trainer = stage.trainer
        # FSDP / DeepSpeed restore a checkpoint only after this hook: the weights are still the initial ones, so the
        # table is read or computed as for a new run, and the checkpoint's entries replace it when they arrive
        restored_already = trainer.ckpt_path is not None and not trainer.strategy.restore_checkpoint_after_setup
        if self.restored or restored_already:  # resuming: the policy is no longer the reference
            held = "holds none (written before they were saved)"
            if self.restored:
                held = f"lacks {len(missing)} pair(s) of this run's data, e.g. {sorted(missing)[0]!r}"
            raise RuntimeError(
                f"resumed DPO run: the checkpoint's precomputed reference table {held}; reference log-probs cannot be "
                "computed from the already-trained policy (resume with the data the run started with, start again "
                "from the SFT export, or use `reference: adapter`)"
            )
        path = Path(stage.export_dir()) / REFERENCE_FILE
        fingerprint = self.fingerprint() if trainer.is_global_zero else None
        # rank 0 decides for all (its export folder may be the only one holding the file)
        saved = gather_objects([read_table(path, fingerprint, needed)] if trainer.is_global_zero else [])[0]
        if saved is not None:
            self.table = saved
            return
        self.table = self.compute(stage, loaders)
        if trainer.is_global_zero:
            write_table(path, fingerprint, self.table)

    def fingerprint(self) -> str | None:
        """sha256 of the ``init_from`` weights file (None without ``init_from``)."""
        if self.init_from is None:
            return None
        path = Path(self.init_from)
        file = path / WEIGHTS_FILE if path.is_dir() else path
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @torch.no_grad()
    def compute(self, stage: DPOStage, loaders: dict[str, list[DataLoader]]) -> dict[str, tuple[float, float] | None]:
        """Every pair's log-probs with the stage's current weights (eval mode), each process a shard, gathered.

        Every process runs the same number of forwards (the shards are padded to equal length, and a batch whose
        pairs were all skipped repeats the last good one), as a sharded model (FSDP, ZeRO-3) needs.
        """
        # each module's own mode back afterwards: Lightning keeps modes as they are when training starts, and
        # stage.train() would switch on dropout in modules the run keeps in eval mode (a run reading the table back
        # would then train differently from one computing it)
        modes = {module: module.training for module in stage.modules()}
        stage.eval()
        rows: list[tuple[str, float, float]] = []
        world, rank = stage.trainer.world_size, stage.trainer.global_rank
        for split, split_loaders_ in loaders.items():
            for loader in split_loaders_:
                sampler = DistributedSampler(loader.dataset, world, rank, shuffle=False) if world > 1 else None
                # in order, and with its own generator: a loader draws its workers' seed from the global RNG, which
                # would change the training's shuffling between a run computing the table and one reading it back
                ordered = DataLoader(
                    loader.dataset, loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
                    num_workers=loader.num_workers, generator=torch.Generator(),
                )  # fmt: skip
                last = None
                for batch in ordered:
                    if "input_ids" in batch:
                        last = batch = stage.transfer_batch_to_device(batch, stage.device, 0)
                    elif last is None:
                        continue
                    chosen, rejected = stage._logps(last)
                    if batch is last:
                        n = batch["num_pairs"]
                        for rid, h, c, r in zip(batch["ids"][:n], batch["pair_hashes"], chosen.tolist(),
                                                rejected.tolist()):  # fmt: skip
                            rows.append((pair_key(split, str(rid), h), c, r))
        for module, mode in modes.items():
            module.training = mode
        table: dict[str, tuple[float, float] | None] = {
            pair_key(split, r.id, pair_hash(r)): None for split, ls in loaders.items() for lo in ls
            for r in lo.dataset.records
        }  # fmt: skip  # None: a pair whose media failed to load (skip_bad_records); never looked up
        for key, c, r in gather_objects(rows):
            table[key] = (c, r)
        return table

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {"logps": {k: v and list(v) for k, v in self.table.items()}}

    def load_checkpoint_state(self, state: dict[str, Any] | None) -> None:
        if state is not None:  # else (a checkpoint from before tables were saved) resuming a fit stops in prepare()
            # over any table prepare() made with the initial weights (FSDP / DeepSpeed restore after it)
            self.table.update({k: v and (float(v[0]), float(v[1])) for k, v in state["logps"].items()})
            self.restored = True


def split_loaders(stage: DPOStage) -> dict[str, list[DataLoader]]:
    """The preference loaders of every split the stage's data module has."""
    dm = getattr(stage.trainer, "datamodule", None)
    if dm is None:
        raise ValueError("reference: precomputed needs a data module (PreferenceDataModule) passed to the trainer")
    loaders = {"train": [dm.train_dataloader()]}
    val = dm.val_dataloader()
    loaders["val"] = list(val) if isinstance(val, (list, tuple)) else [val]
    if getattr(dm, "files", {}).get("test"):
        loaders["test"] = [dm.test_dataloader()]
    for split, ls in loaders.items():
        for loader in ls:
            if not hasattr(loader.dataset, "records"):
                raise TypeError(f"reference: precomputed needs preference datasets; the {split} loader has none")
    return loaders


def read_table(path: Path, fingerprint: str | None, needed: set[str]) -> dict[str, Any] | None:
    """The entries of ``needed`` from a saved table, or None when the file is absent, from another ``init_from``
    or lacks a pair (then the table is recomputed and the file rewritten)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(saved, dict) or saved.get("format") != TABLE_FORMAT:
        return None
    logps = saved.get("logps", {})
    if saved.get("init_from_sha256") != fingerprint or not needed <= set(logps):
        return None
    return {k: logps[k] and (float(logps[k][0]), float(logps[k][1])) for k in needed}


def write_table(path: Path, fingerprint: str | None, table: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": TABLE_FORMAT, "init_from_sha256": fingerprint, "logps": table}))
    tmp.replace(path)  # a killed run never leaves half a table behind
