"""Data for the searchers: CIFAR-10/100, any ImageFolder directory, and scikit-learn's bundled digits.

`batches` holds the two back ends, `sources` where the images come from, `cluttered` the generated dataset,
`datasets` the names and statistics and `loading` `load_data`; every public name is importable from here.

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

from .batches import (
    CROP_PADDING,
    MAX_LOADER_WORKERS,
    Batches,
    EpochSampler,
    LoaderBatches,
    SeededSubset,
    TensorBatches,
    loader_workers,
)
from .cluttered import (
    CLUTTERED_CANVAS,
    CLUTTERED_FRAGMENT_SIDE,
    CLUTTERED_FRAGMENTS,
    CLUTTERED_IMAGES,
    CLUTTERED_NOISE,
    CLUTTERED_SCALES,
    CLUTTERED_SEED,
    CLUTTERED_SOURCES,
    SCENES,
    DigitScene,
    cluttered_sources,
    make_cluttered_digits,
    make_scene,
)
from .datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DATASETS,
    DEFAULT_VAL_SIZE,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGEFOLDER_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_CLASSES,
    OFFLINE_DATASETS,
    DataSpec,
    SearchData,
    dataset_mean_std,
    input_resolution,
)
from .loading import calib_positions, halves, limit_indices, load_data, split_indices
from .sources import CIFAR_CLASSES, digits_tensors, imagefolder_root, load_cifar

__all__ = [
    "CIFAR_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CLUTTERED_CANVAS",
    "CLUTTERED_FRAGMENTS",
    "CLUTTERED_FRAGMENT_SIDE",
    "CLUTTERED_IMAGES",
    "CLUTTERED_MEAN",
    "CLUTTERED_NOISE",
    "CLUTTERED_SCALES",
    "CLUTTERED_SEED",
    "CLUTTERED_SOURCES",
    "CLUTTERED_STD",
    "CROP_PADDING",
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGEFOLDER_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_LOADER_WORKERS",
    "MIN_CLASSES",
    "OFFLINE_DATASETS",
    "Batches",
    "DataSpec",
    "EpochSampler",
    "LoaderBatches",
    "SearchData",
    "SeededSubset",
    "TensorBatches",
    "calib_positions",
    "cluttered_sources",
    "dataset_mean_std",
    "digits_tensors",
    "halves",
    "imagefolder_root",
    "input_resolution",
    "limit_indices",
    "load_cifar",
    "load_data",
    "loader_workers",
    "make_cluttered_digits",
    "make_scene",
    "SCENES",
    "DigitScene",
    "split_indices",
]
