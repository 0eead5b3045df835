"""`anymal-lit predict` writes its predictions: one JSONL line per record, in input order, with the references, on
one process and on two."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_inputs(world: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A predict file of 9 records (odd: 2 processes get uneven shards) and a minimal experiment YAML.

    VQA records (``answers``), MMBench records (``options``/``answer``; ids repeat the VQA ones, so lines are
    told apart by position, not id) and one open question without an assistant turn (no reference).
    """
    lines = lambda name: (world / name).read_text().splitlines()  # noqa: E731
    records = [json.loads(line) for line in lines("image_vqa_val.jsonl")[:5] + lines("image_mmbench_val.jsonl")[:3]]
    turn = [{"from": "human", "value": "<image>\nWhat is in the picture?"}]
    records.append({"id": "open-question", "image": "images/val/000002.png", "conversations": turn})
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = f"""
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  default_root_dir: {tmp_path / "run"}
  enable_model_summary: false
model:
  class_path: anymal_lit.stages.AlignmentStage
  init_args:
    model:
      class_path: AnyMALModel
      init_args:
        llm: {{class_path: CausalLM, init_args: {{pretrained: {world / "models/tiny-lm"}}}}}
        encoders:
          image:
            class_path: OpenCLIPImageEncoder
            init_args: {{model_name: "local-dir:{world / "models/tiny-clip"}"}}
        projectors:
          image:
            class_path: PerceiverResampler
            init_args: {{in_dim: 128, out_dim: 128, num_latents: 4, num_layers: 1, num_heads: 4}}
data:
  class_path: anymal_lit.data.ImageTextDataModule
  init_args: {{predict_file: {questions}, media_root: {world}, batch_size: 2}}
"""
    (tmp_path / "predict.yaml").write_text(config)
    return tmp_path / "predict.yaml", records


def check_lines(path: Path, records: list[dict]) -> list[dict]:
    """Every record exactly once, in input order, with its reference and its own keys."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    for line, record in zip(lines, records):
        assert isinstance(line["prediction"], str)
        turns = record["conversations"]
        if turns[-1]["from"] == "gpt":
            assert line["reference"] == turns[-1]["value"]
        else:
            assert "reference" not in line
        for key in ("answers", "options", "answer"):
            assert line.get(key) == record.get(key)
    return lines


def test_predict_writes_every_record_in_order_with_references(tiny_world, tmp_path):
    config, records = write_inputs(tiny_world, tmp_path)
    cmd = [sys.executable, "-m", "anymal_lit.cli", "predict", "-c", str(config), "--predictions.max_new_tokens", "3"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Predicting" in proc.stdout + proc.stderr  # Lightning's progress bar
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"wrote {len(records)} predictions to "), proc.stdout[-2000:]
    path = Path(last.split(" to ", 1)[1])
    assert path.name == "predictions.jsonl" and (tmp_path / "run") in path.parents  # the run's folder by default
    lines = check_lines(path, records)
    assert all(len(line["prediction"].split()) <= 3 for line in lines)  # --predictions.max_new_tokens 3


def test_predict_on_two_processes_writes_each_record_once_in_order(tiny_world, tmp_path):
    config, records = write_inputs(tiny_world, tmp_path)
    script = REPO / "tests/integration/scripts/predict_ddp.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    env = {**os.environ, **ENV}
    proc = subprocess.run([*cmd, str(config), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    for name in ("sharded", "everyone"):
        run = result[name]
        assert run["world_size"] == 2
        assert run["counts"]["written"] == len(records) and run["counts"]["skipped"] == 0, name
        check_lines(Path(run["path"]), records)
    # each process generated every record, so each arrived twice and was kept once
    assert result["everyone"]["counts"]["generated"] == 2 * len(records)
