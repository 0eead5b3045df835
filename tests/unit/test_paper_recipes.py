"""The paper recipes (experiments/anymal_paper/{sft,dpo,align_image_70b,align_imu_8b}.yaml) hold the paper's numbers
once parsed by the kit's CLI, and the DPO stage runs the schedule and NEFTune the paper describes."""

import contextlib
import io
import os

import pytest
import torch
import yaml

from anymal_lit.models.lora import LoRASettings
from anymal_lit.stages import DPOStage, OptimizerSettings, lr_multiplier
from tests.conftest import REPO

PAPER = REPO / "experiments" / "anymal_paper"
TINY_LM = REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm"

# appendix E.3 (SFT, DPO) and Table 11 (70B image, IMU) of AnyMAL, as issue #24 quotes them
SFT = {
    "lora_r": 8,
    "lora_alpha": 32,
    "steps": 3000,
    "batch": 128,
    "lr": 5e-5,
    "warmup": 40,
    "final": 0.1,
    "neftune": 10,
}
DPO = {"batch": 32, "lr": 1e-5, "warmup": 20, "final": 2 / 3, "eps": 0.05, "neftune": 10}
IMAGE_70B = {"batch": 26880, "steps": 25000, "layers": 12}


def parsed(name: str, tmp_path) -> dict:
    """``anymal-lit fit -c <recipe> --print_config`` in this process, as YAML."""
    from anymal_lit.lightning_cli import AnyMALCLI

    out, here = io.StringIO(), os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            AnyMALCLI(args=["fit", "-c", str(PAPER / name), "--print_config"])
    finally:
        os.chdir(here)
    assert exit_info.value.code in (0, None), out.getvalue()[-3000:]
    return yaml.safe_load(out.getvalue())


def global_batch(config: dict) -> int:
    trainer = config["trainer"]
    per_device = config["data"]["init_args"]["batch_size"]
    return per_device * trainer["devices"] * (trainer.get("num_nodes") or 1) * (trainer["accumulate_grad_batches"] or 1)


def test_sft_recipe_is_appendix_e3(tmp_path):
    config = parsed("sft.yaml", tmp_path)
    stage = config["model"]["init_args"]
    assert config["model"]["class_path"] == "anymal_lit.stages.SFTStage"
    lora, optimizer = stage["lora"], stage["optimizer"]
    assert (lora["r"], lora["alpha"], lora["target_modules"]) == (SFT["lora_r"], SFT["lora_alpha"], "all-linear")
    assert config["trainer"]["max_steps"] == SFT["steps"] and global_batch(config) == SFT["batch"]
    assert optimizer["lr"] == SFT["lr"] and optimizer["warmup_steps"] == SFT["warmup"]
    assert optimizer["decay"] == "cosine" and optimizer["min_lr_ratio"] == SFT["final"]
    assert stage["neftune_alpha"] == SFT["neftune"]
    # the stage's schedule: linear warm-up over 40 steps, then cosine to 10 % at the last step
    settings = OptimizerSettings(**optimizer)
    assert lr_multiplier(39, 3000, settings) == pytest.approx(1.0)
    assert lr_multiplier(3000, 3000, settings) == pytest.approx(0.1)


def test_dpo_recipe_is_appendix_e3(tmp_path):
    config = parsed("dpo.yaml", tmp_path)
    stage = config["model"]["init_args"]
    assert config["model"]["class_path"] == "anymal_lit.stages.DPOStage"
    optimizer = stage["optimizer"]
    assert global_batch(config) == DPO["batch"] and optimizer["lr"] == DPO["lr"]
    assert optimizer["warmup_steps"] == DPO["warmup"] and optimizer["min_lr_ratio"] == pytest.approx(DPO["final"])
    assert stage["label_smoothing"] == DPO["eps"] and stage["neftune_alpha"] == DPO["neftune"]
    # what the stage makes of it: warm-up, then a *linear* decay to 2/3 (not SFT's cosine)
    settings = OptimizerSettings(**optimizer)
    total = 220
    multipliers = [lr_multiplier(s, total, settings) for s in range(total + 1)]
    assert multipliers[19] == pytest.approx(1.0) and multipliers[-1] == pytest.approx(2 / 3)
    assert multipliers[120] == pytest.approx(1 - (1 / 3) * 0.5)  # halfway through the decay: halfway to 2/3
    steps = [b - a for a, b in zip(multipliers[20:], multipliers[21:])]
    assert max(steps) == pytest.approx(min(steps))  # a straight line


def test_70b_image_recipe_is_table_11(tmp_path):
    config = parsed("align_image_70b.yaml", tmp_path)
    model = config["model"]["init_args"]["model"]["init_args"]
    projector = model["projectors"]["image"]["init_args"]
    assert global_batch(config) == IMAGE_70B["batch"] and config["trainer"]["max_steps"] == IMAGE_70B["steps"]
    assert projector["num_layers"] == IMAGE_70B["layers"] and projector["num_latents"] == 64
    assert "70b" in model["llm"]["init_args"]["pretrained"].lower()
    assert (projector["in_dim"], projector["out_dim"]) == (1664, 8192)  # ViT-bigG/14 width, LLaMA-2-70B hidden


def test_imu_recipe_uses_an_8b_llm(tmp_path):
    config = parsed("align_imu_8b.yaml", tmp_path)
    model = config["model"]["init_args"]["model"]["init_args"]
    assert "8b" in model["llm"]["init_args"]["pretrained"].lower()
    projector = model["projectors"]["imu"]
    assert projector["class_path"].endswith("LinearProjector") and projector["init_args"]["num_tokens"] == 32
    assert projector["init_args"]["out_dim"] == 4096  # the 8B LLM's hidden size
    assert global_batch(config) == 256 and config["model"]["init_args"]["optimizer"]["lr"] == 1e-4  # v1 IMU row


def test_dpo_neftune_noises_the_policy_and_never_the_reference():
    from anymal_lit import AnyMALModel, CausalLM

    torch.manual_seed(0)
    llm = CausalLM(
        config={"model_type": "llama", "vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4},
        tokenizer=str(TINY_LM),
    )  # fmt: skip
    stage = DPOStage(AnyMALModel(llm, {}, {}), neftune_alpha=10.0, lora=LoRASettings(dropout=0.0))
    assert stage.model.neftune_alpha == 10.0
    ids = torch.tensor([[105, 106, 107, 108, 109], [105, 106, 107, 110, 111]])
    assert not set(ids.flatten().tolist()) & set(llm.placeholder_ids.values())
    labels = ids.clone()
    labels[:, :3] = -100
    batch = {"ids": ["p", "p"], "input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "media": {}, "num_pairs": 1}  # fmt: skip
    stage.train()
    first, second = stage._reference_logps(batch), stage._reference_logps(batch)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])  # no noise on the reference
    assert stage.model.neftune_alpha == 10.0  # restored after the reference forward
    policy_a, policy_b = stage._logps(batch), stage._logps(batch)
    assert not torch.allclose(policy_a[0], policy_b[0])  # the policy's embeddings are noised
    stage.eval()
    assert torch.equal(stage._logps(batch)[0], stage._logps(batch)[0])  # and only in training
