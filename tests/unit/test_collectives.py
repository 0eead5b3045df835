"""The device collectives put their tensors on: the process group backend's (NCCL rejects CPU tensors)."""

import pytest
import torch

from anymal_lit import collectives


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("nccl", "cuda:1"), ("cpu:gloo,cuda:nccl", "cuda:1"), ("gloo", "cpu"), ("mpi", "cpu")],
)
def test_collective_device_follows_the_backend(monkeypatch, backend, expected):
    monkeypatch.setattr(collectives.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # the rank's device, as Lightning sets it
    assert collectives.collective_device() == torch.device(expected)


def test_all_reduce_sum_moves_a_cpu_tensor_to_the_nccl_device_and_back(monkeypatch):
    seen = []

    def all_reduce(tensor, op=None):
        seen.append(tensor.device)
        tensor.mul_(2)  # two ranks holding the same counts

    monkeypatch.setattr(collectives, "is_distributed", lambda: True)
    monkeypatch.setattr(collectives, "collective_device", lambda group=None: torch.device("meta"))
    monkeypatch.setattr(collectives.dist, "all_reduce", all_reduce)
    counts = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    with pytest.raises(NotImplementedError):  # meta tensors hold no data to copy back: proves the move happened
        collectives.all_reduce_sum(counts)
    assert seen == [torch.device("meta")]
    assert counts.tolist() == [1.0, 2.0, 3.0]  # the caller's tensor is left alone


def test_without_a_process_group_collectives_are_local():
    assert collectives.gather_objects([1, "a"]) == [1, "a"]
    assert collectives.gather_dicts({"x": 1}) == {"x": 1}
    assert collectives.all_reduce_sum(torch.tensor([2.0])).tolist() == [2.0]
    assert collectives.all_reduce_max(3) == 3
