"""The scorecard in the layout of the AnyMAL paper's result tables (arXiv:2309.16058): Table 1 (image benchmarks),
Table 3 (video QA) and Table 4 (audio captioning), as Markdown, printed at the end of ``anymal-lit validate``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_only


@dataclass(frozen=True)
class Column:
    """One table column: its header, the scorecard benchmark it reads and which of that benchmark's scores."""

    header: str
    benchmark: str
    metric: str


# Every score is a fraction in the scorecard and a percentage in the paper (CIDEr and SPICE too: 77.8, not 0.778).
# The benchmark names are the ones the eval_*.yaml recipes give their callbacks.
PAPER_TABLES: dict[str, list[Column]] = {
    "Table 1: image understanding": [
        Column("MMMU (val, acc)", "mmmu", "accuracy"),
        Column("VQAv2 (acc)", "vqav2", "vqa_official"),
        Column("TextVQA (acc)", "textvqa", "vqa_always"),  # its evaluator normalises every answer
        Column("MMBench (circular)", "mmbench", "circular"),
        Column("AI2D (acc)", "ai2d", "accuracy"),
        Column("MathVista (acc)", "mathvista", "accuracy"),
        Column("ChartQA (relaxed acc)", "chartqa", "relaxed_accuracy"),
        Column("OK-VQA (acc)", "okvqa", "vqa_official"),
        Column("VizWiz (acc)", "vizwiz", "vqa_official"),
        Column("Hateful Memes (AUROC)", "hateful_memes", "auroc"),
    ],
    "Table 3: video QA": [
        Column("EgoSchema (acc)", "egoschema", "accuracy"),
        Column("MVBench (acc)", "mvbench", "accuracy"),
    ],
    "Table 4: audio captioning": [
        Column("AudioCaps (CIDEr)", "audiocaps", "cider"),
        Column("AudioCaps (SPICE)", "audiocaps", "spice"),
    ],
}


def _cell(scores: dict[str, Any], column: Column) -> str:
    value = scores.get(column.benchmark, {}).get(column.metric)
    return "-" if value is None else f"{100 * float(value):.1f}"


def paper_tables(card: dict[str, Any], model: str = "AnyMAL") -> str:
    """Markdown of Tables 1, 3 and 4 from a scorecard (``{"stages": {<stage>: {<benchmark>: {<metric>: x}}}}``).

    One row per stage of the scorecard that holds any benchmark of the three tables (``<model> (<stage>)``), one
    column per benchmark; scores are percentages with one decimal, ``-`` where the benchmark was not run.

    Args:
        card: The scorecard's content.
        model: The model's name in the rows.
    """
    wanted = {c.benchmark for columns in PAPER_TABLES.values() for c in columns}
    stages = {s: b for s, b in card.get("stages", {}).items() if wanted & set(b)}
    blocks = []
    for title, columns in PAPER_TABLES.items():
        lines = [f"### {title}", "", "| Model | " + " | ".join(c.header for c in columns) + " |"]
        lines.append("|---|" + "---:|" * len(columns))
        for stage, scores in stages.items():
            lines.append(f"| {model} ({stage}) | " + " | ".join(_cell(scores, c) for c in columns) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


class PaperTablesCallback(L.Callback):
    """At the end of validation (``anymal-lit validate``, or each validation of a fit), prints the scorecard as the
    paper's Tables 1, 3 and 4 and writes them to ``paper_tables.md`` beside the scorecard (rank 0 only).

    Place it after the evaluation callbacks that fill the scorecard (it reads the file they wrote this epoch).

    Args:
        scorecard: The JSON scorecard the evaluation callbacks write to.
        model: The model's name in the tables' rows.
    """

    def __init__(self, scorecard: str, model: str = "AnyMAL") -> None:
        self.scorecard = scorecard
        self.model = model

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        path = Path(self.scorecard)
        card = json.loads(path.read_text()) if path.exists() else {}
        tables = paper_tables(card, self.model)
        print(tables, flush=True)  # the run's result, on stdout where the user looks (not only in a log)
        (path.parent / "paper_tables.md").write_text(tables)
