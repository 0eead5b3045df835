"""LightningCLI for the kit: any :class:`AnyMALStage` with any :class:`ConversationDataModule`, the ``predict``
subcommand's prediction writer, and exports that record the model they were configured with."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from anymal_lit.callbacks.prediction_writer import PredictionWriter
from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.inference.model_config import absolute_paths
from anymal_lit.stages.base import AnyMALStage


class AnyMALCLI(LightningCLI):
    """LightningCLI over any :class:`AnyMALStage` and any :class:`ConversationDataModule` (``class_path`` in YAML)."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            AnyMALStage,
            ConversationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # `add_arguments_to_parser` cannot tell the subcommands apart: the writer's options belong to predict only
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_lightning_class_args(PredictionWriter, "predictions")
        return parser

    def after_predict(self) -> None:
        # here, after the progress bar has closed, so the path is the last line
        writer = self._get(self.config_init, "predictions")
        if writer.written is not None:  # rank 0
            counts = writer.counts
            skipped = f" ({counts['skipped']} records skipped as bad)" if counts["skipped"] else ""
            print(f"wrote {counts['written']} predictions to {writer.written}{skipped}", flush=True)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # the stage's exports record the model as configured, so `load_model` can rebuild it without this YAML
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.get("model.init_args.model")
        if model is not None and hasattr(self.model, "model_config"):
            self.model.model_config = absolute_paths(_as_dict(model))
            data = config.get("data")
            self.model.data_config = absolute_paths(_as_dict(data)) if data is not None else None


def _as_dict(namespace: Any) -> dict[str, Any]:
    """A parsed config node as plain JSON data (jsonargparse's ``__path__`` bookkeeping dropped)."""

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, (list, tuple)):
            return [plain(v) for v in node]
        return node if node is None or isinstance(node, (str, int, float, bool)) else str(node)

    return plain(namespace.as_dict() if hasattr(namespace, "as_dict") else dict(namespace))
