"""Where the images come from: CIFAR in torchvision's layout, scikit-learn's digits, an ImageFolder tree."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets as tv_datasets

from .datasets import MIN_CLASSES

# The torchvision class per CIFAR name; a module-level table so a test can register a subclass whose md5 list
# matches a tiny fake dataset while still running torchvision's real integrity check and pickle parsing.
CIFAR_CLASSES: dict[str, type[tv_datasets.CIFAR10]] = {
    "cifar10": tv_datasets.CIFAR10,
    "cifar100": tv_datasets.CIFAR100,
}


def load_cifar(name: str, data_dir: str | None, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
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


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).div_(16.0)[:, None]  # values 0..16 -> [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    # Three identical channels so the 32-px RGB CIFAR networks run unchanged.
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


def imagefolder_root(data_dir: str | None) -> Path:
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
