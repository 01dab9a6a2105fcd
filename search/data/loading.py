"""`load_data`: a dataset's seeded train / validation / calibration (and test) batches on the device."""
from __future__ import annotations

import os
from typing import Any

import torch
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from .batches import (
    SALT_CALIB,
    SALT_SPLIT,
    EpochSampler,
    LoaderBatches,
    SeededSubset,
    TensorBatches,
    loader_workers,
    seeded_generator,
)
from .cluttered import SCENES, make_scene
from .datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    DEFAULT_VAL_SIZE,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSpec,
    SearchData,
    dataset_mean_std,
    input_resolution,
)
from .sources import digits_tensors, imagefolder_root, load_cifar


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
    limit_test: int | None = None,
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
    ``limit_test`` keeps the first that many images of the test split (the generated scenes have one).
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
    if limit_test is not None and dataset not in SCENES:
        raise ValueError(f"limit_test (--limit-test) applies to the datasets with a test split "
                         f"({', '.join(SCENES)}), not {dataset}")
    if dataset in SCENES:
        if val_size not in (None, 0):
            raise ValueError(f"val_size (--val-size): {dataset} has fixed train/val/test splits made from "
                             f"disjoint source digits; got {val_size}, expected none (or 0: no validation)")
    else:
        val_size = DEFAULT_VAL_SIZE[dataset] if val_size is None else val_size

    common = dict(batch_size=batch_size, device=device, seed=seed, val_size=val_size, calib_images=calib_images,
                  limit_train=limit_train, limit_val=limit_val, rank=rank, world_size=world_size,
                  split_train=split_train, calib_batch_size=calib_batch_size)
    if dataset == "imagefolder":
        return _load_imagefolder(data_dir, image_size=input_resolution(dataset, image_size), workers=workers,
                                 transforms=transforms, val_dir=val_dir, **common)

    native = input_resolution(dataset)
    if image_size not in (None, native):
        raise ValueError(f"{dataset} is {native}x{native}; image_size must be None or {native}, got {image_size}")
    if dataset in SCENES:
        return _load_generated(dataset, limit_test=limit_test, **common)
    return _load_in_memory(dataset, data_dir, download, **common)


def _load_in_memory(dataset: str, data_dir: str | None, download: bool, *, batch_size: int, device: torch.device,
                    seed: int, val_size: int | float, calib_images: int, limit_train: int | None,
                    limit_val: int | None, rank: int, world_size: int, split_train: bool,
                    calib_batch_size: int) -> SearchData:
    """digits and CIFAR: the whole training set on the device, split by a seeded permutation."""
    if dataset == "digits":
        images, labels = digits_tensors()
        spec = DataSpec("digits", 10, (3, 32, 32), DIGITS_MEAN, DIGITS_STD)
        flip = False  # a mirrored digit is a different (or no) digit
    else:
        images, labels = load_cifar(dataset, data_dir, download)
        spec = DataSpec(
            dataset, 10 if dataset == "cifar10" else 100, (3, 32, 32), CIFAR_MEAN[dataset], CIFAR_STD[dataset]
        )
        flip = True

    train_idx, val_idx = split_indices(images.shape[0], val_size, seed, dataset)
    train_idx = limit_indices(train_idx, limit_train, "limit_train")
    val_idx = limit_indices(val_idx, limit_val, "limit_val")
    train_idx, arch_idx = halves(train_idx, split_train, dataset)
    calib_idx = train_idx[calib_positions(train_idx.numel(), calib_images, seed)]

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


def _load_generated(dataset: str, *, batch_size: int, device: torch.device, seed: int,
                    val_size: int | float | None, calib_images: int, limit_train: int | None, limit_val: int | None,
                    rank: int, world_size: int, split_train: bool, calib_batch_size: int,
                    limit_test: int | None = None) -> SearchData:
    """The generated scenes (cluttered-digits and the others of `SCENES`): fixed splits from disjoint source digits;
    `seed` orders and augments, never changes them."""
    side = input_resolution(dataset)
    spec = DataSpec(dataset, 10, (3, side, side), *dataset_mean_std(dataset))
    train_x, train_y, _ = make_scene(dataset, "train")
    # Kept in a seeded random order, so limit_train and split_train take random subsets.
    train_idx = limit_indices(torch.randperm(len(train_y), generator=seeded_generator(seed, SALT_SPLIT)), limit_train,
                       "limit_train")
    train_idx, arch_idx = halves(train_idx, split_train, dataset)
    calib_idx = train_idx[calib_positions(train_idx.numel(), calib_images, seed)]

    def batches(x: torch.Tensor, y: torch.Tensor, train: bool, shard: bool = True) -> TensorBatches:
        return TensorBatches(x.expand(-1, 3, -1, -1).contiguous().to(device), y.to(device),
                             batch_size=batch_size if shard else calib_batch_size, mean=spec.mean, std=spec.std,
                             train=train, flip=False, seed=seed, rank=rank, world_size=world_size, shard=shard)

    if val_size == 0:  # train on the training split only and report nothing held out (search.train --val-size 0)
        val = batches(train_x[:0], train_y[:0], False)
    else:
        val_x, val_y, _ = make_scene(dataset, "val")
        val_idx = limit_indices(torch.arange(len(val_y)), limit_val, "limit_val")
        val = batches(val_x[val_idx], val_y[val_idx], False)
    test_x, test_y, _ = make_scene(dataset, "test")
    test_idx = limit_indices(torch.arange(len(test_y)), limit_test, "limit_test")
    return SearchData(spec, batches(train_x[train_idx], train_y[train_idx], True), val,
                      batches(train_x[calib_idx], train_y[calib_idx], False, False),
                      None if arch_idx is None else batches(train_x[arch_idx], train_y[arch_idx], True),
                      test=batches(test_x[test_idx], test_y[test_idx], False))


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
    root = imagefolder_root(data_dir)
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
        train_idx, _ = split_indices(len(train_base), 0, seed, str(root))
        val_idx = torch.arange(len(val_base))
    else:
        val_base = eval_base
        train_idx, val_idx = split_indices(len(train_base), val_size, seed, str(root))
    train_idx = limit_indices(train_idx, limit_train, "limit_train")
    val_idx = limit_indices(val_idx, limit_val, "limit_val")
    train_idx, arch_idx = halves(train_idx, split_train, str(root))
    calib_idx = train_idx[calib_positions(train_idx.numel(), calib_images, seed)]

    def batches(base: tv_datasets.ImageFolder, idx: torch.Tensor, train: bool, shard: bool = True) -> LoaderBatches:
        subset = SeededSubset(base, idx.tolist(), seed)
        sampler = EpochSampler(
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


def split_indices(n: int, val_size: int | float, seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
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
    perm = torch.randperm(n, generator=seeded_generator(seed, SALT_SPLIT))
    return perm[n_val:], perm[:n_val]


def limit_indices(idx: torch.Tensor, limit: int | None, name: str) -> torch.Tensor:
    if limit is None:
        return idx
    if limit <= 0:
        raise ValueError(f"{name} must be a positive image count, got {limit}")
    return idx[:limit]


def halves(idx: torch.Tensor, split: bool, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(first half, second half) of a training split already in seeded random order, or (idx, None)."""
    if not split:
        return idx, None
    if idx.numel() < 2:
        raise ValueError(f"{what}: {idx.numel()} training image(s) cannot be split into weight and architecture halves")
    half = (idx.numel() + 1) // 2
    return idx[:half], idx[half:]


def calib_positions(n_train: int, calib_images: int, seed: int) -> torch.Tensor:
    if calib_images <= 0:
        raise ValueError(f"calib_images must be positive, got {calib_images}")
    perm = torch.randperm(n_train, generator=seeded_generator(seed, SALT_CALIB))
    return perm[: min(calib_images, n_train)]
