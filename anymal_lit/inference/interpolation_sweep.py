"""Score an interpolation between two exports: merge at each weight, validate with an experiment's evaluation
callbacks, and write one table (weights x benchmark scores) as markdown, JSON and TensorBoard scalars (UnIVAL's
figures of model interpolation)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from anymal_lit.inference.merging import DENSITY, write_merged_export
from anymal_lit.stages.export import WEIGHTS_FILE, load_export, read_export_meta

log = logging.getLogger(__name__)

TABLE_MD = "sweep.md"
TABLE_JSON = "sweep.json"


def sweep(
    exports: list[str | Path],
    points: list[float],
    configs: list[str],
    out: str | Path,
    method: str = "linear",
    base: str | Path | None = None,
    density: float = DENSITY,
    cli_args: list[str] | None = None,
) -> dict[str, Any]:
    """Merge ``exports`` (two) with weights ``(1 - t, t)`` for each ``t`` in ``points`` into ``out/t=<t>/`` and
    validate each merge with the experiment (``configs``: its YAMLs) in this process; returns the table.

    The experiment's model is built once (with ``init_from`` the first merge and the merged LoRA rank), each merge is
    loaded into it in turn and ``Trainer.validate`` runs its evaluation callbacks, whose scorecard and predictions go
    to ``out/t=<t>/``. ``cli_args`` are extra LightningCLI arguments (``--trainer.limit_val_batches 2``, ...).
    """
    if len(exports) != 2:
        raise ValueError(f"a sweep interpolates two exports, got {len(exports)}")
    if not points:
        raise ValueError("a sweep needs at least one weight")
    if not configs:
        raise ValueError("a sweep needs the experiment YAML (-c) whose evaluation callbacks score each mix")
    out = Path(out)
    folders = []
    for t in points:
        folder = out / f"t={t:g}"
        if not _same_merge(folder, exports, [1.0 - t, t], method, base):
            shutil.rmtree(folder, ignore_errors=True)  # another sweep's merge, or an unfinished one
            write_merged_export(exports, [1.0 - t, t], folder, method, base, density)
        folders.append(folder)
    rows = _validate_each(folders, configs, out, cli_args or [])
    table = {
        "exports": [str(Path(e).resolve()) for e in exports],
        "method": method,
        "base": str(Path(base).resolve()) if base is not None else None,
        "rows": [
            {"t": t, "weights": [1.0 - t, t], "export": str(folder), "scores": scores}
            for t, folder, scores in zip(points, folders, rows)
        ],
    }
    table["retention"] = retention(table["rows"])
    (out / TABLE_JSON).write_text(json.dumps(table, indent=2))
    markdown = render(table)
    (out / TABLE_MD).write_text(markdown)
    _tensorboard(out / "tensorboard", table, markdown)
    print(markdown)
    return table


def _same_merge(
    folder: Path, exports: list[str | Path], weights: list[float], method: str, base: str | Path | None
) -> bool:
    """Whether ``folder`` already holds this merge (kept, so a rerun sweep only scores again)."""
    try:
        merge = read_export_meta(folder).get("merge") or {}
    except ValueError:  # an unreadable export.json
        return False
    return (folder / WEIGHTS_FILE).exists() and (
        merge.get("parents") == [str(Path(e).resolve()) for e in exports]
        and merge.get("weights") == [float(w) for w in weights]
        and merge.get("method") == method
        and merge.get("base") == (str(Path(base).resolve()) if base is not None else None)
    )


def _validate_each(folders: list[Path], configs: list[str], out: Path, cli_args: list[str]) -> list[dict[str, float]]:
    from anymal_lit.cli import AnyMALCLI

    meta = read_export_meta(folders[0])
    args = [a for c in configs for a in ("-c", c)] + ["--model.init_args.init_from", str(folders[0])]
    if meta.get("lora"):  # the merged adapter's rank: the stage must build it so (SFTStage.check_export)
        args += ["--model.init_args.lora.r", str(meta["lora"]["r"]), "--model.init_args.lora.alpha",
                 str(meta["lora"]["alpha"])]  # fmt: skip
    # no logger (the sweep writes its own scalars); Lightning's side files (config.yaml) go to the sweep's folder
    args += ["--trainer.logger", "false", "--trainer.default_root_dir", str(out)]
    cli = AnyMALCLI(args=[*args, *cli_args], run=False)
    rows = []
    for folder in folders:
        load_export(cli.model.model, folder)
        for callback in cli.trainer.callbacks:
            if hasattr(callback, "scorecard") and hasattr(callback, "predictions_dir"):
                callback.scorecard = str(folder / "scorecard.json")
                callback.predictions_dir = str(folder / "predictions")
        (metrics,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        scores = {k.removeprefix("val/"): float(v) for k, v in metrics.items()}
        log.info("%s: %s", folder.name, scores)
        rows.append(scores)
    return rows


def retention(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per weight, the smallest share of the better parent's score kept over every score but the losses (UnIVAL:
    a mix keeping >= 90 % of each parent's score on every task); None without both end points."""
    ends = {row["t"]: row["scores"] for row in rows}
    if 0.0 not in ends or 1.0 not in ends:
        return None
    best = {k: max(ends[0.0][k], ends[1.0][k]) for k in ends[0.0] if "loss" not in k and k in ends[1.0]}
    best = {k: v for k, v in best.items() if v > 0}
    kept = {}
    for row in rows:
        shares = {k: row["scores"].get(k, 0.0) / v for k, v in best.items()}
        worst = min(shares, key=shares.get) if shares else None
        kept[f"{row['t']:g}"] = {"min_share": shares[worst], "metric": worst} if worst else None
    return {"reference": "the better parent's score on each metric", "per_weight": kept}


def render(table: dict[str, Any]) -> str:
    """The table as markdown: one row per weight, one column per score."""
    metrics = sorted({k for row in table["rows"] for k in row["scores"]})
    kept = (table.get("retention") or {}).get("per_weight", {})
    head = ["weights (A, B)", *metrics] + (["min kept vs better parent"] if kept else [])
    lines = [
        f"Interpolation of A = `{table['exports'][0]}` and B = `{table['exports'][1]}` ({table['method']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table["rows"]:
        cells = [f"{row['weights'][0]:g}, {row['weights'][1]:g}"]
        cells += [f"{row['scores'][m]:.4f}" if m in row["scores"] else "" for m in metrics]
        if kept:
            share = kept.get(f"{row['t']:g}")
            cells.append(f"{share['min_share']:.0%} ({share['metric']})" if share else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tensorboard(folder: Path, table: dict[str, Any], markdown: str) -> None:
    """Each score as a scalar against the weight of B in percent (TensorBoard steps are integers)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for row in table["rows"]:
        for metric, value in row["scores"].items():
            writer.add_scalar(f"merge/{metric}", value, global_step=round(100 * row["t"]))
    writer.add_text("merge/table", markdown)
    writer.close()
