"""Thin helpers around torch.distributed for the searchers and `python -m search.train`.

Single-process runs and `torchrun` runs go through the same code: every helper is a no-op when no
process group exists, so callers never branch on "am I distributed?".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly single-process) job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _initialised() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def _wants_cuda(device: str | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun job if there is one (NCCL on GPU, gloo on CPU), else describe a single process.

    Safe to call more than once: an existing process group is reused rather than re-created.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not _initialised():
        return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(device or _default_device()))

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = _wants_cuda(device)
    if use_cuda:
        # Pin the device before NCCL init so collectives never land on cuda:0 by accident.
        torch.cuda.set_device(local_rank)
    if not _initialised():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank, device=dev)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` in place across ranks and return it (unchanged without a process group)."""
    if _initialised():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average `t` in place across ranks and return it (unchanged without a process group)."""
    if _initialised():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        t.div_(tdist.get_world_size())
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank `src`'s `obj` on every rank (any picklable object)."""
    if not _initialised():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _initialised():
        tdist.barrier()


def cleanup() -> None:
    if _initialised():
        tdist.destroy_process_group()
