"""Shared fixtures: a miniature toy world (real files, tiny models saved in the standard formats)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports transformers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from anymal_lit.encoders.base import ModalityEncoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_SPEC = {
    "image_train": 64,
    "image_val": 12,
    "tiny_lm": "train",  # a few steps in place; test_toyworld checks the shipped one
    "tiny_clip": "train",
    "lm_corpus": 400,
    "lm_steps": 20,
    "lm_chat": 200,
    "lm_chat_steps": 10,
    "clip_steps": 3,
    "audio_train": 64,
    "audio_val": 8,
    "imu_train": 64,
    "imu_val": 8,
    "video_train": 16,
    "video_val": 8,
    "clap_steps": 3,
    "imu_steps": 3,
}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small toy world built through the real generator (same files and model formats as the demo's).

    ``ANYMAL_TEST_WORLD=<folder>`` keeps it there and reuses it while its spec is unchanged (the build trains the
    tiny models: ~20 s on an idle machine, many minutes on a loaded one); tests only read it."""
    from anymal_lit.toyworld import WorldSpec, build_world

    kept = os.environ.get("ANYMAL_TEST_WORLD")
    root = Path(kept) if kept else tmp_path_factory.mktemp("world")
    return build_world(root, WorldSpec(seed=3, **TINY_SPEC))


@pytest.fixture(scope="session")
def processors(tiny_world: Path) -> dict:
    """Media processors of the tiny world's image and IMU encoders (what a data module is bound with)."""
    from anymal_lit.encoders import IMUEncoder, OpenCLIPImageEncoder

    m = tiny_world / "models"
    return {
        "image": OpenCLIPImageEncoder(model_name=f"local-dir:{m / 'tiny-clip'}").media_processor(),
        "imu": IMUEncoder(pretrained=str(m / "tiny-imu")).media_processor(),
    }


@pytest.fixture(scope="session")
def tiny_llm_dir(tiny_world: Path) -> Path:
    return tiny_world / "models" / "tiny-lm"


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_world: Path) -> Path:
    return tiny_world / "models" / "tiny-clip"


def build_model(world: Path, num_latents: int = 4, num_layers: int = 1):
    """An AnyMALModel of the tiny world's saved LM and CLIP with a small resampler."""
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import OpenCLIPImageEncoder
    from anymal_lit.projectors import PerceiverResampler

    llm = CausalLM(pretrained=str(world / "models" / "tiny-lm"))
    encoder = OpenCLIPImageEncoder(model_name=f"local-dir:{world / 'models' / 'tiny-clip'}")
    projector = PerceiverResampler(
        encoder.output_dim, llm.hidden_size, num_latents=num_latents, num_layers=num_layers, num_heads=4
    )
    return AnyMALModel(llm, {"image": encoder}, {"image": projector})


def build_four_modality_model(world: Path, latents: int = 4, audio_tokens: int = 8, imu_tokens: int = 5):
    """An AnyMALModel of the tiny world's saved LM and its four encoders (CLIP for image and video, CLAP, IMU) with
    small projectors (``latents`` per resampler, ``audio_tokens`` / ``imu_tokens`` per linear projector)."""
    import torch

    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import ClapAudioEncoder, IMUEncoder, OpenCLIPImageEncoder, OpenCLIPVideoEncoder
    from anymal_lit.projectors import LinearProjector, PerceiverResampler

    torch.manual_seed(0)
    m = world / "models"
    llm = CausalLM(pretrained=str(m / "tiny-lm"))
    clip = f"local-dir:{m / 'tiny-clip'}"
    encoders = {
        "image": OpenCLIPImageEncoder(model_name=clip),
        "audio": ClapAudioEncoder(pretrained=str(m / "tiny-clap")),
        "video": OpenCLIPVideoEncoder(model_name=clip, frames_per_clip=2, clip_seconds=1.0),
        "imu": IMUEncoder(pretrained=str(m / "tiny-imu")),
    }
    projectors = {
        "image": PerceiverResampler(128, llm.hidden_size, num_latents=latents, num_layers=1, num_heads=4),
        "audio": LinearProjector(encoders["audio"].output_dim, llm.hidden_size, num_tokens=audio_tokens),
        "video": PerceiverResampler(128, llm.hidden_size, num_latents=latents, num_layers=1, num_heads=4),
        "imu": LinearProjector(encoders["imu"].output_dim, llm.hidden_size, num_tokens=imu_tokens),
    }
    return AnyMALModel(llm, encoders, projectors)


SHIPPED_LM = REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm"
"""The kit's shipped tiny chat LM: its tokenizer is the real one the random test LMs use."""


def random_llm(hidden_size: int = 64, num_hidden_layers: int = 2, **config):
    """A randomly initialised tiny Llama from a config, with the shipped tiny LM's tokenizer (builds in ~0.1 s)."""
    from anymal_lit import CausalLM

    cfg = {"model_type": "llama", "vocab_size": 646, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
           "num_hidden_layers": num_hidden_layers, "num_attention_heads": 4, "num_key_value_heads": 4,
           "max_position_embeddings": 512, "tie_word_embeddings": True, "pad_token_id": 0, "eos_token_id": 1,
           **config}  # fmt: skip
    return CausalLM(config=cfg, tokenizer=str(SHIPPED_LM))


def random_clip_config(width: int = 32, layers: int = 2, image_size: int = 64) -> str:
    """An open_clip architecture JSON (in the temporary folder, one file per architecture, rewritten in place rather
    than a new folder per call) for a random tiny CLIP (16-px patches: 16 tokens per 64-px tile)."""
    import json
    import tempfile

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": image_size, "patch_size": 16, "width": width, "layers": layers, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    path = Path(tempfile.gettempdir()) / f"anymal-lit-test-clip-{width}w-{layers}l-{image_size}px.json"
    if not path.is_file() or path.read_text() != json.dumps(cfg):
        path.write_text(json.dumps(cfg))
    return str(path)


def build_random_model(num_latents: int = 4, num_layers: int = 1, **llm_config):
    """An AnyMALModel of a random tiny LM (the kit's tokenizer) and a random tiny CLIP with a small resampler: what
    ``build_model`` gives without a trained toy world (seed it for repeatable weights)."""
    from anymal_lit import AnyMALModel
    from anymal_lit.encoders import OpenCLIPImageEncoder
    from anymal_lit.projectors import PerceiverResampler

    llm = random_llm(**llm_config)
    encoder = OpenCLIPImageEncoder(model_config=random_clip_config())
    projector = PerceiverResampler(
        encoder.output_dim, llm.hidden_size, num_latents=num_latents, num_layers=num_layers, num_heads=4
    )
    return AnyMALModel(llm, {"image": encoder}, {"image": projector})


class FeatureEncoder(ModalityEncoder):
    """A stand-in encoder whose pieces already are ``[P, N, dim]`` features (projector tests need no network)."""

    modality = "image"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @property
    def output_dim(self) -> int:
        return self.dim

    def encode(self, pieces: torch.Tensor) -> torch.Tensor:
        return pieces

    def media_processor(self):
        raise NotImplementedError("pieces are given as features")


@pytest.fixture(scope="session")
def image_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy world's picture files only (captions, SFT and preference JSONL, COCO references): no models, ~1 s.
    Same layout as ``tiny_world``, so tests of the library run on it with random models."""
    import numpy as np

    from anymal_lit.toyworld import WorldSpec
    from anymal_lit.toyworld.world import write_images, write_instructions

    root = tmp_path_factory.mktemp("image_data")
    rng = np.random.default_rng(3)
    write_images(root, WorldSpec(seed=3, image_train=32, image_val=8), rng)
    write_instructions(root, rng)
    return root


@pytest.fixture()
def tiny_model(tiny_world: Path):
    import torch

    torch.manual_seed(0)
    return build_model(tiny_world)


def run_cli(*args: str, cwd: Path, timeout: int = 600):
    """``python -m anymal_lit.cli <args>`` in ``cwd``; fails the test with the command's output on a non-zero exit."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "anymal_lit.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


SESSION = "import json, sys\nfrom anymal_lit.cli import main\nfor argv in json.loads(sys.argv[1]):\n    main(argv)"
"""Several ``anymal-lit`` commands, each through the command's entry point, one after another in one process."""


def run_cli_session(*commands: list[str], cwd: Path, timeout_each: int = 600):
    """``anymal-lit <args>`` for each of ``commands`` in turn, in one process started in ``cwd`` (as ``anymal-lit
    demo`` runs its stages: one start-up and one round of imports, ~10 s on 2 cores, for all), ``timeout_each``
    seconds per command; fails the test with the output on a non-zero exit."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SESSION, json.dumps(list(commands))], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout_each * len(commands),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="session")
def trained_exports(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path) -> dict[str, Path]:
    """Exports of a short SFT run (4 modalities, from fresh projectors) and of DPO after it, made by the real CLI (one
    process for both) on the demo YAMLs with the kit's shipped tiny chat LM (it answers, where the few-step test LM
    says nothing); ``workdir`` is the folder they ran in (``runs/toyworld`` links to the tiny world)."""
    workdir = tmp_path_factory.mktemp("trained")
    (workdir / "runs").mkdir()
    (workdir / "runs" / "toyworld").symlink_to(tiny_world)
    quick = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "0", "--trainer.callbacks", "[]",
             "--model.init_args.optimizer.warmup_steps", "1",
             "--model.init_args.model.init_args.llm.init_args.pretrained",
             str(REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm")]  # fmt: skip
    sft, dpo = (str(REPO / "experiments" / "demo" / f"{name}.yaml") for name in ("sft", "dpo"))
    pairs = ["--data.init_args.train_file", "runs/toyworld/image_preference_train.jsonl"]  # the world's own pairs
    # without the YAML's callbacks the checkpoints (and the export beside them) go to the logger's first version
    export = "runs/demo/sft/tensorboard/version_0/checkpoints/export"
    run_cli_session(
        ["fit", "-c", sft, *quick, "--model.init_args.init_from", "null"],
        ["fit", "-c", dpo, *quick, *pairs, "--model.init_args.init_from", export],
        cwd=workdir,
    )
    (sft_export,) = (workdir / "runs" / "demo" / "sft").rglob("export/export.json")
    assert sft_export.parent == workdir / export, sft_export  # the export DPO started from
    (dpo_export,) = (workdir / "runs" / "demo" / "dpo").rglob("export/export.json")
    return {"sft": sft_export.parent, "dpo": dpo_export.parent, "workdir": workdir}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run where CUDA is available and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
