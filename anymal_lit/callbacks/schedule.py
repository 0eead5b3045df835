"""When evaluation callbacks run: before fit, every N epochs after validation, and on ``anymal-lit validate``."""

from __future__ import annotations

import lightning.pytorch as L


class ScheduledEvaluation(L.Callback):
    """Calls :meth:`evaluate` once before the first training step (scores suffixed ``_before``, logged at step 0),
    after validation every ``every_n_epochs`` epochs and at the last epoch of a fit, and on every ``validate``; logs
    each score as ``val/<name>/<metric>``. Subclasses set ``name``, ``every_n_epochs`` and ``before_fit``."""

    name: str
    every_n_epochs: int = 1
    before_fit: bool = True

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
