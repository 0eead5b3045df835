"""`anymal-lit validate -c experiments/demo/eval_paper.yaml` scores the toy model on the paper's whole suite and
prints Tables 1, 3 and 4 with a number in every column it ran."""

from __future__ import annotations

import re

import pytest
import yaml

from anymal_lit.callbacks.paper_tables import PAPER_TABLES
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def table_rows(text: str, title: str) -> list[list[str]]:
    """The cells of the data rows of the Markdown table under ``### <title>``."""
    block = text.split(f"### {title}", 1)[1].split("###", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_validate_prints_the_paper_tables_for_the_toy_model(tiny_world, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "toyworld").symlink_to(tiny_world)
    config = yaml.safe_load((REPO / "experiments" / "demo" / "eval_paper.yaml").read_text())
    config["model"]["init_args"]["model"] = str(REPO / "conf" / "models" / "anymal_toy.yaml")
    for callback in config["trainer"]["callbacks"]:  # a few records each, short answers: a CPU minute or two
        args = callback["init_args"]
        if "data" in args and args["name"] != "hateful_memes":  # AUROC needs both labels: all 8 memes
            args.update(limit=4, max_new_tokens=3)
    recipe = tmp_path / "eval_paper.yaml"
    recipe.write_text(yaml.safe_dump(config))
    proc = run_cli("validate", "-c", str(recipe), "--model.init_args.init_from", "null", cwd=tmp_path, timeout=900)

    number = re.compile(r"^\d+\.\d$")
    (image_row,) = table_rows(proc.stdout, "Table 1: image understanding")
    assert image_row[0] == "AnyMAL-toy (sft)"
    assert len(image_row) == 1 + len(PAPER_TABLES["Table 1: image understanding"])
    assert all(number.match(cell) for cell in image_row[1:]), image_row
    (video_row,) = table_rows(proc.stdout, "Table 3: video QA")
    assert all(number.match(cell) for cell in video_row[1:]), video_row
    (audio_row,) = table_rows(proc.stdout, "Table 4: audio captioning")
    assert number.match(audio_row[1]), audio_row  # CIDEr; SPICE only with its jars
    written = (tmp_path / "runs" / "demo" / "eval" / "paper_tables.md").read_text()
    assert written.strip() in proc.stdout
