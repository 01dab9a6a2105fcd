"""Batches on the device, two back ends: `TensorBatches` (a split held as one tensor, augmented by one gather) and
`LoaderBatches` (an ImageFolder through a DataLoader); both seeded per (seed, epoch) and resumable at any batch."""
from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets as tv_datasets

from search.seeding import derive_seed

MAX_LOADER_WORKERS = 8  # default DataLoader workers per rank, at most
CROP_PADDING = 4  # the standard CIFAR augmentation: 4-pixel zero padding, random 32x32 crop

# Salts keep the split, the calibration subset and the per-epoch streams independent of one another.
SALT_SPLIT, SALT_CALIB, SALT_EPOCH = 0x5EED, 0xCA11B, 0xE90C


def loader_workers(workers: int | None = None) -> int:
    """DataLoader workers per rank: `workers` (`--workers`) when given, else this rank's share of the CPUs the process
    may run on (torchrun's LOCAL_WORLD_SIZE ranks of this machine share them), at least 1 and at most 8. Two workers
    per rank (the old default) decode too few ImageNet images for a GPU training several samples per step."""
    if workers is not None:
        if workers < 0:
            raise ValueError(f"--workers must be at least 0 (0: load in the training process), got {workers}")
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_LOADER_WORKERS, cpus // ranks))


class Batches(Protocol):
    """An epoch-aware iterable of ``(images float NCHW normalised, labels long)`` on the target device."""

    num_samples: int  # images yielded per epoch on this rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch the next iterations draw; they begin at its batch `start` (the batches before it are not made;
        `len()` stays the whole epoch's)."""


def seeded_generator(*parts: int) -> torch.Generator:
    # Always a CPU generator: its streams are identical on every machine, which a CUDA generator does not promise.
    return torch.Generator().manual_seed(derive_seed(*parts))


def shard_epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's positions for one epoch: a seeded permutation, trimmed to a multiple of world_size, strided."""
    perm = torch.randperm(n, generator=seeded_generator(seed, SALT_EPOCH, epoch))
    per_rank = n // world_size
    return perm[: per_rank * world_size][rank::world_size]


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if not drop_last:
        return -(-n // batch_size)
    # A shard smaller than one batch still yields it once, so tiny smoke runs (limit_train) train at all.
    return n // batch_size if n >= batch_size else int(n > 0)


class TensorBatches:
    """Batches from a split held as one tensor on the device; augmentation is a vectorised gather there.

    ``images`` is ``(N, C, H, W)``, uint8 (scaled by 1/255) or float already in [0, 1].
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        flip: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shard: bool = True,
    ) -> None:
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.train = train
        self.flip = flip
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch, self.start = 0, 0
        device = images.device
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # Fold the uint8 -> [0, 1] scaling into the normalisation, so each batch costs one multiply-add: x * a + b.
        self._mul = (1.0 / (scale * std_t)).to(device)
        self._add = (-mean_t / std_t).to(device)
        n = images.shape[0]
        if train:
            self._per_rank = n // world_size
        elif shard:
            self._fixed = torch.arange(rank, n, world_size, device=device)
        else:
            self._fixed = torch.arange(n, device=device)
        count = self._per_rank if train else int(self._fixed.numel())
        self._len = num_batches(count, batch_size, drop_last=train)
        self.num_samples = min(count, self._len * batch_size)

    def __len__(self) -> int:
        return self._len

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self._mul).add_(self._add)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        if not self.train:
            for b in range(self.start, self._len):
                idx = self._fixed[b * self.batch_size : (b + 1) * self.batch_size]
                yield self._normalise(self.images[idx]), self.labels[idx]
            return

        n, _, h, w = self.images.shape
        order = shard_epoch_order(n, self.seed, self.epoch, self.rank, self.world_size)
        # Offsets and flips are drawn per dataset image (not per batch slot), so an image's augmentation in an epoch
        # depends only on (seed, epoch), not on rank, world size or batch size.
        g = seeded_generator(self.seed, SALT_EPOCH, self.epoch, 1)
        off_y = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=g)
        off_x = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=g)
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        order, off_y, off_x, flips = (t.to(device, non_blocking=True) for t in (order, off_y, off_x, flips))
        ar_h = torch.arange(h, device=device)
        ar_w = torch.arange(w, device=device)
        ar_c = torch.arange(self.images.shape[1], device=device).view(1, -1, 1, 1)
        for b in range(self.start, self._len):
            pos = order[b * self.batch_size : (b + 1) * self.batch_size]
            # Pad the batch once, then one advanced-index gather does the crop and the flip for every image.
            x = F.pad(self.images[pos], (CROP_PADDING,) * 4)
            rows = off_y[pos, None] + ar_h  # (B, H)
            cols = torch.where(flips[pos, None], ar_w.flip(0), ar_w) + off_x[pos, None]  # (B, W)
            bi = torch.arange(pos.numel(), device=device).view(-1, 1, 1, 1)
            x = x[bi, ar_c, rows[:, None, :, None], cols[:, None, None, :]]
            yield self._normalise(x), self.labels[pos]


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` so each worker can seed the augmentation of an image from (seed, epoch, index);
    from position ``start`` of the epoch's order on (the images before it are neither loaded nor decoded)."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def _indices(self) -> list[int]:
        if self.shuffle:
            return shard_epoch_order(self.n, self.seed, self.epoch, self.rank, self.world_size).tolist()
        return list(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(i, epoch) for i in self._indices()[self.start:]])

    def __len__(self) -> int:
        return self.n // self.world_size if self.shuffle else len(range(self.rank, self.n, self.world_size))


class SeededSubset(Dataset):
    """A subset of an ImageFolder whose random transforms are a pure function of (seed, epoch, index)."""

    def __init__(self, base: tv_datasets.ImageFolder, indices: list[int], seed: int) -> None:
        self.base, self.indices, self.seed = base, indices, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        # torchvision transforms draw from the global torch RNG, timm's (RandAugment, RandomResizedCrop, random
        # erasing) also from python's and numpy's: seed all three, and restore them so the main process
        # (workers=0) keeps its own streams untouched.
        seed = derive_seed(self.seed, SALT_EPOCH, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % 2**32)
                return self.base[self.indices[index]]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class LoaderBatches:
    """A DataLoader over an ImageFolder subset that moves batches to ``device``. Its workers stay up across epochs
    (persistent) and, on CUDA, fill pinned memory so the copies to the device overlap the step."""

    def __init__(
        self,
        dataset: SeededSubset,
        sampler: EpochSampler,
        *,
        batch_size: int,
        drop_last: bool,
        device: torch.device,
        workers: int,
    ) -> None:
        self.sampler = sampler
        self.device = device
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last and len(sampler) >= batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            # Its own generator: otherwise each new iterator draws a worker base seed from the global torch RNG.
            generator=torch.Generator().manual_seed(sampler.seed),
        )
        self.batch_size = batch_size
        self._len = num_batches(len(sampler), batch_size, drop_last)
        self.num_samples = min(len(sampler), self._len * batch_size)

    def __len__(self) -> int:
        return self._len

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.epoch, self.sampler.start = int(epoch), int(start) * self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, dtype=torch.long, non_blocking=True),
            )
