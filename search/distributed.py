"""Thin helpers around torch.distributed for the searchers and `python -m search.train`.

Single-process runs and `torchrun` runs go through the same code. Every collective is a method of the `DistInfo`
it runs over and is a no-op when that DistInfo describes one process, so callers never branch on "am I
distributed?", and work that must stay on one rank (a stage-2 candidate trained alone) simply passes
`dist.alone()`: its collectives then touch no other rank, whatever the job around it does.

Tensors are reduced over the job's backend (NCCL on GPUs). Objects (results, checkpoints, RNG states) and barriers go
through a gloo group instead: the ranks that wait there (for a stage-2 candidate another rank trains, for a download)
wait on the CPU, outside NCCL and its watchdog, for as long as the process group's timeout (`--dist-timeout`) allows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from fpnas_zoo.device import resolve_device

R = TypeVar("R")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly single-process) job, and the collectives over that job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def alone(self) -> DistInfo:
        """This process as a job of its own: same device, no collectives (training one network by itself)."""
        return replace(self, rank=0, world_size=1, local_rank=0)

    def _active(self) -> bool:
        return self.world_size > 1 and _initialised()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` in place across the ranks and return it."""
        if self._active():
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average `t` in place across the ranks and return it."""
        if self._active():
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            t.div_(self.world_size)
        return t

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Return rank `src`'s `obj` on every rank (any picklable object)."""
        if not self._active():
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=src, group=_object_group)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self._active():
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj, group=_object_group)
        return out

    def share_batch(self, batch_size: int) -> int:
        """This rank's part of a step's `batch_size` images: each step takes the images one process would, shared
        out over the ranks (`search.data` strides each epoch's order over them), so `--batch-size` means the same
        under torchrun as in one process. A batch the ranks cannot share equally is refused."""
        if batch_size % self.world_size:
            raise ValueError(f"--batch-size {batch_size} must be a multiple of the {self.world_size} processes: each "
                             "training step shares its batch out over them")
        return batch_size // self.world_size

    def barrier(self) -> None:
        if self._active():
            tdist.barrier(group=_object_group)

    def local_main_first(self, fn: Callable[[], R]) -> R:
        """Run `fn` on each machine's local rank 0 first, then on the other ranks (which wait at a barrier).

        For work that fills a cache on the local disk (a dataset download): one process downloads, the others
        then find the files. A failure of rank 0 reaches every rank instead of leaving the others at the barrier.
        """
        if not self._active():
            return fn()
        result, error = None, None
        if self.local_rank == 0:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - handed to every rank below, then raised
                error = e
        self.barrier()
        error = self.broadcast_object(error)
        if error is not None:
            raise error
        return result if self.local_rank == 0 else fn()


# The group of the object collectives and barriers: a gloo group beside an NCCL job, None (the job's own) otherwise.
_object_group: Any = None


def _initialised() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def init_distributed(device: str | None = None, timeout_minutes: float | None = None) -> DistInfo:
    """Join the torchrun job if there is one (NCCL on GPU, gloo on CPU), else describe a single process.

    Safe to call more than once: an existing process group is reused rather than re-created. A `device` this
    machine does not have (`cuda` without a GPU, `tpu`) is a ValueError naming --device. `timeout_minutes`: how
    long a collective may wait for the other ranks (`--dist-timeout`; default torch's, 10 minutes for NCCL and 30
    for gloo in torch 2.x), for the job's group and the gloo group of objects alike.
    """
    resolved = resolve_device(device)  # a device this machine has, or ValueError naming --device
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not _initialised():
        return DistInfo(rank=0, world_size=1, local_rank=0, device=resolved)

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolved.type == "cuda"
    if use_cuda:
        # Pin the device before NCCL init so collectives never land on cuda:0 by accident.
        torch.cuda.set_device(local_rank)
    if not _initialised():
        _init_process_group("nccl" if use_cuda else "gloo", timeout_minutes)
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank, device=dev)


def _init_process_group(backend: str, timeout_minutes: float | None = None) -> None:
    """`init_process_group` from torchrun's environment, in a store namespace of this attempt of the job, and beside
    an NCCL group the gloo group of the object collectives (`_object_group`).

    torchrun's agent serves the store the ranks meet in and keeps it across `--max-restarts` restarts, and the
    ranks of a restarted group would read what the killed group left there (the address of a dead peer: gloo's
    connectFullMesh is refused, or a rank waits for ever). `TORCHELASTIC_RESTART_COUNT`, the same for every rank
    of an attempt, keeps each attempt to keys of its own."""
    global _object_group
    store, rank, world_size = next(tdist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    timeout = {} if timeout_minutes is None else {"timeout": timedelta(minutes=timeout_minutes)}
    tdist.init_process_group(backend=backend, store=tdist.PrefixStore(f"attempt{attempt}", store), rank=rank,
                             world_size=world_size, **timeout)
    _object_group = tdist.new_group(backend="gloo", **timeout) if backend == "nccl" else None


def cleanup() -> None:
    global _object_group
    if _initialised():
        tdist.destroy_process_group()
    _object_group = None
