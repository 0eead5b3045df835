"""`anymal-lit plan`: the meta-device estimate against what a CPU run of the same small model allocates."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from anymal_lit.memory_plan import Strategy, rank_memory, saved_tensor_bytes, trace_activations
from anymal_lit.planning import GiB, meta_model

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = str(REPO / "anymal_lit" / "toyworld" / "assets" / "tiny-lm")
LM = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
      "max_position_embeddings": 512}  # fmt: skip
IMU = {"channels": 6, "window": 32, "width": 32, "layers": 1, "heads": 2, "stem_stride": 4}
RESAMPLER = {"in_dim": 32, "out_dim": 64, "num_latents": 6, "num_layers": 1, "num_heads": 4, "num_input_positions": 8}
B, T, PIECES = 3, 40, 2  # rows, text tokens per row, IMU pieces per item


def experiment(stage: str) -> dict:
    stage_args = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}} if stage == "SFTStage" else {}
    model = {
        "llm": {"class_path": "CausalLM", "init_args": {"config": LM, "tokenizer": TOKENIZER}},
        "encoders": {"imu": {"class_path": "IMUEncoder", "init_args": {"config": IMU}}},
        "projectors": {"imu": {"class_path": "PerceiverResampler", "init_args": RESAMPLER}},
    }
    return {"model": {"class_path": f"anymal_lit.stages.{stage}", "init_args": {**stage_args, "model": {
        "class_path": "AnyMALModel", "init_args": model}}}}  # fmt: skip


def live_stage(stage: str):
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders.imu import IMUEncoder, IMUEncoderConfig
    from anymal_lit.models.lora import LoRASettings
    from anymal_lit.projectors import PerceiverResampler
    from anymal_lit.stages import AlignmentStage, SFTStage

    torch.manual_seed(0)
    llm = CausalLM(config=LM, tokenizer=TOKENIZER)
    model = AnyMALModel(
        llm, {"imu": IMUEncoder(config=IMUEncoderConfig(**IMU))}, {"imu": PerceiverResampler(**RESAMPLER)}
    )
    if stage == "SFTStage":
        return SFTStage(model, lora=LoRASettings(r=4, alpha=8, dropout=0.0), neftune_alpha=0.0)
    return AlignmentStage(model)


def batch(llm) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 250, (B, T), generator=g)
    ids[:, 1] = llm.placeholder_ids["imu"]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
        "ids": [f"r{i}" for i in range(B)],
        "media": {"imu": {"pieces": torch.randn(B * PIECES, 6, 32, generator=g), "counts": torch.full((B,), PIECES)}},
    }


@pytest.mark.parametrize("stage", ["AlignmentStage", "SFTStage"])
def test_plan_matches_a_cpu_step(stage: str) -> None:
    """Parameters, gradients and AdamW state exactly; saved activations of one forward within 15 %."""
    live = live_stage(stage)
    live.train()
    data = batch(live.model.llm)
    loss, measured = saved_tensor_bytes(lambda: live.model(data)["loss"], live.parameters())
    loss.backward()
    trainable = [p for p in live.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable)
    opt.step()

    meta = meta_model(experiment(stage))
    length = T - 1 + PIECES * RESAMPLER["num_latents"]  # the placeholder becomes the item's tokens
    acts = trace_activations(meta, B, length, {"imu": (B * PIECES, RESAMPLER["num_input_positions"])})
    plan = rank_memory(meta, Strategy("ddp", "ddp", None), 1, "32-true", acts)

    assert plan.params == sum(p.numel() * p.element_size() for p in live.parameters())
    assert plan.grads == sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    moments = [v for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert plan.optimizer == sum(v.numel() * v.element_size() for v in moments)
    assert abs(plan.activations - measured) <= 0.15 * measured, (plan.activations, measured)


def test_sharded_presets_divide_what_they_shard() -> None:
    meta = meta_model(experiment("SFTStage"))
    acts = trace_activations(meta, 1, 16, {})
    one = {k: rank_memory(meta, Strategy(k, k, "bf16-mixed"), 1, "bf16-mixed", acts) for k in ("ddp", "fsdp")}
    four = {k: rank_memory(meta, Strategy(k, k, "bf16-mixed"), 4, "bf16-mixed", acts) for k in ("ddp", "fsdp")}
    assert four["ddp"].static == one["ddp"].static
    assert four["fsdp"].params == one["fsdp"].params // 4
    assert four["fsdp"].optimizer == one["fsdp"].optimizer // 4
    zero2 = rank_memory(meta, Strategy("z", "zero2", "bf16-mixed"), 4, "bf16-mixed", acts)
    trainable = sum(p.numel() for p in meta.trainable())
    assert zero2.optimizer == trainable * 12 // 4  # fp32 master + m + v, sharded


@pytest.mark.slow
def test_plan_command_on_the_paper_13b_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    """No weights on disk: the 13B LLM and ViT-L come from the architectures the kit states."""
    from anymal_lit.commands import plan

    parser = argparse.ArgumentParser()
    plan.add_arguments(parser)
    args = parser.parse_args(["-c", str(REPO / "experiments/anymal_paper/align_image.yaml"), "--devices", "8",
                              "--strategies", str(REPO / "conf/strategy"), "--batch-size", "4"])  # fmt: skip
    plan.run(args)
    out = capsys.readouterr().out
    assert "LLM 13.016 B" in out
    for preset in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        assert f"\n{preset} " in out
    assert plan.parse_size("80GiB") == 80 * GiB
