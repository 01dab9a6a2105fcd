"""search.data on real data: the bundled digits, a tiny CIFAR-10 in the real pickle format, a PNG ImageFolder."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import CIFAR10

from search import data as D

CIFAR_PER_BATCH = 20  # 5 train batches -> 100 images


def _collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def _to_uint8(x: torch.Tensor, spec: D.DataSpec) -> torch.Tensor:
    """Undo the normalisation of an un-augmented CIFAR batch to get the stored pixels back."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x * std + mean).mul(255).round().to(torch.uint8)


def _keys(images: torch.Tensor) -> list[bytes]:
    return [img.numpy().tobytes() for img in images]


def _write_fake_cifar10(root: Path, per_batch: int) -> tuple[type[CIFAR10], np.ndarray, np.ndarray]:
    """A cifar-10-batches-py folder in the real format, and a CIFAR10 subclass whose md5 table matches it.

    torchvision checks every file's md5 against the real archive; only that table is replaced, so the real
    integrity check and pickle parsing run on these files.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5: dict[str, str] = {}
    all_data, all_labels = [], []

    def dump(name: str, obj: dict) -> None:
        path = folder / name
        path.write_bytes(pickle.dumps(obj, protocol=2))
        md5[name] = hashlib.md5(path.read_bytes()).hexdigest()

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)  # rows are CHW, like CIFAR
        labels = rng.integers(0, 10, size=per_batch).tolist()
        dump(name, {"batch_label": name, "data": images, "labels": labels, "filenames": [""] * per_batch})
        if name != "test_batch":
            all_data.append(images)
            all_labels += labels
    dump("batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch})

    class FakeCIFAR10(CIFAR10):
        train_list = [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
        test_list = [["test_batch", md5["test_batch"]]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}

    return FakeCIFAR10, np.concatenate(all_data).reshape(-1, 3, 32, 32), np.array(all_labels)


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    cls, images, labels = _write_fake_cifar10(root, CIFAR_PER_BATCH)
    return root, cls, torch.from_numpy(images), torch.from_numpy(labels)


@pytest.fixture
def cifar(fake_cifar, monkeypatch):
    """load_data for the fake CIFAR-10 (download=False, so nothing leaves the machine)."""
    root, cls, images, labels = fake_cifar
    monkeypatch.setitem(D.CIFAR_CLASSES, "cifar10", cls)

    def load(**kwargs) -> D.SearchData:
        kwargs.setdefault("val_size", 10)
        return D.load_data("cifar10", str(root), download=False, **kwargs)

    return load, images, labels


# --- digits -------------------------------------------------------------------------------------------------------


def test_digits_shapes_classes_and_range():
    data = D.load_data("digits", batch_size=64)
    assert data.spec == D.DataSpec("digits", 10, (3, 32, 32), D.DIGITS_MEAN, D.DIGITS_STD)
    assert data.val.num_samples == 180 and len(data.val) == 3  # 10% of 1797, last partial batch kept
    assert len(data.train) == 1617 // 64 and data.train.num_samples == 1617 // 64 * 64  # drop_last
    x, y = next(iter(data.train))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    xv, yv = _collect(data.val)
    assert xv.shape == (180, 3, 32, 32) and set(yv.tolist()) <= set(range(10))
    pixels = xv * D.DIGITS_STD[0] + D.DIGITS_MEAN[0]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.equal(xv[:, 0], xv[:, 2])  # grey replicated to 3 channels


def test_digits_normalisation_constants():
    images, labels = D.digits_tensors()
    assert images.shape == (1797, 3, 32, 32) and labels.shape == (1797,)
    assert images.mean().item() == pytest.approx(D.DIGITS_MEAN[0], abs=1e-4)
    assert images.double().std(unbiased=False).item() == pytest.approx(D.DIGITS_STD[0], abs=1e-4)


def test_split_is_seeded_disjoint_and_covering():
    train, val = D.split_indices(1797, 0.1, seed=3, what="digits")
    train2, val2 = D.split_indices(1797, 0.1, seed=3, what="digits")
    _, val_other = D.split_indices(1797, 0.1, seed=4, what="digits")
    assert torch.equal(val, val2) and torch.equal(train, train2)
    assert not torch.equal(val.sort().values, val_other.sort().values)
    assert len(val) == 180 and set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1797))
    # Through load_data: the val split depends on the seed but not on the batch size.
    val_a = _collect(D.load_data("digits", batch_size=64, seed=3).val)
    val_b = _collect(D.load_data("digits", batch_size=50, seed=3).val)
    val_c = _collect(D.load_data("digits", batch_size=64, seed=4).val)
    assert torch.equal(val_a[0], val_b[0]) and torch.equal(val_a[1], val_b[1])
    assert not torch.equal(val_a[0], val_c[0])


def test_set_epoch_determinism():
    a = D.load_data("digits", batch_size=128, limit_train=512, seed=1)
    b = D.load_data("digits", batch_size=128, limit_train=512, seed=1)
    a.train.set_epoch(2)
    b.train.set_epoch(2)
    xa, ya = _collect(a.train)
    xb, yb = _collect(b.train)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # bit-identical across instances
    assert torch.equal(_collect(a.train)[0], xa)  # and across re-iteration
    a.train.set_epoch(3)
    xc, yc = _collect(a.train)
    assert xc.shape == xa.shape and not torch.equal(xc, xa) and not torch.equal(yc, ya)


def test_calib_is_a_fixed_subset():
    data = D.load_data("digits", batch_size=64, calib_images=100)
    assert data.calib.num_samples == 100 and len(data.calib) == 2
    first = _collect(data.calib)
    data.calib.set_epoch(7)
    data.train.set_epoch(7)
    again = _collect(data.calib)
    other = _collect(D.load_data("digits", batch_size=32, calib_images=100).calib)
    for x, y in (again, other):
        assert torch.equal(x, first[0]) and torch.equal(y, first[1])
    assert D.load_data("digits", calib_images=10_000).calib.num_samples == 1617  # capped at the train split


# --- the device-resident augmentation ------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [True, False])
def test_crop_and_flip_gather(flip):
    n = 24
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n)  # the label identifies the source image
    batches = D.TensorBatches(
        images, labels, batch_size=8, mean=(0, 0, 0), std=(1, 1, 1), train=True, flip=flip, seed=0
    )
    x, y = _collect(batches)
    assert x.shape == (n, 3, 32, 32) and sorted(y.tolist()) == list(range(n))
    out = x.mul(255).round().to(torch.uint8)
    padded = F.pad(images, (4, 4, 4, 4))
    changed, flipped = 0, 0
    for img, label in zip(out, y.tolist(), strict=True):
        # Every output must be one 32x32 window of the zero-padded source, mirrored or not.
        windows = [(dy, dx, padded[label, :, dy : dy + 32, dx : dx + 32]) for dy in range(9) for dx in range(9)]
        matches = [
            (dy, dx, f) for dy, dx, w in windows for f in (False, True) if torch.equal(img, w.flip(-1) if f else w)
        ]
        assert len(matches) == 1, label
        dy, dx, f = matches[0]
        changed += (dy, dx, f) != (4, 4, False)
        flipped += f
    assert changed > n // 2
    assert (flipped > 0) == flip


# --- a tiny CIFAR-10 through torchvision's own reader --------------------------------------------------------------


def test_fake_cifar10_split_and_pixels(cifar):
    load, images, labels = cifar
    data = load(batch_size=1)  # 100 images, val 10: the paper's 45k/5k proportion
    assert data.spec == D.DataSpec("cifar10", 10, (3, 32, 32), D.CIFAR_MEAN["cifar10"], D.CIFAR_STD["cifar10"])
    assert data.train.num_samples == 90 and data.val.num_samples == 10
    by_pixels = dict(zip(_keys(images), labels.tolist(), strict=True))
    xv, yv = _collect(data.val)
    val_keys = _keys(_to_uint8(xv, data.spec))
    # The val images are stored CIFAR images (CHW order preserved) carrying their own labels.
    assert [by_pixels[k] for k in val_keys] == yv.tolist()
    calib_keys = _keys(_to_uint8(_collect(data.calib)[0], data.spec))
    assert len(calib_keys) == 90 and set(calib_keys).isdisjoint(val_keys)  # calib comes from the train split
    assert set(calib_keys) | set(val_keys) == set(by_pixels)
    limited = load(batch_size=4, limit_train=12, limit_val=3)
    assert limited.train.num_samples == 12 and limited.val.num_samples == 3


def test_rank_sharding(cifar):
    # Train: the label is the image's identity, so shards can be compared even though images are augmented.
    n = 91
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    def shard(rank: int, batch_size: int):
        batches = D.TensorBatches(images, torch.arange(n), batch_size=batch_size, mean=(0, 0, 0), std=(1, 1, 1),
                                  train=True, flip=True, seed=0, rank=rank, world_size=2)
        batches.set_epoch(5)
        return batches

    shards = []
    for rank in range(2):
        train = shard(rank, 8)
        assert len(train) == 5 and train.num_samples == 40  # 45 per rank, drop_last
        shards.append(_collect(shard(rank, 45))[1].tolist())
    assert len(shards[0]) == len(shards[1]) == 45 and set(shards[0]).isdisjoint(shards[1])
    # Val through load_data: the ranks split it by index and together cover it exactly once.
    load, _, _ = cifar
    single = load(batch_size=3)
    vals = []
    for rank in range(2):
        data = load(batch_size=3, rank=rank, world_size=2)
        assert data.train.num_samples == 45 // 3 * 3 and data.val.num_samples == 5
        assert data.calib.num_samples == 90  # calib is not sharded: every rank recalibrates on the same images
        vals.append(_keys(_to_uint8(_collect(data.val)[0], data.spec)))
    assert set(vals[0]).isdisjoint(vals[1])
    assert sorted(vals[0] + vals[1]) == sorted(_keys(_to_uint8(_collect(single.val)[0], single.spec)))


def test_cifar_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*--data-dir|--data-dir.*cifar-10-batches-py"):
        D.load_data("cifar10", str(tmp_path), download=False)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.load_data("mnist")
    with pytest.raises(ValueError, match="val_size"):
        D.load_data("digits", val_size=5000)
    with pytest.raises(ValueError, match="image_size"):
        D.load_data("digits", image_size=64)
    with pytest.raises(ValueError, match="rank"):
        D.load_data("digits", rank=2, world_size=2)
    with pytest.raises(ValueError, match="data_dir"):
        D.load_data("imagefolder")
    (tmp_path / "only_class").mkdir()
    with pytest.raises(ValueError, match="at least 2 class folders"):
        D.load_data("imagefolder", str(tmp_path))


# --- ImageFolder ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["ant", "bee", "cat"]):
        (root / name).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., c] = 255  # a class-coloured tint
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_imagefolder(image_folder):
    data = D.load_data("imagefolder", str(image_folder), batch_size=4, image_size=16, val_size=3, workers=0)
    assert data.spec.num_classes == 3 and data.spec.input_size == (3, 16, 16)
    assert len(data.train) == 3 and data.train.num_samples == 12  # 12 train images, drop_last
    assert data.val.num_samples == 3 and data.calib.num_samples == 12
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    data.train.set_epoch(1)
    first = _collect(data.train)
    again = _collect(data.train)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    data.train.set_epoch(2)
    assert not torch.equal(_collect(data.train)[0], first[0])
    assert torch.equal(_collect(data.calib)[0], _collect(data.calib)[0])
    # Worker processes give the very same batches: augmentation is seeded per (seed, epoch, image).
    with_workers = D.load_data("imagefolder", str(image_folder), batch_size=4, image_size=16, val_size=3, workers=1)
    with_workers.train.set_epoch(1)
    for a, b in zip(_collect(with_workers.train), first, strict=True):
        assert torch.equal(a, b)
    shard = D.load_data(
        "imagefolder", str(image_folder), batch_size=2, image_size=16, val_size=3, workers=0, rank=1, world_size=2
    )
    assert shard.train.num_samples == 6 and shard.val.num_samples == 1


def test_imagefolder_does_not_touch_global_rng(image_folder):
    data = D.load_data("imagefolder", str(image_folder), batch_size=4, image_size=16, val_size=3, workers=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _collect(data.train)
    assert torch.equal(torch.rand(3), expected)


def test_an_epoch_started_at_a_batch_makes_only_the_batches_from_it(image_folder, monkeypatch):
    """`set_epoch(epoch, start)` (a search resumed inside an epoch): the batches from `start` on are those of the
    whole epoch, and the images of the batches before it are never loaded (ImageFolder) nor gathered (in memory)."""
    loaded = []
    getitem = D.SeededSubset.__getitem__
    monkeypatch.setattr(D.SeededSubset, "__getitem__", lambda self, item: loaded.append(item) or getitem(self, item))
    data = D.load_data("imagefolder", str(image_folder), batch_size=2, image_size=16, val_size=3, workers=0)
    digits = D.load_data("digits", batch_size=16, limit_train=96, limit_val=40)
    for batches in (data.train, data.val, digits.train, digits.val):
        batches.set_epoch(3)
        whole = list(batches)
        batches.set_epoch(3, start=1)
        loaded.clear()
        gathered = []
        if isinstance(batches, D.TensorBatches):
            monkeypatch.setattr(batches, "_normalise", lambda x, made=gathered, gather=batches._normalise:
                                made.append(len(x)) or gather(x))
        part = list(batches)
        assert len(whole) >= 2 and len(part) == len(whole) - 1 and len(batches) == len(whole)
        for (x, y), (x_whole, y_whole) in zip(part, whole[1:], strict=True):
            assert torch.equal(x, x_whole) and torch.equal(y, y_whole)
        assert len(loaded) + sum(gathered) == sum(len(y) for _, y in part)  # nothing made for batch 0


def test_loader_workers_scale_with_the_cpus_of_each_rank(image_folder, monkeypatch):
    """Default DataLoader workers: the CPUs this process may run on over torchrun's processes on the machine
    (LOCAL_WORLD_SIZE), at least 1 and at most 8; `--workers` overrides; a negative count is refused naming it."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)), raising=False)
    for ranks, expected in ((None, 8), ("1", 8), ("4", 6), ("8", 3), ("32", 1)):
        if ranks is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
        assert D.loader_workers() == expected and D.loader_workers(0) == 0 and D.loader_workers(3) == 3
    data = D.load_data("imagefolder", str(image_folder), batch_size=2, image_size=16, val_size=3)  # 32 ranks
    assert data.train.loader.num_workers == 1 and data.train.loader.persistent_workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    data = D.load_data("imagefolder", str(image_folder), batch_size=2, image_size=16, val_size=3)
    assert {b.loader.num_workers for b in (data.train, data.val, data.calib)} == {8}
    with pytest.raises(ValueError, match="--workers must be at least 0"):
        D.load_data("digits", workers=-1)
