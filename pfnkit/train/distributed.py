"""Distributed data-parallel set-up for runs started with torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def mean_across_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a scalar over all ranks (every rank must call this at the same step)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_across_ranks(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is True on any (so that all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group at the end of a run that ended normally on every rank: wait
    for the others, then destroy the group while the interpreter is fully alive.

    A process that exits with the group open leaves gloo's worker threads to be torn down
    during interpreter finalisation, which can abort it ("terminate called without an
    active exception"; pytorch/pytorch#190489): a loaded CI machine saw that once, after
    the run had finished and saved. Not called after an error, when a peer may never reach
    the barrier."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
