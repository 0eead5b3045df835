"""Merging stage exports (``anymal_lit.merge_exports``, ``anymal-lit merge``) on tiny exports made here: the shipped
tiny LM, a small random IMU encoder saved to disk, a linear projector, random LoRA adapters on q/v."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import anymal_lit
from anymal_lit.stages.export import write_export

REPO = Path(__file__).resolve().parents[2]
TINY_LM = REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def model_config(imu_dir: Path, num_tokens: int = 2, llm: Path = TINY_LM) -> dict:
    return {
        "class_path": "anymal_lit.AnyMALModel",
        "init_args": {
            "llm": {"class_path": "anymal_lit.CausalLM", "init_args": {"pretrained": str(llm)}},
            "encoders": {"imu": {"class_path": "anymal_lit.encoders.IMUEncoder",
                                 "init_args": {"pretrained": str(imu_dir)}}},
            "projectors": {"imu": {"class_path": "anymal_lit.projectors.LinearProjector",
                                   "init_args": {"in_dim": 32, "out_dim": 128, "num_tokens": num_tokens}}},
        },
    }  # fmt: skip


def make_export(folder: Path, imu_dir: Path, seed: int, lora: dict | None = LORA, **config_args) -> Path:
    """An export of the tiny model with random projector (and LoRA) weights drawn from ``seed``."""
    from anymal_lit.inference.model_config import build_model
    from anymal_lit.models.lora import LoRASettings, add_lora

    config = model_config(imu_dir, **config_args)
    model = build_model(copy.deepcopy(config))
    if lora:
        add_lora(model.llm, LoRASettings(**lora))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in model.named_parameters():
        if name.startswith("projectors.") or "lora_" in name:
            state[name] = param.detach() + 0.2 * torch.randn(param.shape, generator=generator)
    meta = {"stage": "sft" if lora else "align", "global_step": 1, "modalities": ["imu"], "model": config}
    if lora:
        meta["lora"] = lora
    return write_export(state, folder, meta)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from anymal_lit.encoders.imu import IMUEncoder, IMUEncoderConfig

    root = tmp_path_factory.mktemp("merge")
    torch.manual_seed(0)
    imu = root / "imu"
    IMUEncoder(config=IMUEncoderConfig(width=32, layers=1, heads=2)).save_pretrained(imu)
    return {
        "imu": imu,
        "align": make_export(root / "align", imu, seed=0, lora=None),
        "a": make_export(root / "a", imu, seed=1),
        "b": make_export(root / "b", imu, seed=2),
    }


def imu_batch(model, seed: int = 0) -> dict:
    tokenizer = model.llm.tokenizer
    prompts = ["<imu>\nWhat am I doing?", "Describe this: <imu>"]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]  # fmt: skip
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    pieces = torch.randn(2, 6, 100, generator=torch.Generator().manual_seed(seed))
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "ids": ["0", "1"],
            "media": {"imu": {"pieces": pieces, "counts": torch.tensor([1, 1])}}}  # fmt: skip


def generations(export: Path) -> tuple[list[str], torch.Tensor]:
    model = anymal_lit.load_model(export)
    batch = imu_batch(model)
    return model.generate(batch, max_new_tokens=12), model(batch)["logits"]


def lora_updates(tensors: dict[str, torch.Tensor], lora: dict) -> dict[str, torch.Tensor]:
    """Module -> its update ``alpha / r * B @ A``."""
    scale = lora["alpha"] / lora["r"]
    return {k.replace(".lora_A.", "."): scale * tensors[k.replace("lora_A", "lora_B")] @ v
            for k, v in tensors.items() if ".lora_A." in k}  # fmt: skip


def test_interpolation_end_points_reproduce_each_parent(exports, tmp_path):
    from anymal_lit.inference.merging import write_merged_export

    parents = {k: generations(exports[k]) for k in "ab"}
    assert parents["a"][0] != parents["b"][0]  # the parents do differ, so the check means something
    for weights, parent in (([1.0, 0.0], "a"), ([0.0, 1.0], "b")):
        texts, logits = generations(write_merged_export([exports["a"], exports["b"]], weights, tmp_path / parent))
        assert texts == parents[parent][0], (weights, texts, parents[parent][0])
        torch.testing.assert_close(logits, parents[parent][1], rtol=0, atol=1e-5)


def test_linear_merge_of_projectors_is_the_weighted_average(exports):
    merged = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.3, 0.7])
    a, b = (load_file(str(exports[k] / "trainable.safetensors")) for k in "ab")
    names = [k for k in a if k.startswith("projectors.")]
    assert names
    for name in names:
        torch.testing.assert_close(merged[name], 0.3 * a[name] + 0.7 * b[name], rtol=0, atol=1e-6)


def test_linear_merge_of_lora_is_the_weighted_sum_of_updates(exports, capsys):
    a, b = (load_file(str(exports[k] / "trainable.safetensors")) for k in "ab")
    merged = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.3, 0.7])
    stacked = {**LORA, "r": 2 * LORA["r"], "alpha": 2 * LORA["alpha"]}  # the rank and alpha the merge records
    got = lora_updates(merged, stacked)
    want = {k: 0.3 * u + 0.7 * lora_updates(b, LORA)[k] for k, u in lora_updates(a, LORA).items()}
    assert set(got) == set(want) and len(got) == 8  # q and v of 4 layers
    error = max(float((got[k] - want[k]).abs().max()) for k in want)
    naive = {k: (0.3 * a[k] + 0.7 * b[k]) for k in a if "lora_" in k}  # averaging A and B apart: not the update
    naive_error = max(float((u - want[k]).abs().max()) for k, u in lora_updates(naive, LORA).items())
    with capsys.disabled():
        print(
            f"\nLoRA linear merge: max |update - weighted sum| = {error:.2e} (A, B averaged apart: {naive_error:.2e})"
        )
    assert error < 1e-5 and naive_error > 1e-2
    # task arithmetic against a base with LoRA: a + 0.5 (a - a) + 1.0 (b - a) = b, the base's adapter stacked too
    merged = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.5, 1.0], base=exports["a"])
    got = lora_updates(merged, {**LORA, "r": 3 * LORA["r"], "alpha": 3 * LORA["alpha"]})
    assert max(float((got[k] - u).abs().max()) for k, u in lora_updates(b, LORA).items()) < 1e-5
    torch.testing.assert_close(merged["projectors.imu.proj.weight"], b["projectors.imu.proj.weight"])


def test_ties_and_dare_merge_against_a_base(exports, tmp_path):
    from anymal_lit.inference.merging import write_merged_export

    with pytest.raises(ValueError, match="needs a base"):
        anymal_lit.merge_exports([exports["a"], exports["b"]], [0.5, 0.5], method="ties")
    merged = write_merged_export([exports["a"], exports["b"]], [1.0, 1.0], tmp_path / "ties", method="ties",
                                 base=exports["align"], density=1.0)  # fmt: skip
    meta = json.loads((merged / "export.json").read_text())
    assert meta["merge"]["base"] == str(exports["align"].resolve()) and meta["merge"]["lora_combination"] == "svd"
    # density 1 and two parents: TIES keeps every entry and takes the mean of those agreeing with the elected sign
    tensors = load_file(str(merged / "trainable.safetensors"))
    a, b, base = (load_file(str(exports[k] / "trainable.safetensors")) for k in ("a", "b", "align"))
    name = "projectors.imu.proj.weight"
    da, db = a[name] - base[name], b[name] - base[name]
    agree = torch.sign(da) == torch.sign(db)
    want = base[name] + torch.where(agree, (da + db) / 2, torch.where((da + db) >= 0, da.clamp(min=0) + db.clamp(min=0),
                                                                      da.clamp(max=0) + db.clamp(max=0)))  # fmt: skip
    torch.testing.assert_close(tensors[name], want, rtol=0, atol=1e-5)
    # TIES's sign election is element-wise: the merged update is no longer low-rank, the SVD's error says how far
    assert 0.0 < meta["merge"]["lora_svd_error"] < 1.0
    anymal_lit.load_model(merged)
    # DARE at density 1 is the plain weighted sum, which rank 2r holds exactly: the SVD path loses nothing then
    merged = write_merged_export([exports["a"], exports["b"]], [0.3, 0.7], tmp_path / "dare", method="dare_linear",
                                 base=exports["align"], density=1.0)  # fmt: skip
    assert json.loads((merged / "export.json").read_text())["merge"]["lora_svd_error"] < 1e-5
    got = lora_updates(load_file(str(merged / "trainable.safetensors")), {**LORA, "r": 8, "alpha": 16})
    want = {k: 0.3 * u + 0.7 * lora_updates(b, LORA)[k] for k, u in lora_updates(a, LORA).items()}
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5
    dare = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.5, 0.5], "dare_ties", exports["align"])
    again = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.5, 0.5], "dare_ties", exports["align"])
    assert all(torch.equal(dare[k], again[k]) for k in dare)  # DARE's drops are seeded: a merge is reproducible


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"lora": {**LORA, "r": 2}}, r"LoRA settings \(r: 4 vs 2\)"),
        ({"lora": {**LORA, "target_modules": ["q_proj"]}}, r"LoRA settings \(target_modules"),
        ({"lora": None}, "LoRA"),
        ({"num_tokens": 3}, r"projectors \(imu.init_args.num_tokens: 2 vs 3\)"),
        ({"llm": "other-lm"}, r"base LLM \(init_args.pretrained: .* \(different files\)\)"),
        ({"modalities": ["imu", "audio"]}, "modalities"),
    ],
)
def test_exports_of_different_models_are_refused_naming_the_difference(exports, tmp_path, variant, message):
    if "modalities" in variant:
        other = make_export(tmp_path / "x", exports["imu"], seed=3)
        meta = json.loads((other / "export.json").read_text())
        (other / "export.json").write_text(json.dumps({**meta, "modalities": variant["modalities"]}))
    elif "llm" in variant:
        import shutil

        llm = tmp_path / variant["llm"]  # a copy with another setting: another LLM
        shutil.copytree(TINY_LM, llm)
        config = json.loads((llm / "config.json").read_text())
        (llm / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
        other = make_export(tmp_path / "x", exports["imu"], seed=3, llm=llm)
    else:
        other = make_export(tmp_path / "x", exports["imu"], seed=3, **variant)
    with pytest.raises(ValueError, match=message):
        anymal_lit.merge_exports([exports["a"], other], [0.5, 0.5])


def test_bundles_merge_like_the_exports_they_were_written_from(exports, tmp_path):
    from anymal_lit.inference.bundle import export_bundle
    from anymal_lit.inference.merging import write_merged_export

    bundles = [export_bundle(exports[k], tmp_path / f"bundle_{k}") for k in "ab"]
    from_bundles = anymal_lit.merge_exports(bundles, [0.3, 0.7])  # each bundle holds its own copy of the LLM
    from_exports = anymal_lit.merge_exports([exports["a"], exports["b"]], [0.3, 0.7])
    assert sorted(from_bundles) == sorted(from_exports)
    assert all(torch.equal(from_bundles[k], from_exports[k]) for k in from_exports)
    anymal_lit.load_model(write_merged_export(bundles, [0.3, 0.7], tmp_path / "merged"))
    merged_lora = export_bundle(exports["a"], tmp_path / "bundle_merged", merge_lora=True)
    with pytest.raises(ValueError, match="merged into its LLM"):
        anymal_lit.merge_exports([merged_lora, bundles[1]], [0.5, 0.5])


def test_merge_command_writes_an_export_that_loads_and_continues(exports, tmp_path):
    from anymal_lit.commands import merge

    parser = argparse.ArgumentParser()
    merge.add_arguments(parser)
    out = tmp_path / "m"
    merge.run(parser.parse_args(["--exports", str(exports["a"]), str(exports["b"]), "--weights", "0.5", "0.5",
                                 "--out", str(out)]))  # fmt: skip
    meta = json.loads((out / "export.json").read_text())
    assert meta["merge"]["parents"] == [str(exports["a"].resolve()), str(exports["b"].resolve())]
    assert meta["merge"]["weights"] == [0.5, 0.5] and meta["merge"]["method"] == "linear"
    assert meta["lora"]["r"] == 2 * LORA["r"] and meta["lora"]["alpha"] == 2 * LORA["alpha"]
    model = anymal_lit.load_model(out)
    assert model.llm.model.peft_config["default"].r == 2 * LORA["r"]
    assert (out / "lora" / "adapter_config.json").is_file()  # the peft adapter beside it, as a stage writes
    # init_from: a stage with the recorded rank and alpha continues it
    from anymal_lit.inference.model_config import build_model
    from anymal_lit.models.lora import LoRASettings
    from anymal_lit.stages import SFTStage

    settings = LoRASettings(r=meta["lora"]["r"], alpha=meta["lora"]["alpha"], target_modules=LORA["target_modules"])
    SFTStage(build_model(meta["model"]), init_from=str(out), lora=settings)
    with pytest.raises(ValueError, match="1 weights"):
        merge.run(
            parser.parse_args(
                ["--exports", str(exports["a"]), str(exports["b"]), "--weights", "1", "--out", str(tmp_path / "n")]
            )
        )


def sweep_experiment(folder: Path, imu_dir: Path) -> Path:
    """An SFT experiment on the tiny model that validates two IMU questions with a QA callback."""
    import numpy as np
    import yaml

    rng = np.random.default_rng(0)
    lines = []
    for i, answer in enumerate(["walking", "running"]):
        np.save(folder / f"{i}.npy", rng.normal(size=(150, 6)).astype(np.float32))
        record = {"id": str(i), "imu": f"{i}.npy", "conversations": [
            {"from": "human", "value": "<imu>\nWhat am I doing?"}, {"from": "gpt", "value": answer}]}  # fmt: skip
        lines.append(json.dumps(record))
    (folder / "val.jsonl").write_text("\n".join(lines) + "\n")
    qa = {"data": str(folder / "val.jsonl"), "name": "qa", "max_new_tokens": 4}
    experiment = {
        "trainer": {"accelerator": "cpu", "logger": False, "limit_val_batches": 1, "enable_progress_bar": False,
                    "callbacks": [{"class_path": "anymal_lit.callbacks.QAEvalCallback", "init_args": qa}]},
        "model": {"class_path": "anymal_lit.stages.SFTStage",
                  "init_args": {"lora": LORA, "model": model_config(imu_dir)}},
        "data": {"class_path": "anymal_lit.data.ConversationDataModule",
                 "init_args": {"val_file": str(folder / "val.jsonl"), "batch_size": 2}},
    }  # fmt: skip
    (folder / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    return folder / "experiment.yaml"


@pytest.mark.integration
def test_sweep_scores_each_weight_with_the_experiments_callbacks(exports, tmp_path):
    from anymal_lit.commands import merge

    experiment = sweep_experiment(tmp_path, exports["imu"])
    parser = argparse.ArgumentParser()
    merge.add_arguments(parser)
    out = tmp_path / "sweep"
    merge.run(parser.parse_args(["--sweep", "0", "0.5", "1", "-c", str(experiment), "--exports", str(exports["a"]),
                                 str(exports["b"]), "--out", str(out)]))  # fmt: skip
    table = json.loads((out / "sweep.json").read_text())
    assert [row["weights"] for row in table["rows"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    for row in table["rows"]:
        assert {"loss", "qa/vqa_official", "qa/exact_match"} <= set(row["scores"])
        assert (Path(row["export"]) / "export.json").is_file()
        assert (Path(row["export"]) / "predictions" / "sft_qa.json").is_file()  # each mix's own predictions
    losses = [row["scores"]["loss"] for row in table["rows"]]
    assert len(set(losses)) == 3  # each weight was loaded and scored, not the first merge three times
    markdown = (out / "sweep.md").read_text()
    assert "| 0.5, 0.5 |" in markdown and "qa/vqa_official" in markdown
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file()  # Lightning's side files land in the sweep's folder, not the cwd
    # the end points are the parents: t=0 generates what parent A does
    predictions = json.loads((Path(table["rows"][0]["export"]) / "predictions" / "sft_qa.json").read_text())
    model = anymal_lit.load_model(exports["a"])
    from anymal_lit.data.records import read_records
    from anymal_lit.inference.chat import prepare_batch

    records = read_records(tmp_path / "val.jsonl", {"imu": "<imu>"})
    assert model.generate(prepare_batch(model, records), max_new_tokens=4) == [predictions[r.id] for r in records]
    # a sweep of other parents into the same folder merges again instead of scoring the stale t=0 folder
    merge.run(parser.parse_args(["--sweep", "0", "-c", str(experiment), "--exports", str(exports["b"]),
                                 str(exports["a"]), "--out", str(out)]))  # fmt: skip
    again = json.loads((out / "sweep.json").read_text())["rows"][0]
    assert again["scores"]["loss"] == pytest.approx(losses[2])  # t=0 of (b, a) is b, the first sweep's t=1


def test_merge_exports_signature_is_the_documented_contract():
    import inspect

    params = inspect.signature(anymal_lit.merge_exports).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("paths", inspect.Parameter.empty), ("weights", inspect.Parameter.empty), ("method", "linear"), ("base", None)
    ]  # fmt: skip
