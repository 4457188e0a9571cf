"""Process-group set-up for multi-GPU (or multi-process CPU) training with torchrun.

``torchrun --nproc_per_node=N -m reidcore.cli train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
joins the group when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU, so the same code path
is testable without a GPU). A single process needs nothing and gets ``world_size == 1``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly trivial) process group."""

    rank: int = 0
    """Global rank (0 writes checkpoints, logs and evaluates)."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this machine: the CUDA device index it uses."""
    device: torch.device = torch.device("cpu")
    """The device this process trains on."""

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; else ``name``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA but torch sees no CUDA device")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group described by the environment, or run alone.

    With ``WORLD_SIZE > 1`` (torchrun, or a test that sets the variables) the default group
    is initialised with NCCL on CUDA and gloo on CPU; an already initialised group is reused.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("rank %d/%d joined the %s process group", rank, world_size, backend)
    return DistInfo(rank, world_size, local_rank, device)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op alone)."""
    if info.distributed:
        dist.barrier()


def average_scalars(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean of each value over the ranks (for logging epoch losses); identity alone."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if info.device.type == "cuda":
        t = t.to(info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= info.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (no-op alone)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
