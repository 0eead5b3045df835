"""`anymal-lit demo --seeds ... --from-stage ...`: each seed's runs in its own folder, combined into one scorecard,
and a rerun from a later stage on the kept earlier runs of every seed (the stages themselves faked here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import anymal_lit.demo as demo

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "demo"


def fake_chain(calls: list):
    def run_chain(world, out_dir, experiments, seed, precision=None, from_stage="align"):
        out_dir.mkdir(parents=True, exist_ok=True)
        calls.append((seed, from_stage, sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("seed-"))))
        for stage in ("align", "sft", "dpo")[("align", "sft", "dpo").index(from_stage) :]:
            export = out_dir / stage / "checkpoints" / "export"
            export.mkdir(parents=True, exist_ok=True)
            (export / "export.json").write_text(json.dumps({"seed": seed}))
        card = {"stages": {"dpo": {"vqa": {"vqa_official": 0.8 + seed / 100}}}, "stage_seconds": {}}
        (out_dir / "scorecard.json").write_text(json.dumps(card))
        return card

    return run_chain


def test_seeds_then_rerun_from_dpo_keeps_each_seeds_earlier_stages(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(demo, "build_world", lambda *args: None)
    monkeypatch.setattr(demo, "fill_feature_cache", lambda *args: 0.0)
    monkeypatch.setattr(demo, "run_chain", fake_chain(calls))
    out = tmp_path / "demo"
    card = demo.run_demo(str(tmp_path / "world"), str(out), str(EXPERIMENTS), seeds=[0, 1])
    assert card["stages"]["dpo"]["vqa"]["vqa_official"]["per_seed"] == [0.8, 0.81]
    assert [c[:2] for c in calls] == [(0, "align"), (1, "align")] and calls[1][2] == []  # seed 1 starts clean
    for seed in (0, 1):
        assert json.loads((out / f"seed-{seed}/sft/checkpoints/export/export.json").read_text()) == {"seed": seed}
    calls.clear()
    monkeypatch.chdir(tmp_path)  # the demo YAMLs name their exports under runs/demo
    (tmp_path / "runs").mkdir()
    (out).rename(tmp_path / "runs" / "demo")
    demo.run_demo(str(tmp_path / "world"), "runs/demo", str(EXPERIMENTS), seeds=[0, 1], from_stage="dpo")
    assert [c[:2] for c in calls] == [(0, "dpo"), (1, "dpo")]
    assert {"align", "sft"} <= set(calls[1][2]) and "dpo" not in calls[1][2]  # seed 1's kept runs moved back
    assert json.loads(Path("runs/demo/seed-1/align/checkpoints/export/export.json").read_text()) == {"seed": 1}
    assert not Path("runs/demo/align").exists()  # and moved to their seed's folder again
    Path("runs/demo/seed-1/sft/checkpoints/export/export.json").unlink()
    with pytest.raises(FileNotFoundError, match="seed 1: no sft export"):
        demo.run_demo(str(tmp_path / "world"), "runs/demo", str(EXPERIMENTS), seeds=[0, 1], from_stage="dpo")
