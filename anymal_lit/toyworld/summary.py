"""The demo's one-screen summary: per stage and benchmark the headline metric before -> after, its baseline and its
target, marked met or not; also written as ``summary.md`` (the same table) and ``summary.png`` (before/after bars with
the targets drawn as lines). The full figures stay in ``scorecard.json``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CIDER_TARGET = 3.0
"""Each modality's aligned caption CIDEr must reach this ..."""
CIDER_OVER_CONSTANT = 3.0
"""... and this many times the best constant caption's."""
DPO_HALLUCINATION_CUT = 0.3
"""DPO must cut the share of captions with a hallucinated object (CHAIR-s) by this fraction of the SFT model's ..."""
DPO_KEEP_POINTS = 0.02
"""... while keeping caption CIDEr and VQA accuracy within this much of the SFT model's."""


@dataclass(frozen=True)
class Headline:
    """What a row of the summary shows about ``stages.<stage>.<benchmark>``.

    Args:
        stage: Stage name in the scorecard.
        benchmark: Benchmark name in the scorecard.
        metric: The headline metric (``<metric>_before`` is its value before the stage).
        baseline: Scorecard key of the baseline a model must beat (None: none).
        baseline_name: How the table names that baseline.
        target: Function of the benchmark's scores -> the value the headline must reach (None: no target).
        target_text: How the table states the target.
        lower_is_better: The headline meets its target at or below it (hallucination rates).
    """

    stage: str
    benchmark: str
    metric: str
    baseline: str | None = None
    baseline_name: str = ""
    target: Callable[[dict], float] | None = None
    target_text: str = ""
    lower_is_better: bool = False


def _cider_target(scores: dict) -> float:
    return max(CIDER_TARGET, CIDER_OVER_CONSTANT * scores.get("cider_constant", 0.0))


HEADLINES = (
    *(
        Headline(
            "align", f"{m}_caption", "cider", "cider_constant", "constant caption", _cider_target, ">= 3, 3x const"
        )
        for m in ("image", "audio", "video", "imu")
    ),
    Headline("align", "image_caption", "hallucination_output"),  # captions with an object not in the picture
    Headline("sft", "vqa", "vqa_official", "blind_exact_match", "blind answer", lambda s: 0.8, ">= 0.8"),
    Headline("sft", "mmbench", "circular", target=lambda s: 0.7, target_text=">= 0.7"),
    Headline("sft", "image_imu_qa", "activity_accuracy"),
    Headline("sft", "image_caption", "cider"),
    Headline("sft", "image_caption", "hallucination_output"),
    Headline("dpo", "preference", "accuracy"),
    Headline(
        "dpo",
        "vqa",
        "vqa_official",
        "blind_exact_match",
        "blind answer",
        lambda s: s["vqa_official_before"] - DPO_KEEP_POINTS,
        f">= SFT - {DPO_KEEP_POINTS}",
    ),
    Headline("dpo", "mmbench", "circular"),
    Headline(
        "dpo",
        "image_caption",
        "cider",
        target=lambda s: s["cider_before"] - DPO_KEEP_POINTS,
        target_text=f">= SFT - {DPO_KEEP_POINTS}",
    ),
    Headline(
        "dpo",
        "image_caption",
        "hallucination_output",
        target=lambda s: (1 - DPO_HALLUCINATION_CUT) * s["hallucination_output_before"],
        target_text=f"<= {1 - DPO_HALLUCINATION_CUT:g}x SFT",
        lower_is_better=True,
    ),
    Headline("dpo", "image_caption", "omission_output"),  # captions naming fewer objects than the picture holds
)
"""The rows, in order; a row whose metric is not in the scorecard (before or after) is left out."""


@dataclass
class Row:
    """One line of the summary; over several seeds ``before``/``after``/``baseline``/``target`` are means,
    ``after_range`` is (min, max) of ``after`` and ``met`` holds only when the target is met on every seed."""

    stage: str
    benchmark: str
    metric: str
    before: float | None
    after: float | None
    baseline: float | None
    baseline_name: str
    target: float | None
    target_text: str
    met: bool | None
    after_range: tuple[float, float] | None = None


def _met(h: Headline, after: float | None, target: float | None) -> bool | None:
    """None without a target; False when the target or the score is missing."""
    if h.target is None:
        return None
    if after is None or target is None:
        return False
    return after <= target if h.lower_is_better else after >= target


def _seed_rows(card: dict) -> list[Row]:
    rows = []
    for h in HEADLINES:
        scores = card.get("stages", {}).get(h.stage, {}).get(h.benchmark)
        if scores is None or not {h.metric, f"{h.metric}_before"} & set(scores):
            continue
        after = scores.get(h.metric)
        try:
            target = h.target(scores) if h.target is not None else None
        except (KeyError, TypeError):  # a figure the target needs is missing
            target = None
        baseline = scores.get(h.baseline) if h.baseline else None
        rows.append(
            Row(
                h.stage,
                h.benchmark,
                h.metric,
                scores.get(f"{h.metric}_before"),
                after,
                baseline,
                h.baseline_name,
                target,
                h.target_text,
                _met(h, after, target),
            )
        )
    return rows


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summary_rows(card: dict) -> list[Row]:
    """The headline rows present in a scorecard (``{"stages": {stage: {benchmark: {metric: value}}}}``), or in a
    scorecard over several seeds (:func:`~anymal_lit.callbacks.scorecard.combine_scorecards`): then each row is
    the seeds' mean with the range of ``after``, met only where every seed meets its target."""
    from anymal_lit.callbacks.scorecard import seed_scorecard

    seeds = card.get("seeds")
    if not seeds or len(seeds) == 1:
        return _seed_rows(seed_scorecard(card, 0) if seeds else card)
    per_seed = [_seed_rows(seed_scorecard(card, i)) for i in range(len(seeds))]
    rows = []
    for lines in zip(*per_seed):
        first = lines[0]
        afters = [r.after for r in lines if r.after is not None]
        mets = [r.met for r in lines]
        rows.append(
            Row(
                first.stage,
                first.benchmark,
                first.metric,
                _mean([r.before for r in lines]),
                _mean([r.after for r in lines]),
                _mean([r.baseline for r in lines]),
                first.baseline_name,
                _mean([r.target for r in lines]),
                first.target_text,
                None if first.met is None else all(mets),
                (min(afters), max(afters)) if afters else None,
            )
        )
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cells(row: Row) -> list[str]:
    baseline = f"{_num(row.baseline)} ({row.baseline_name})" if row.baseline is not None else "-"
    target = f"{_num(row.target)} ({row.target_text})" if row.target is not None else (row.target_text or "-")
    met = {None: "", True: "met", False: "NOT MET"}[row.met]
    after = _num(row.after) + (f" [{row.after_range[0]:.3f}-{row.after_range[1]:.3f}]" if row.after_range else "")
    return [row.stage, row.benchmark, row.metric, f"{_num(row.before)} -> {after}", baseline, target, met]


HEADER = ["stage", "benchmark", "metric", "before -> after [range over seeds]", "baseline", "target", ""]


def render_summary(card: dict) -> str:
    """The one-screen table (plain text, aligned columns) with the wall time."""
    table = [HEADER] + [_cells(r) for r in summary_rows(card)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "-" * len(lines[0]))
    if "wall_seconds" in card:
        world = card.get("world_seconds")
        lines.append(f"wall time: {card['wall_seconds']:.0f} s" + (f" (toy world: {world:.0f} s)" if world else ""))
    return "\n".join(["", *lines])


def summary_markdown(card: dict) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in summary_rows(card)]
    if "wall_seconds" in card:
        lines += ["", f"Wall time: {card['wall_seconds']:.0f} s. Full figures: `scorecard.json`."]
    return "\n".join(lines) + "\n"


def summary_figure(card: dict, path: str | Path) -> None:
    """One figure: per stage (and per scale: CIDEr apart from fractions), before/after bars of the headline metrics,
    targets as red lines and baselines as grey dashed lines over their benchmark's bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the demo runs headless
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, bool], list[Row]] = {}
    for row in summary_rows(card):
        groups.setdefault((row.stage, row.metric == "cider"), []).append(row)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4 * max(1, len(groups)), 4), squeeze=False)
    for ax, ((stage, cider), rows) in zip(axes[0], groups.items()):
        for x, row in enumerate(rows):
            ax.bar(x - 0.2, row.before or 0.0, 0.4, color="#b0b0b0", label="before" if x == 0 else None)
            ax.bar(x + 0.2, row.after or 0.0, 0.4, color="#3070c0", label="after" if x == 0 else None)
            if row.target is not None:
                ax.hlines(row.target, x - 0.45, x + 0.45, colors="#d02020", label="target" if x == 0 else None)
            if row.baseline is not None:
                ax.hlines(
                    row.baseline,
                    x - 0.45,
                    x + 0.45,
                    colors="#606060",
                    linestyles="dashed",
                    label="baseline" if x == 0 else None,
                )
        ax.set_xticks(range(len(rows)), [f"{r.benchmark}\n{r.metric}" for r in rows], fontsize=6)
        ax.set_title(f"{stage}: {'CIDEr' if cider else 'fractions'}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(card: dict, out_dir: str | Path) -> str:
    """Write ``summary.md`` and ``summary.png`` into ``out_dir``; return the table to print."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(summary_markdown(card))
    summary_figure(card, out_dir / "summary.png")
    return render_summary(card)
