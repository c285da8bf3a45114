"""DistributedDataParallel set-up from the environment that ``torchrun`` provides.

With ``WORLD_SIZE > 1`` (set by ``torchrun`` together with ``RANK``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) the default process group is
initialised from those variables: gloo for the CPU, NCCL for CUDA, where rank ``r`` uses the GPU
``LOCAL_RANK``. CPU ranks share the machine's cores: each gets ``cores / LOCAL_WORLD_SIZE``
threads (1 with 2 ranks on 2 cores). Without ``WORLD_SIZE`` (or with 1) nothing is set up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError

__all__ = ["Context", "setup", "teardown", "all_mean"]


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether setup() created the process group (and teardown() destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(name: str, local_rank: int, distributed: bool) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device': {name!r}, but CUDA is not available here; use 'cpu'")
        if distributed:
            device = torch.device("cuda", local_rank)  # one GPU per rank
        torch.cuda.set_device(device)
    return device


def setup(device_name: str) -> Context:
    """The rank's :class:`Context`; initialises the process group when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=_device(device_name, 0, False))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(device_name, local_rank, True)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // local))
    return Context(rank, world_size, local_rank, device, owns)


def teardown(context: Context) -> None:
    """Wait for every rank, then destroy the process group if :func:`setup` made it."""
    if context.distributed:
        dist.barrier()
        if context.owns_group:
            dist.destroy_process_group()


def all_mean(value: torch.Tensor, context: Context) -> torch.Tensor:
    """The mean of a tensor over the ranks (the tensor itself in one process)."""
    if not context.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / context.world_size
