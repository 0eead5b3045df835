"""Held-out preference accuracy of a DPO policy, before training and after each validation."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from anymal_lit.callbacks.schedule import data_parallel_rank
from anymal_lit.callbacks.scorecard import update_scorecard
from anymal_lit.collectives import all_reduce_max, all_reduce_sum


class PreferenceEvalCallback(L.Callback):
    """Scores a preference JSONL with the policy of a :class:`~anymal_lit.stages.DPOStage`.

    ``accuracy``: the policy gives the chosen response a higher summed log-prob than the rejected one (ranking);
    ``reward_accuracy``: the policy's margin over the reference is larger for the chosen one (DPO's implicit
    reward). Before training the policy is the reference, so ``accuracy_before`` is the SFT model's ranking.
    Scores go to ``val/<name>/...`` and the scorecard (``stages.dpo.<name>``).

    Args:
        data: Preference JSONL (held out).
        name: Benchmark name.
        batch_size: Pairs per batch.
        scorecard: JSON scorecard to merge the scores into.
    """

    def __init__(self, data: str, name: str = "preference", batch_size: int = 16, scorecard: str | None = None) -> None:
        self.data, self.name, self.batch_size, self.scorecard = data, name, batch_size, scorecard

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        was_training = pl_module.training
        pl_module.eval()
        loader = trainer.datamodule.dataloader(self.data, self.batch_size)
        replicas, rank = data_parallel_rank(trainer)  # a tensor-parallel group reads the same pairs
        indices = list(range(len(loader.dataset)))[rank::replicas]
        loader = DataLoader(Subset(loader.dataset, indices), batch_size=self.batch_size, collate_fn=loader.collate_fn)
        counts = torch.zeros(3, dtype=torch.float64)  # right, reward_right, total: exact integers
        batches, last = iter(loader), None
        # every rank runs as many forwards: sharded models gather parameters in each, and the ranks' shares may
        # differ by a batch or hold a batch whose pairs were all skipped; those ranks repeat a batch, not counted
        for _ in range(all_reduce_max(len(loader))):
            batch = next(batches, None)
            if batch is not None and "input_ids" in batch:
                last = batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                counts += self._counts(pl_module, batch)
            else:
                self._counts(pl_module, last if last is not None else pl_module.placeholder_batch())
        counts = all_reduce_sum(counts)
        pl_module.train(was_training)
        right, reward_right, total = counts.tolist()  # exact integer counts: divide in float64 (360/400 is 0.9)
        return {"accuracy": right / total, "reward_accuracy": reward_right / total}

    @staticmethod
    def _counts(pl_module: Any, batch: dict[str, Any]) -> torch.Tensor:
        policy_c, policy_r = pl_module._logps(batch)
        if pl_module.reference == "precomputed" and not all(
            str(i) in pl_module.reference_logps for i in batch["ids"][: batch["num_pairs"]]
        ):
            ref_c, ref_r = policy_c, policy_r  # held-out pairs have no precomputed reference: margins unknown
        else:
            ref_c, ref_r = pl_module._reference_logps(batch)
        right = (policy_c > policy_r).sum()
        reward_right = ((policy_c - ref_c) > (policy_r - ref_r)).sum()
        return torch.tensor([float(right), float(reward_right), len(policy_c)], dtype=torch.float64)

    def _report(self, trainer: L.Trainer, pl_module: Any, scores: dict[str, float]) -> None:
        rank_zero_info(f"{pl_module.stage_name} {self.name}: {scores}")
        if self.scorecard and trainer.is_global_zero:
            update_scorecard(self.scorecard, pl_module.stage_name, self.name, scores)

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        scores = self.evaluate(trainer, pl_module)
        self._report(trainer, pl_module, {"accuracy_before": scores["accuracy"]})

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        scores = self.evaluate(trainer, pl_module)
        for key, value in scores.items():
            pl_module.log(f"val/{self.name}/{key}", value)
        self._report(trainer, pl_module, scores)
