"""The real `anymal-lit` command on the demo YAML, pointed at a miniature toy world."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from anymal_lit.toyworld.preferences import caption_prompts, onpolicy_preferences
from tests.conftest import REPO, run_cli_session
from tests.integration.tensorboard_server import tensorboard

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


def without_meteor(yaml: str, folder: Path) -> list[str]:
    """``-c <file>`` giving ``yaml``'s own callbacks with METEOR off in its caption evaluations (each starts a Java
    process that loads METEOR's tables, for a score the caller does not check; test_fit_then_validate's fit does)."""
    import yaml as pyyaml

    callbacks = pyyaml.safe_load(Path(yaml).read_text())["trainer"]["callbacks"]
    for callback in callbacks:
        if callback["class_path"].endswith(".CaptionEvalCallback"):
            callback["init_args"]["with_meteor"] = False
    override = folder / f"{Path(yaml).stem}_without_meteor.yaml"
    override.write_text(pyyaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return ["-c", str(override)]


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
    cli("validate", "-c", yaml, *without_meteor(yaml, workdir), "--ckpt_path", str(ckpt_dir / "last.ckpt"), cwd=workdir)
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


def weights_named(path: Path, cwd: Path) -> tuple[list[str], list[str]]:
    """The weights a preset names (``pretrained`` / ``model_name`` values, nested ones too), split into those found
    on this machine (relative to ``cwd``) and the others (a hub model, a /checkpoints/... file to provide)."""
    import yaml

    found, external = [], []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("pretrained", "model_name") and isinstance(value, str):
                    local = value.removeprefix("local-dir:")
                    if "/" in local:  # an architecture name alone (ViT-L-14) is no weights
                        (found if (cwd / local).exists() else external).append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(path.read_text()))
    return found, external


FRAGMENTS = {"llms": "CausalLM", "encoders": "ModalityEncoder", "projectors": "Projector", "models": "AnyMALModel"}
"""``conf/`` folders of model fragments and the type each configures (what a YAML's ``model:`` slot would take)."""


def fragment(path: Path, cwd: Path, device: str | None) -> object:
    """A ``conf/<kind>/*.yaml`` fragment parsed as the argument type it configures (class_path and every init_arg
    checked against the signature), then instantiated on ``device`` (``meta``: no memory, no weights; None: parse
    only, returns the parsed config)."""
    import yaml
    from jsonargparse import ArgumentParser

    import anymal_lit
    from anymal_lit import encoders, projectors

    types = {"CausalLM": anymal_lit.CausalLM, "AnyMALModel": anymal_lit.AnyMALModel,
             "ModalityEncoder": encoders.ModalityEncoder, "Projector": projectors.Projector}  # fmt: skip
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--part", type=types[FRAGMENTS[path.parent.name]])
    here = os.getcwd()
    os.chdir(cwd)
    try:
        cfg = parser.parse_object({"part": yaml.safe_load(path.read_text())})
        if device is None:
            return cfg.part
        with torch.device(device):
            return parser.instantiate_classes(cfg).part
    finally:
        os.chdir(here)


def test_every_shipped_yaml_parses_and_instantiates(workdir):
    """Every YAML under conf/ and experiments/, each in the role it is shipped for:

    - experiment YAMLs are whole configs: parsed by the CLI; the demo's are also instantiated (model, data, trainer;
      those chained to an earlier stage without their ``init_from`` export, which only that stage writes);
    - strategy presets are composed with a demo experiment (``-c exp.yaml -c strategy.yaml``) and parsed (the
      strategy class and its arguments checked; DeepSpeed's presets ask for CUDA, so none is instantiated here);
    - LLM, encoder, projector and model presets are fragments: parsed as the type they configure and instantiated,
      the toy world's with their weights, weightless ones (projectors, any size) on the meta device; presets naming
      weights this machine lacks (a hub model, a /checkpoints/... file) are parse-only.
    """
    import yaml as pyyaml

    from anymal_lit.cli import AnyMALCLI

    every = {str(p.relative_to(REPO)) for d in ("conf", "experiments") for p in (REPO / d).rglob("*.y*ml")}
    checked = set()
    for name in sorted(every):
        path, kind = REPO / name, Path(name).parent.name
        if name.startswith("experiments/"):
            assert "model:" in printed_config("-c", str(path), cwd=workdir)
            if kind == "demo":
                chained = "init_from" in (pyyaml.safe_load(path.read_text())["model"].get("init_args") or {})
                no_export = ["--model.init_args.init_from", "null"] if chained else []
                here = os.getcwd()
                os.chdir(workdir)
                try:
                    cli = AnyMALCLI(args=["-c", str(path), *no_export], run=False)
                finally:
                    os.chdir(here)
                assert cli.model.model.modalities and cli.datamodule is not None and cli.trainer is not None
        elif kind == "strategy":
            demo = str(REPO / "experiments/demo/align_image.yaml")
            printed = printed_config("-c", demo, "-c", str(path), cwd=workdir)
            printed = pyyaml.safe_load("\n".join(x for x in printed.splitlines() if not x.startswith("[")))  # logs
            assert printed["trainer"]["strategy"] and printed["model"]["init_args"]["model"]
        elif kind in FRAGMENTS:
            found, external = weights_named(path, workdir)
            if external:  # parse-only: class path and every argument checked, no weights to load
                assert fragment(path, workdir, None).class_path.startswith("anymal_lit."), name
            else:  # weightless presets (projectors) on the meta device; the toy world's with their weights
                device = "cpu" if found else "meta"
                built = fragment(path, workdir, device)
                assert isinstance(built, torch.nn.Module), name
                assert all(p.device.type == device for p in built.parameters()), name
        else:
            raise AssertionError(f"{name}: no rule for YAMLs in {kind}/ (add one to this test)")
        checked.add(name)
    assert checked == every and len(every) >= 25


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
    """align (4 modalities) -> SFT -> DPO, each loading the previous stage's export (short runs on the mini world);
    align, SFT and the sampling of on-policy pairs run in one process (as ``anymal-lit demo`` runs them), DPO in a
    fresh one."""
    quick = ["--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"]

    def fit(name: str) -> list[str]:
        yaml = str(REPO / "experiments" / "demo" / f"{name}.yaml")
        short = ["--trainer.max_steps", "2", "--model.init_args.optimizer.warmup_steps", "1", *quick]
        return ["fit", "-c", yaml, *without_meteor(yaml, workdir), *short]

    # the demo's on-policy pairs: the SFT model's sampled captions, labelled by the world
    prompts = caption_prompts(workdir / "runs/toyworld", workdir / "runs/demo/prompts.jsonl", limit=4)
    samples = workdir / "runs/demo/samples.jsonl"
    sample = ["sample", "--model", "runs/demo/sft/checkpoints/export", "--data", str(prompts), "--media-root",
              "runs/toyworld", "--out", str(samples), "--num-samples", "3", "--max-new-tokens", "8"]  # fmt: skip
    run_cli_session(fit("align"), fit("sft"), sample, cwd=workdir)
    for name in ("align", "sft"):
        assert (workdir / f"runs/demo/{name}/checkpoints/export/trainable.safetensors").is_file()
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["samples"]) == 3 for r in rows)
    stats = onpolicy_preferences(workdir / "runs/toyworld", samples, workdir / "runs/demo/preference_train.jsonl")
    assert stats["pairs"] == 8  # each picture's caption and question pairs
    cli(*fit("dpo"), cwd=workdir)
    assert (workdir / "runs/demo/dpo/checkpoints/export/trainable.safetensors").is_file()
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
    check_tensorboard(workdir / "runs" / "demo")


def check_tensorboard(logdir: Path) -> None:
    """What TensorBoard shows of the three stages' logs, read through the server's HTTP API as the browser does:
    one paired picture per sample and modality (media + prompt + answer + references), the audio players, the
    scores, and no empty ``hp_metric`` chart."""
    with tensorboard(logdir) as board:
        scalars, images, audio = board.tags("scalars"), board.tags("images"), board.tags("audio")
        align = next(run for run in images if run.startswith("align"))
        for modality in ("image", "audio", "video", "imu"):
            tags = [t for t in images[align] if t.startswith(f"samples/{modality}_caption/")]
            assert tags, f"no sample figure of {modality} in {sorted(images[align])}"
            with Image.open(io.BytesIO(board.image(align, tags[0]))) as picture:
                assert picture.format == "PNG" and picture.width >= 300  # a figure, not a bare 64x64 frame
    assert any(t.startswith("samples/audio_caption/") and t.endswith("/audio") for t in audio[align])
    assert any(run.startswith("sft") for run in images)  # SFT's answers are shown with their pictures too
    assert any("cider" in tag for tag in scalars[align])
    assert not [(run, tag) for run, tags in scalars.items() for tag in tags if tag == "hp_metric"]


def test_cache_features_then_train_from_the_cache_and_fsdp_config_parses(workdir):
    yaml = str(REPO / "experiments" / "demo" / "align_image.yaml")
    cache = ["--data.init_args.feature_cache", "runs/cache"]
    out = cli("cache-features", "-c", yaml, *cache, cwd=workdir).stdout
    stats = json.loads(out[out.index("{") :])
    assert stats["image"]["encoded"] > 0 and stats["image"]["hits"] == 0
    short = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.callbacks", "[]"]
    strict = ["--data.init_args.require_cached_features", "true"]
    # a fresh process finds the first one's entries (cache keys are stable across processes), then trains in the
    # same process with every file from the cache, none decoded
    again = run_cli_session(
        ["cache-features", "-c", yaml, *cache], ["fit", "-c", yaml, *cache, *strict, *short], cwd=workdir
    ).stdout
    again_stats, _ = json.JSONDecoder().raw_decode(again, again.index("{"))  # the fit's output follows
    assert again_stats["image"]["encoded"] == 0  # nothing new to encode
    strategy = str(REPO / "conf" / "strategy" / "fsdp.yaml")
    printed = printed_config("-c", yaml, "-c", strategy, cwd=workdir)
    assert "anymal_lit.strategies.FSDP2Strategy" in printed
