"""When evaluation callbacks run: before fit, every N epochs after validation, and on ``anymal-lit validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_info

from anymal_lit.callbacks.scorecard import update_scorecard


def data_parallel_rank(trainer: L.Trainer) -> tuple[int, int]:
    """(replicas, this one's index) among the data-parallel replicas: the processes of a tensor-parallel group
    (``fsdp_tp``) are one replica, and must see the same records or their layer collectives mix unrelated rows."""
    kwargs = getattr(getattr(trainer, "strategy", None), "distributed_sampler_kwargs", None) or {}
    return kwargs.get("num_replicas", trainer.world_size), kwargs.get("rank", trainer.global_rank)


def evaluation_share(count: int, trainer: L.Trainer) -> list[int]:
    """This replica's indices of ``count`` records: every replicas-th one, padded to the same length on every
    replica with a repeat of record 0 (which the metrics count once). Evaluation under FSDP / ZeRO-3 / TP runs
    collectives in every forward, so a replica with one batch fewer would leave the others waiting."""
    replicas, rank = data_parallel_rank(trainer)
    mine = list(range(count))[rank::replicas]
    return mine + [0] * (-(-count // replicas) - len(mine)) if count else mine


class ScheduledEvaluation(L.Callback):
    """Calls :meth:`evaluate` once before the first training step (scores suffixed ``_before``, logged at step 0),
    after validation every ``every_n_epochs`` epochs and at the last epoch of a fit, and on every ``validate``; logs
    each score as ``val/<name>/<metric>``. Subclasses set ``name``, ``every_n_epochs`` and ``before_fit``."""

    name: str
    every_n_epochs: int = 1
    before_fit: bool = True
    scorecard: str | None = None
    predictions_dir: str | None = None

    def write_scores(
        self, trainer: L.Trainer, pl_module: L.LightningModule, scores: dict[str, float], results: Any, suffix: str
    ) -> None:
        """On rank 0: print the scores, write ``results`` to ``<predictions_dir>/<stage>_<name><suffix>.json`` and
        merge the scores into the scorecard under ``stages.<stage>.<name>``."""
        stage = getattr(pl_module, "stage_name", "eval")
        rank_zero_info(f"{stage} {self.name}{suffix}: { {k: round(v, 4) for k, v in scores.items()} }")
        out_dir = Path(self.predictions_dir or trainer.log_dir or trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{stage}_{self.name}{suffix}.json").write_text(json.dumps(results, indent=1))
        if self.scorecard:
            update_scorecard(self.scorecard, stage, self.name, scores)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str = "") -> dict[str, float]:
        """Score the model (a collective on every rank); metric name (with ``suffix``) -> value."""
        raise NotImplementedError

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before_fit:
            scores = self.evaluate(trainer, pl_module, suffix="_before")
            if trainer.logger is not None:
                trainer.logger.log_metrics({f"val/{self.name}/{k}": v for k, v in scores.items()}, step=0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0 and not last_epoch:
            return
        for key, value in self.evaluate(trainer, pl_module, suffix="").items():
            pl_module.log(f"val/{self.name}/{key}", value, rank_zero_only=False)
