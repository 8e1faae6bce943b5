"""torch.distributed set-up for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N -m softlabels.cli train cfg.yaml`` sets RANK / WORLD_SIZE /
LOCAL_RANK; :func:`init_distributed` then joins the process group (NCCL on CUDA, gloo on CPU).
``data.batch_size`` stays the GLOBAL batch: each process takes positions ``rank::world_size``
of every batch, so N processes see exactly the batches of the single-process run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from softlabels.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device | None]:
    """Join the process group when launched by torchrun; returns (info, device or None).

    The device is ``cuda:LOCAL_RANK`` when CUDA is used, else None (the caller picks as usual).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("runtime.device asks for CUDA but none is available to this process")
    device = None
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local), device


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (no-op for one process); returns it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
