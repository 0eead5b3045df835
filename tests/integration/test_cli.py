"""The real `anymal-lit` command on the demo YAML, pointed at a miniature toy world."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "anymal_lit.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture()
def workdir(tmp_path, tiny_world):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "toyworld").symlink_to(tiny_world)
    return tmp_path


def test_fit_then_validate_through_the_cli(workdir):
    yaml = str(REPO / "experiments" / "demo" / "align_image.yaml")
    short = [
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--model.init_args.optimizer.warmup_steps",
        "1",
    ]
    cli("fit", "-c", yaml, *short, cwd=workdir)
    card = json.loads((workdir / "runs/demo/scorecard.json").read_text())
    caption = card["stages"]["align"]["image_caption"]
    assert {"cider_before", "cider", "bleu_4", "meteor", "rouge_l"} <= set(caption)
    ckpt_dir = workdir / "runs/demo/align_image/checkpoints"
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("model.projectors.") for k in ckpt["state_dict"])
    assert (ckpt_dir / "export" / "trainable.safetensors").is_file()
    events = list((workdir / "runs/demo/align_image/tensorboard").rglob("events.out.tfevents*"))
    assert events, "TensorBoard logs are written"

    (workdir / "runs/demo/scorecard.json").unlink()
    cli("validate", "-c", yaml, "--ckpt_path", str(ckpt_dir / "last.ckpt"), cwd=workdir)
    validated = json.loads((workdir / "runs/demo/scorecard.json").read_text())["stages"]["align"]["image_caption"]
    assert validated["cider"] == pytest.approx(caption["cider"], abs=1e-9)  # same weights, same greedy captions


def printed_config(*args: str, cwd: Path) -> str:
    """``anymal-lit fit <args> --print_config`` in this process (a subprocess per YAML paid ~15 s of imports each)."""
    import contextlib
    import io

    from anymal_lit.lightning_cli import AnyMALCLI

    out, here = io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            AnyMALCLI(args=["fit", *args, "--print_config"])
    finally:
        os.chdir(here)
    assert exit_info.value.code in (0, None), out.getvalue()[-3000:]
    return out.getvalue()


def test_every_shipped_yaml_parses(workdir):
    for yaml in sorted((REPO / "experiments").rglob("*.yaml")):
        assert "model:" in printed_config("-c", str(yaml), cwd=workdir)


def test_paper_recipes_hold_table_11_settings(workdir):
    import yaml as pyyaml

    def parsed(name: str) -> dict:
        return pyyaml.safe_load(printed_config("-c", str(REPO / "experiments/anymal_paper" / name), cwd=workdir))

    image, audio, video, imu = (parsed(f"align_{m}.yaml") for m in ("image", "audio", "video", "imu"))
    projector = image["model"]["init_args"]["model"]["init_args"]["projectors"]["image"]["init_args"]
    assert (projector["num_latents"], projector["num_layers"]) == (64, 6)
    trainer = image["trainer"]
    global_batch = image["data"]["init_args"]["batch_size"] * trainer["devices"] * trainer["num_nodes"]
    assert (
        global_batch == 2048
        and image["model"]["init_args"]["optimizer"]["lr"] == 2e-4
        and trainer["max_steps"] == 100000
    )
    audio_model = audio["model"]["init_args"]["model"]["init_args"]
    assert audio_model["encoders"]["audio"]["class_path"].endswith("ClapAudioEncoder")
    assert audio_model["projectors"]["audio"]["class_path"].endswith("LinearProjector")
    assert audio_model["projectors"]["audio"]["init_args"]["num_tokens"] == 32
    assert audio["data"]["init_args"]["batch_size"] * audio["trainer"]["devices"] == 128
    assert audio["model"]["init_args"]["optimizer"]["lr"] == 1e-4
    video_projector = video["model"]["init_args"]["model"]["init_args"]["projectors"]["video"]["init_args"]
    assert (video_projector["num_latents"], video_projector["num_layers"]) == (32, 4)
    imu_projector = imu["model"]["init_args"]["model"]["init_args"]["projectors"]["imu"]
    assert imu_projector["class_path"].endswith("LinearProjector") and imu_projector["init_args"]["num_tokens"] == 32


def test_list_shows_components_and_presets(workdir):
    out = cli("list", "--conf", str(REPO / "conf"), cwd=workdir).stdout
    for name in (
        "OpenCLIPImageEncoder",
        "PerceiverResampler",
        "LinearProjector",
        "AlignmentStage",
        "ImageTextDataModule",
    ):
        assert name in out
    assert "num_latents: int = 64" in out


def test_three_stage_chain_through_the_cli(workdir):
    """align (4 modalities) -> SFT -> DPO, each loading the previous stage's export (short runs on the mini world)."""
    quick = ["--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"]
    for name, steps in (("align", "2"), ("sft", "2"), ("dpo", "2")):
        yaml = str(REPO / "experiments" / "demo" / f"{name}.yaml")
        cli(
            "fit",
            "-c",
            yaml,
            "--trainer.max_steps",
            steps,
            "--model.init_args.optimizer.warmup_steps",
            "1",
            *quick,
            cwd=workdir,
        )
        assert (workdir / f"runs/demo/{name}/checkpoints/export/trainable.safetensors").is_file()
    card = json.loads((workdir / "runs/demo/scorecard.json").read_text())["stages"]
    for modality in ("image", "audio", "video", "imu"):  # one alignment run, all four modalities
        assert {"cider_before", "cider"} <= set(card["align"][f"{modality}_caption"])
    assert "vqa_official" in card["sft"]["image_imu_qa"]  # interleaved image + IMU questions
    assert {"vqa_official", "exact_match", "vqa_official_before"} <= set(card["sft"]["vqa"])
    assert {"accuracy_before", "accuracy", "reward_accuracy"} <= set(card["dpo"]["preference"])
    pairs = len((workdir / "runs/toyworld/image_preference_val.jsonl").read_text().splitlines())
    for value in card["dpo"]["preference"].values():  # exact fractions of the held-out pairs (360/400 is 0.9)
        assert value in {k / pairs for k in range(pairs + 1)}
    assert "vqa_official" in card["dpo"]["vqa"]
    assert {"circular", "vanilla", "circular_before"} <= set(card["sft"]["mmbench"])
    lora = workdir / "runs/demo/dpo/checkpoints/export/lora/adapter_config.json"
    assert lora.is_file()  # LoRA also exported in peft's own format
    dpo_ckpt = torch.load(workdir / "runs/demo/dpo/checkpoints/last.ckpt", weights_only=False)
    assert all("lora_" in k and ".default." in k for k in dpo_ckpt["state_dict"])  # projectors frozen, no reference


def test_cache_features_then_train_from_the_cache_and_fsdp_config_parses(workdir):
    yaml = str(REPO / "experiments" / "demo" / "align_image.yaml")
    cache = ["--data.init_args.feature_cache", "runs/cache"]
    out = cli("cache-features", "-c", yaml, *cache, cwd=workdir).stdout
    stats = json.loads(out[out.index("{") :])
    assert stats["image"]["encoded"] > 0 and stats["image"]["hits"] == 0
    again = cli("cache-features", "-c", yaml, *cache, cwd=workdir).stdout
    assert json.loads(again[again.index("{") :])["image"]["encoded"] == 0  # nothing new to encode
    short = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.callbacks", "[]"]
    strict = ["--data.init_args.require_cached_features", "true"]
    cli("fit", "-c", yaml, *cache, *strict, *short, cwd=workdir)  # every file from the cache, none decoded
    strategy = str(REPO / "conf" / "strategy" / "fsdp.yaml")
    printed = printed_config("-c", yaml, "-c", strategy, cwd=workdir)
    assert "anymal_lit.strategies.FSDP2Strategy" in printed
