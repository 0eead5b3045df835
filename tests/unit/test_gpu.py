"""What only a GPU exercises: NCCL collectives (CUDA tensors only), bf16-mixed training, DeepSpeed's CUDA optimizer.

Skipped on machines without CUDA (see ``pytest_collection_modifyitems`` in tests/conftest.py)."""

import socket

import lightning.pytorch as L
import pytest
import torch
import torch.distributed as dist

from anymal_lit.collectives import all_reduce_sum, collective_device
from anymal_lit.data import ImageTextDataModule
from anymal_lit.stages import AlignmentStage
from anymal_lit.stages.optimization import OptimizerSettings
from tests.conftest import build_model

pytestmark = pytest.mark.gpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_collectives_run_on_the_cuda_device():
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        device = collective_device()
        assert device == torch.device("cuda", torch.cuda.current_device())
        counts = torch.tensor([3.0, 4.0], dtype=torch.float64)  # a CPU tensor, as the callbacks count
        dist.all_reduce(counts.to(device))  # what all_reduce_sum hands NCCL: accepted
        assert torch.equal(all_reduce_sum(counts), counts) and all_reduce_sum(counts).device.type == "cpu"
        with pytest.raises((RuntimeError, ValueError)):
            dist.all_reduce(counts)  # the defect collectives.py guards against: NCCL rejects CPU tensors
    finally:
        dist.destroy_process_group()


def test_bf16_mixed_alignment_trains_on_cuda(tmp_path, tiny_world):
    torch.manual_seed(0)
    stage = AlignmentStage(build_model(tiny_world), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1))
    before = {k: v.detach().clone() for k, v in stage.model.projectors.state_dict().items()}
    dm = ImageTextDataModule(train_file=str(tiny_world / "image_caption_train.jsonl"), batch_size=4)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=3, default_root_dir=tmp_path,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(stage, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    after = stage.model.projectors.state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before)


@pytest.mark.slow
def test_deepspeed_fused_adam_steps_on_cuda():
    from deepspeed.ops.adam import FusedAdam

    param = torch.nn.Parameter(torch.ones(16, device="cuda"))
    optimizer = FusedAdam([param], lr=0.1)
    param.sum().backward()
    optimizer.step()
    assert torch.all(param < 1)  # one Adam step against a positive gradient lowers every element by ~lr
