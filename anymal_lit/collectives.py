"""Collectives across processes, in one place: gather Python objects, sum counts, gather sharded parameters whole.

Pure torch (no Lightning), so the model library can use it. Every function is a no-op without an initialised
process group of more than one process, and a collective otherwise: call it on every rank, in the same order.

Tensors handed to a collective live on the device of the process group's backend (:func:`collective_device`):
NCCL accepts only CUDA tensors and gloo only CPU ones, so a CPU tensor that passes every gloo test would fail the
first multi-GPU run. Results come back on the caller's device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """An initialised process group of more than one process (collectives are needed)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device(group: Any = None) -> torch.device:
    """The device whose tensors the backend of ``group`` (default: the world) reduces: ``cuda:<current>`` for NCCL,
    the matching accelerator for other device backends (``xccl``, ``hccl``), ``cpu`` for gloo / MPI.

    A mixed backend (``cpu:gloo,cuda:nccl``) handles both; the accelerator is chosen, as for plain NCCL.
    """
    backend = str(dist.get_backend(group)).lower()
    defaults = dist.Backend.default_device_backend_map  # device type -> its backend ("mps" -> "gloo": CPU tensors)
    if ":" in backend:  # "cpu:gloo,cuda:nccl": the device types are named
        device_types = [pair.split(":")[0] for pair in backend.split(",")]
    else:
        device_types = [device for device, name in defaults.items() if name == backend]
    for device_type in device_types:
        if device_type != "cpu" and defaults.get(device_type) != "gloo":
            return torch.device(device_type, torch.get_device_module(device_type).current_device())
    return torch.device("cpu")


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` without a process group). Objects must pickle."""
    if not is_distributed():
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)  # torch serialises on the backend's device (the current CUDA device for NCCL)
    return parts


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate the ``local`` lists of every process, in rank order."""
    return [item for part in all_gather_objects(list(local)) for item in part]


def gather_dicts(local: dict[Any, Any]) -> dict[Any, Any]:
    """Merge the ``local`` dicts of every process (a later rank's value wins on a shared key)."""
    merged: dict[Any, Any] = {}
    for part in all_gather_objects(dict(local)):
        merged.update(part)
    return merged


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over every process, returned on ``values``' device (a new tensor).

    Counts stay exact in float64 (or integer dtypes) whatever device the backend reduces on.
    """
    if not is_distributed():
        return values.clone()
    reduced = values.detach().to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device)


def all_reduce_max(value: int) -> int:
    """The largest ``value`` over every process (e.g. the longest per-rank loop, so that every rank runs it)."""
    if not is_distributed():
        return int(value)
    reduced = torch.tensor([int(value)], dtype=torch.long, device=collective_device())
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return int(reduced.item())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 DTensor shard (a collective on its mesh); plain tensors pass through."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def gathered_state(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole copies of possibly sharded parameters: FSDP2 DTensors or DeepSpeed ZeRO-3 partitions (whose ``.data``
    is empty outside a gather). A collective under sharding: call on every rank."""
    partitioned = [p for p in named.values() if hasattr(p, "ds_id")]
    if partitioned:
        import deepspeed  # only present when DeepSpeed partitioned the parameters

        with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
            return {k: v.detach().clone() for k, v in named.items()}
    return {k: full_tensor(v.detach()) for k, v in named.items()}
