"""Data for the searchers: CIFAR-10/100, any ImageFolder directory, and scikit-learn's bundled digits.

``load_data`` returns a :class:`SearchData` with three iterables of ``(images, labels)`` batches already on the
requested device: ``train`` (shuffled, augmented, ``drop_last``), ``val`` (in order, not augmented) and ``calib``
(a fixed subset of the training split for BatchNorm recalibration).

The search never touches a dataset's official test split: like the FPNAS paper (45,000 / 5,000 on CIFAR-10) it
carves a validation split out of the training set with a seeded permutation.

``cluttered-digits`` is a harder task made offline from the same digits (see :func:`make_cluttered_digits`): each
24x24 image holds one digit at a random position and scale among fragments of other digits and noise. Its train,
validation and test images come from disjoint source digits, so it has fixed splits (``val_size`` does not apply)
and a ``test`` split that no search looks at.

Two back ends:

* In-memory datasets (``cifar10``, ``cifar100``, ``digits``) are held whole as one tensor on ``device``; each epoch's
  permutation, crop offsets and flips are drawn from a CPU ``torch.Generator`` seeded from ``(seed, epoch)``, and the
  crop/flip/normalise happen as a single vectorised gather on the device, so a GPU is never starved by a loader and
  the batches are bit-identical for the same ``(seed, epoch)``.
* ``imagefolder`` goes through torchvision's ``ImageFolder`` and a ``DataLoader`` (workers, as many as this rank's
  CPUs up to 8 by default: ``loader_workers``; pinned memory on CUDA; workers kept across epochs); the sampler and the
  per-image augmentation are seeded from ``(seed, epoch, index)`` so it is reproducible too.

Both start an epoch at any batch (``set_epoch(epoch, start)``, a search resumed inside an epoch) without making the
batches before it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from search.seeding import derive_seed

__all__ = [
    "CIFAR_CLASSES",
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "Batches",
    "DataSpec",
    "SearchData",
    "load_data",
]

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits", "cluttered-digits")
OFFLINE_DATASETS = ("digits", "cluttered-digits")  # made from data a package ships: no download, no --data-dir

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
# The torchvision class per CIFAR name; a module-level table so a test can register a subclass whose md5 list
# matches a tiny fake dataset while still running torchvision's real integrity check and pickle parsing.
CIFAR_CLASSES: dict[str, type[tv_datasets.CIFAR10]] = {
    "cifar10": tv_datasets.CIFAR10,
    "cifar100": tv_datasets.CIFAR100,
}

# Pixel statistics of all 1797 digits after the [0, 1] scaling and bilinear 8->32 upsample below (the three
# channels are copies). Fixed constants rather than per-split statistics so DataSpec does not depend on the seed;
# tests/test_search_data.py recomputes them.
DIGITS_MEAN = (0.3053, 0.3053, 0.3053)
DIGITS_STD = (0.3236, 0.3236, 0.3236)

# The same for cluttered-digits (all three splits); tests/test_cluttered_digits.py recomputes them.
CLUTTERED_MEAN = (0.1966, 0.1966, 0.1966)
CLUTTERED_STD = (0.2836, 0.2836, 0.2836)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGEFOLDER_SIZE = 224  # an ImageFolder's default resolution (ImageNet's)
MAX_LOADER_WORKERS = 8  # default DataLoader workers per rank, at most


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


def input_resolution(dataset: str, image_size: int | None = None) -> int:
    """The side in pixels of the images `load_data` gives for `dataset` (`image_size`: imagefolder's, if given)."""
    if dataset == "imagefolder":
        return IMAGEFOLDER_SIZE if image_size is None else image_size
    return CLUTTERED_CANVAS if dataset == "cluttered-digits" else 32


CROP_PADDING = 4  # the standard CIFAR augmentation: 4-pixel zero padding, random 32x32 crop
DEFAULT_VAL_SIZE: dict[str, int | float] = {"cifar10": 5000, "cifar100": 5000, "imagefolder": 0.1, "digits": 0.1}

# Salts keep the split, the calibration subset and the per-epoch streams independent of one another.
_SALT_SPLIT, _SALT_CALIB, _SALT_EPOCH = 0x5EED, 0xCA11B, 0xE90C


@dataclass
class DataSpec:
    """What a model needs to know about the data."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Batches(Protocol):
    """An epoch-aware iterable of ``(images float NCHW normalised, labels long)`` on the target device."""

    num_samples: int  # images yielded per epoch on this rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch the next iterations draw; they begin at its batch `start` (the batches before it are not made;
        `len()` stays the whole epoch's)."""


@dataclass
class SearchData:
    spec: DataSpec
    train: Batches
    val: Batches
    calib: Batches
    # With `split_train`: the second half of the training split (FP-NAS trains its architecture parameters on it,
    # the weights on `train`, the first half); otherwise None.
    train_arch: Batches | None = None
    # A held-out test split that searches never look at (cluttered-digits); None for the others.
    test: Batches | None = None


def _generator(*parts: int) -> torch.Generator:
    # Always a CPU generator: its streams are identical on every machine, which a CUDA generator does not promise.
    return torch.Generator().manual_seed(derive_seed(*parts))


def _shard_epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's positions for one epoch: a seeded permutation, trimmed to a multiple of world_size, strided."""
    perm = torch.randperm(n, generator=_generator(seed, _SALT_EPOCH, epoch))
    per_rank = n // world_size
    return perm[: per_rank * world_size][rank::world_size]


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
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
        self._len = _num_batches(count, batch_size, drop_last=train)
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
        order = _shard_epoch_order(n, self.seed, self.epoch, self.rank, self.world_size)
        # Offsets and flips are drawn per dataset image (not per batch slot), so an image's augmentation in an epoch
        # depends only on (seed, epoch), not on rank, world size or batch size.
        g = _generator(self.seed, _SALT_EPOCH, self.epoch, 1)
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


class _EpochSampler(Sampler):
    """Yields ``(index, epoch)`` so each worker can seed the augmentation of an image from (seed, epoch, index);
    from position ``start`` of the epoch's order on (the images before it are neither loaded nor decoded)."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def _indices(self) -> list[int]:
        if self.shuffle:
            return _shard_epoch_order(self.n, self.seed, self.epoch, self.rank, self.world_size).tolist()
        return list(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(i, epoch) for i in self._indices()[self.start:]])

    def __len__(self) -> int:
        return self.n // self.world_size if self.shuffle else len(range(self.rank, self.n, self.world_size))


class _SeededSubset(Dataset):
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
        seed = derive_seed(self.seed, _SALT_EPOCH, epoch, index)
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
        dataset: _SeededSubset,
        sampler: _EpochSampler,
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
        self._len = _num_batches(len(sampler), batch_size, drop_last)
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


def _split(n: int, val_size: int | float, seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) index split of range(n); independent of batch size, rank and world size."""
    if isinstance(val_size, bool):
        raise ValueError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"val_size as a fraction must be in (0, 1), got {val_size}")
        n_val = max(1, round(val_size * n))
    else:
        n_val = int(val_size)  # 0: no validation split (a final training on the whole training set)
    if not 0 <= n_val < n:
        raise ValueError(f"val_size={val_size} leaves no train images of the {n} in {what}")
    # Kept in permutation order (not sorted) so limit_train/limit_val take a class-balanced random subset.
    perm = torch.randperm(n, generator=_generator(seed, _SALT_SPLIT))
    return perm[n_val:], perm[:n_val]


def _limit(idx: torch.Tensor, limit: int | None, name: str) -> torch.Tensor:
    if limit is None:
        return idx
    if limit <= 0:
        raise ValueError(f"{name} must be a positive image count, got {limit}")
    return idx[:limit]


def _halves(idx: torch.Tensor, split: bool, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(first half, second half) of a training split already in seeded random order, or (idx, None)."""
    if not split:
        return idx, None
    if idx.numel() < 2:
        raise ValueError(f"{what}: {idx.numel()} training image(s) cannot be split into weight and architecture halves")
    half = (idx.numel() + 1) // 2
    return idx[:half], idx[half:]


def _calib_positions(n_train: int, calib_images: int, seed: int) -> torch.Tensor:
    if calib_images <= 0:
        raise ValueError(f"calib_images must be positive, got {calib_images}")
    perm = torch.randperm(n_train, generator=_generator(seed, _SALT_CALIB))
    return perm[: min(calib_images, n_train)]


def _load_cifar(name: str, data_dir: str | None, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root = Path(data_dir if data_dir is not None else "data").expanduser()
    cls = CIFAR_CLASSES[name]
    folder = root / cls.base_folder
    hint = f"--data-dir must hold {cls.base_folder!r} or allow the download (download=True and online)"
    if not download and not folder.is_dir():
        raise FileNotFoundError(f"{name}: {folder} not found; {hint}")
    try:
        ds = cls(str(root), train=True, download=download)
    except (OSError, RuntimeError) as e:  # torchvision: RuntimeError if corrupt, URLError (an OSError) offline
        raise FileNotFoundError(f"{name}: could not read or download {folder} ({e}); {hint}") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC uint8 -> NCHW
    return images, torch.tensor(ds.targets, dtype=torch.long)


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).div_(16.0)[:, None]  # values 0..16 -> [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    # Three identical channels so the 32-px RGB CIFAR networks run unchanged.
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


# cluttered-digits: how many of scikit-learn's 1797 digits each split draws from (disjoint source images), how many
# 24x24 images each split holds, and the fixed seed they are made from (the data never depends on a run's --seed).
CLUTTERED_SOURCES = {"train": 1197, "val": 300, "test": 300}
CLUTTERED_IMAGES = {"train": 5000, "val": 2000, "test": 3000}
CLUTTERED_SEED = 0xD161
CLUTTERED_CANVAS = 24
CLUTTERED_SCALES = (12, 18)  # the digit's side in pixels, uniform over [low, high]
CLUTTERED_FRAGMENTS = 3  # pieces of other digits of the same split per image
CLUTTERED_FRAGMENT_SIDE = (4, 7)  # a fragment's side in pixels, uniform over [low, high]
CLUTTERED_NOISE = 0.1  # standard deviation of the Gaussian pixel noise on [0, 1] intensities


def cluttered_sources(seed: int = CLUTTERED_SEED) -> dict[str, torch.Tensor]:
    """Indices into scikit-learn's digits of each split's source images: one seeded permutation cut three ways."""
    perm = torch.randperm(sum(CLUTTERED_SOURCES.values()), generator=torch.Generator().manual_seed(seed))
    out, start = {}, 0
    for split, n in CLUTTERED_SOURCES.items():
        out[split] = perm[start:start + n]
        start += n
    return out


def make_cluttered_digits(split: str, count: int | None = None,
                          seed: int = CLUTTERED_SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``cluttered-digits`` images of one split: ``(images uint8 (N, 1, 24, 24), labels, sources (N, 1 + F))``.

    Each image: one digit of the split's source pool, scaled to a random side in ``CLUTTERED_SCALES`` and placed at a
    random position on a black 24x24 canvas; ``CLUTTERED_FRAGMENTS`` random square pieces of other digits of the same
    pool (scaled the same way) placed at random positions (pixel-wise maximum, so they may cover the digit); Gaussian
    noise; clipped to [0, 1] and stored as uint8. The label is the placed digit's. ``sources`` lists the digits used
    (the placed one first), so a test can check that no split borrows from another's pool. Deterministic in
    ``(split, count, seed)``; about a second for all three splits.
    """
    from sklearn.datasets import load_digits

    if split not in CLUTTERED_SOURCES:
        raise ValueError(f"cluttered-digits has the splits {', '.join(CLUTTERED_SOURCES)}; got {split!r}")
    digits = load_digits()
    pool = cluttered_sources(seed)[split]
    base = torch.tensor(digits.images, dtype=torch.float32)[pool, None].div_(16.0)
    labels_all = torch.tensor(digits.target, dtype=torch.long)[pool]
    low, high = CLUTTERED_SCALES
    resized = {side: F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False).clamp_(0, 1)
               for side in range(low, high + 1)}
    n = CLUTTERED_IMAGES[split] if count is None else count
    g = torch.Generator().manual_seed(derive_seed(seed, list(CLUTTERED_SOURCES).index(split)))
    size = CLUTTERED_CANVAS
    canvas = torch.zeros(n, 1, size, size)
    picks = torch.randint(len(pool), (n, 1 + CLUTTERED_FRAGMENTS), generator=g)
    sides = torch.randint(low, high + 1, (n, 1 + CLUTTERED_FRAGMENTS), generator=g)
    f_low, f_high = CLUTTERED_FRAGMENT_SIDE
    frag_sides = torch.randint(f_low, f_high + 1, (n, CLUTTERED_FRAGMENTS), generator=g)
    u = torch.rand(n, 1 + CLUTTERED_FRAGMENTS, 4, generator=g)  # uniform draws for crop and placement offsets
    # Every scaled digit on an (high x high) tile, zero beyond its side: tiles[side - low, digit].
    tiles = torch.zeros(high - low + 1, len(pool), high, high)
    for side, image in resized.items():
        tiles[side - low, :, :side, :side] = image[:, 0]
    ar = torch.arange(high)
    rows, cols = ar.view(1, -1, 1), ar.view(1, 1, -1)
    flat = canvas.view(n, -1)
    for j in range(1 + CLUTTERED_FRAGMENTS):  # each paste is one vectorised gather and scatter over all images
        side = sides[:, j]
        tile = tiles[side - low, picks[:, j]]  # (n, high, high)
        if j:  # a fragment: a square piece of the scaled digit, moved to the tile's corner
            piece = frag_sides[:, j - 1]
            cy = (u[:, j, 0] * (side - piece + 1)).long().view(-1, 1, 1)
            cx = (u[:, j, 1] * (side - piece + 1)).long().view(-1, 1, 1)
            src_r, src_c = (cy + rows).clamp(max=high - 1), (cx + cols).clamp(max=high - 1)
            tile = tile[torch.arange(n).view(-1, 1, 1), src_r, src_c]
            side = piece
        h = side.view(-1, 1, 1)
        tile = tile * ((rows < h) & (cols < h))
        y = (u[:, j, 2] * (size - side + 1)).long().view(-1, 1, 1)
        x = (u[:, j, 3] * (size - side + 1)).long().view(-1, 1, 1)
        index = ((y + rows).clamp(max=size - 1) * size + (x + cols).clamp(max=size - 1)).view(n, -1)
        # Pixels outside the pasted square carry 0 and land inside the canvas: a maximum with 0 changes nothing.
        flat.scatter_reduce_(1, index, tile.reshape(n, -1), reduce="amax")
    canvas.add_(torch.randn(canvas.shape, generator=g), alpha=CLUTTERED_NOISE).clamp_(0, 1)
    images = canvas.mul_(255).round_().to(torch.uint8)
    return images, labels_all[picks[:, 0]], pool[picks]


MIN_CLASSES = 2  # classes an imagefolder dataset must hold: a search or a training tells classes apart


def _imagefolder_root(data_dir: str | None) -> Path:
    if data_dir is None:
        raise ValueError("imagefolder needs data_dir (--data-dir): a directory with one sub-folder per class")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: data_dir {root} is not a directory")
    # An ImageNet-style tree (train/ and val/ side by side): the search only ever splits the training set.
    if (root / "train").is_dir():
        root = root / "train"
    classes = [d for d in os.scandir(root) if d.is_dir() and not d.name.startswith(".")]
    if len(classes) < MIN_CLASSES:
        raise ValueError(f"imagefolder: data_dir {root} must hold at least {MIN_CLASSES} class folders, found "
                         f"{len(classes)}")
    return root


def load_data(
    dataset: str,
    data_dir: str | None = None,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    seed: int = 0,
    val_size: int | float | None = None,
    calib_images: int = 2000,
    image_size: int | None = None,
    workers: int | None = None,
    download: bool = True,
    limit_train: int | None = None,
    limit_val: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    split_train: bool = False,
    transforms: tuple[Any, Any] | None = None,
    val_dir: str | os.PathLike | None = None,
    calib_batch_size: int | None = None,
) -> SearchData:
    """Load ``dataset`` and return seeded train/val/calib batches on ``device`` (see the module docstring).

    ``data_dir`` defaults to ``./data`` for CIFAR (torchvision layout); ``imagefolder`` requires it.
    ``rank``/``world_size`` shard train (per-epoch permutation, equal shards) and val (index % world_size);
    ``calib`` is not sharded, so every rank recalibrates BatchNorm on the same images, in batches of
    ``calib_batch_size`` (default ``batch_size``; a search gives the whole batch of a step, not a rank's share).
    ``workers``: DataLoader workers of imagefolder (default: ``loader_workers``).
    ``split_train`` halves the training split (after ``limit_train``): ``train`` gets the first half and
    ``train_arch`` the second, two disjoint seeded halves (FP-NAS trains weights and architecture on separate data).
    ImageFolder only: ``transforms`` (train, eval) replace the default ones (``search.train``'s recipes pass
    timm's), and ``val_dir`` (another ImageFolder with the same classes, ImageNet's ``val/``) is the validation
    set whole instead of a split carved out of the training folder.
    """
    if dataset != "imagefolder" and (transforms is not None or val_dir is not None):
        raise ValueError(f"transforms and val_dir apply to imagefolder only, not {dataset}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
    device = torch.device(device)
    workers = loader_workers(workers)
    calib_batch_size = batch_size if calib_batch_size is None else calib_batch_size
    if dataset == "cluttered-digits":
        if val_size not in (None, 0):
            raise ValueError(f"val_size (--val-size): cluttered-digits has fixed train/val/test splits made from "
                             f"disjoint source digits; got {val_size}, expected none (or 0: no validation)")
    else:
        val_size = DEFAULT_VAL_SIZE[dataset] if val_size is None else val_size

    if dataset == "imagefolder":
        return _load_imagefolder(
            data_dir,
            batch_size=batch_size,
            device=device,
            seed=seed,
            val_size=val_size,
            calib_images=calib_images,
            image_size=input_resolution(dataset, image_size),
            workers=workers,
            limit_train=limit_train,
            limit_val=limit_val,
            rank=rank,
            world_size=world_size,
            split_train=split_train,
            transforms=transforms,
            val_dir=val_dir,
            calib_batch_size=calib_batch_size,
        )

    native = input_resolution(dataset)
    if image_size not in (None, native):
        raise ValueError(f"{dataset} is {native}x{native}; image_size must be None or {native}, got {image_size}")
    if dataset == "cluttered-digits":
        return _load_cluttered(batch_size=batch_size, device=device, seed=seed, val_size=val_size,
                               calib_images=calib_images, limit_train=limit_train, limit_val=limit_val, rank=rank,
                               world_size=world_size, split_train=split_train, calib_batch_size=calib_batch_size)
    if dataset == "digits":
        images, labels = _load_digits()
        spec = DataSpec("digits", 10, (3, 32, 32), DIGITS_MEAN, DIGITS_STD)
        flip = False  # a mirrored digit is a different (or no) digit
    else:
        images, labels = _load_cifar(dataset, data_dir, download)
        spec = DataSpec(
            dataset, 10 if dataset == "cifar10" else 100, (3, 32, 32), CIFAR_MEAN[dataset], CIFAR_STD[dataset]
        )
        flip = True

    train_idx, val_idx = _split(images.shape[0], val_size, seed, dataset)
    train_idx = _limit(train_idx, limit_train, "limit_train")
    val_idx = _limit(val_idx, limit_val, "limit_val")
    train_idx, arch_idx = _halves(train_idx, split_train, dataset)
    calib_idx = train_idx[_calib_positions(train_idx.numel(), calib_images, seed)]

    def batches(idx: torch.Tensor, train: bool, shard: bool = True) -> TensorBatches:
        return TensorBatches(
            images[idx].to(device),
            labels[idx].to(device),
            batch_size=batch_size if shard else calib_batch_size,
            mean=spec.mean,
            std=spec.std,
            train=train,
            flip=flip,
            seed=seed,
            rank=rank,
            world_size=world_size,
            shard=shard,
        )

    return SearchData(spec, batches(train_idx, True), batches(val_idx, False), batches(calib_idx, False, False),
                      None if arch_idx is None else batches(arch_idx, True))


def _load_cluttered(*, batch_size: int, device: torch.device, seed: int, val_size: int | float | None,
                    calib_images: int, limit_train: int | None, limit_val: int | None, rank: int, world_size: int,
                    split_train: bool, calib_batch_size: int) -> SearchData:
    """cluttered-digits: fixed splits from disjoint source digits; `seed` orders and augments, never changes them."""
    spec = DataSpec("cluttered-digits", 10, (3, CLUTTERED_CANVAS, CLUTTERED_CANVAS), CLUTTERED_MEAN, CLUTTERED_STD)
    train_x, train_y, _ = make_cluttered_digits("train")
    # Kept in a seeded random order, so limit_train and split_train take random subsets.
    train_idx = _limit(torch.randperm(len(train_y), generator=_generator(seed, _SALT_SPLIT)), limit_train,
                       "limit_train")
    train_idx, arch_idx = _halves(train_idx, split_train, "cluttered-digits")
    calib_idx = train_idx[_calib_positions(train_idx.numel(), calib_images, seed)]

    def batches(x: torch.Tensor, y: torch.Tensor, train: bool, shard: bool = True) -> TensorBatches:
        return TensorBatches(x.expand(-1, 3, -1, -1).contiguous().to(device), y.to(device),
                             batch_size=batch_size if shard else calib_batch_size, mean=spec.mean, std=spec.std,
                             train=train, flip=False, seed=seed, rank=rank, world_size=world_size, shard=shard)

    if val_size == 0:  # train on the training split only and report nothing held out (search.train --val-size 0)
        val = batches(train_x[:0], train_y[:0], False)
    else:
        val_x, val_y, _ = make_cluttered_digits("val")
        val_idx = _limit(torch.arange(len(val_y)), limit_val, "limit_val")
        val = batches(val_x[val_idx], val_y[val_idx], False)
    test_x, test_y, _ = make_cluttered_digits("test")
    return SearchData(spec, batches(train_x[train_idx], train_y[train_idx], True), val,
                      batches(train_x[calib_idx], train_y[calib_idx], False, False),
                      None if arch_idx is None else batches(train_x[arch_idx], train_y[arch_idx], True),
                      test=batches(test_x, test_y, False))


def _load_imagefolder(
    data_dir: str | None,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    val_size: int | float,
    calib_images: int,
    image_size: int,
    workers: int,
    limit_train: int | None,
    limit_val: int | None,
    rank: int,
    world_size: int,
    split_train: bool = False,
    transforms: tuple[Any, Any] | None = None,
    val_dir: str | os.PathLike | None = None,
    calib_batch_size: int,
) -> SearchData:
    root = _imagefolder_root(data_dir)
    if transforms is None:
        normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        # The usual 0.875 crop ratio (256 -> 224).
        eval_tf = T.Compose([T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size), T.ToTensor(), normalize])
    else:
        train_tf, eval_tf = transforms
    train_base = tv_datasets.ImageFolder(str(root), transform=train_tf)
    eval_base = tv_datasets.ImageFolder(str(root), transform=eval_tf)
    spec = DataSpec("imagefolder", len(train_base.classes), (3, image_size, image_size), IMAGENET_MEAN, IMAGENET_STD)

    if val_dir is not None:  # a validation folder of its own: the training folder is trained on whole
        val_base = tv_datasets.ImageFolder(str(val_dir), transform=eval_tf)
        if val_base.classes != train_base.classes:
            raise ValueError(f"imagefolder: the validation folder {val_dir} must hold the training folder's "
                             f"{len(train_base.classes)} class folders, found {len(val_base.classes)} others")
        train_idx, _ = _split(len(train_base), 0, seed, str(root))
        val_idx = torch.arange(len(val_base))
    else:
        val_base = eval_base
        train_idx, val_idx = _split(len(train_base), val_size, seed, str(root))
    train_idx = _limit(train_idx, limit_train, "limit_train")
    val_idx = _limit(val_idx, limit_val, "limit_val")
    train_idx, arch_idx = _halves(train_idx, split_train, str(root))
    calib_idx = train_idx[_calib_positions(train_idx.numel(), calib_images, seed)]

    def batches(base: tv_datasets.ImageFolder, idx: torch.Tensor, train: bool, shard: bool = True) -> LoaderBatches:
        subset = _SeededSubset(base, idx.tolist(), seed)
        sampler = _EpochSampler(
            len(subset), shuffle=train, seed=seed, rank=rank if shard else 0, world_size=world_size if shard else 1
        )
        return LoaderBatches(subset, sampler, batch_size=batch_size if shard else calib_batch_size, drop_last=train,
                             device=device, workers=workers)

    return SearchData(
        spec,
        batches(train_base, train_idx, True),
        batches(val_base, val_idx, False),
        batches(eval_base, calib_idx, False, shard=False),
        None if arch_idx is None else batches(train_base, arch_idx, True),
    )


def dataset_mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a dataset's images are normalised with (what a network trained on it expects)."""
    stats = {"digits": (DIGITS_MEAN, DIGITS_STD), "cluttered-digits": (CLUTTERED_MEAN, CLUTTERED_STD),
             "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
             **{name: (CIFAR_MEAN[name], CIFAR_STD[name]) for name in CIFAR_MEAN}}
    if dataset not in stats:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    return stats[dataset]
