"""The datasets the searchers know: their names, resolutions and pixel statistics, and what a model and a search
are told about them (`DataSpec`, `SearchData`)."""
from __future__ import annotations

from dataclasses import dataclass

from .batches import Batches
from .cluttered import SCENES

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits", *SCENES)
# Made from data a package ships: no download, no --data-dir.
OFFLINE_DATASETS = ("digits", *SCENES)

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
# Pixel statistics of all 1797 digits after the [0, 1] scaling and bilinear 8->32 upsample below (the three
# channels are copies). Fixed constants rather than per-split statistics so DataSpec does not depend on the seed;
# tests/test_search_data.py recomputes them.
DIGITS_MEAN = (0.3053, 0.3053, 0.3053)
DIGITS_STD = (0.3236, 0.3236, 0.3236)

# The same for cluttered-digits (all three splits); tests/test_cluttered_digits.py recomputes them.
CLUTTERED_MEAN = (0.1966, 0.1966, 0.1966)
CLUTTERED_STD = (0.2836, 0.2836, 0.2836)
# And for the other generated scenes (search/data/cluttered.py's SCENES), all three splits of each; tests
# recompute them.
SCENE_MEAN_STD = {"marked-digits": (0.2567, 0.3432), "crowded-digits": (0.1724, 0.258)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGEFOLDER_SIZE = 224  # an ImageFolder's default resolution (ImageNet's)

DEFAULT_VAL_SIZE: dict[str, int | float] = {"cifar10": 5000, "cifar100": 5000, "imagefolder": 0.1, "digits": 0.1}


MIN_CLASSES = 2  # classes an imagefolder dataset must hold: a search or a training tells classes apart


@dataclass
class DataSpec:
    """What a model needs to know about the data."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


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


def input_resolution(dataset: str, image_size: int | None = None) -> int:
    """The side in pixels of the images `load_data` gives for `dataset` (`image_size`: imagefolder's, if given)."""
    if dataset == "imagefolder":
        return IMAGEFOLDER_SIZE if image_size is None else image_size
    return SCENES[dataset].canvas if dataset in SCENES else 32


def dataset_mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a dataset's images are normalised with (what a network trained on it expects)."""
    stats = {"digits": (DIGITS_MEAN, DIGITS_STD), "cluttered-digits": (CLUTTERED_MEAN, CLUTTERED_STD),
             **{name: ((m,) * 3, (sd,) * 3) for name, (m, sd) in SCENE_MEAN_STD.items()},
             "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
             **{name: (CIFAR_MEAN[name], CIFAR_STD[name]) for name in CIFAR_MEAN}}
    if dataset not in stats:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    return stats[dataset]
