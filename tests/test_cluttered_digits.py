"""cluttered-digits: made deterministically from scikit-learn's digits, disjoint splits, right labels, and usable by
search.train (its test split scored) and search.run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from search import data as D
from search.seeding import derive_seed


def _reference(split: str, count: int) -> torch.Tensor:
    """The images re-made pixel by pixel with plain loops (the module pastes with one vectorised scatter): the same
    random draws, in the order the module's docstring gives, pasted as the docstring says."""
    digits = load_digits()
    pool = D.cluttered_sources()[split]
    base = torch.tensor(digits.images, dtype=torch.float32)[pool, None] / 16.0
    g = torch.Generator().manual_seed(derive_seed(D.CLUTTERED_SEED, list(D.CLUTTERED_SOURCES).index(split)))
    f, size = D.CLUTTERED_FRAGMENTS, D.CLUTTERED_CANVAS
    low, high = D.CLUTTERED_SCALES
    canvas = torch.zeros(count, 1, size, size)
    picks = torch.randint(len(pool), (count, 1 + f), generator=g)
    sides = torch.randint(low, high + 1, (count, 1 + f), generator=g)
    pieces = torch.randint(D.CLUTTERED_FRAGMENT_SIDE[0], D.CLUTTERED_FRAGMENT_SIDE[1] + 1, (count, f), generator=g)
    u = torch.rand(count, 1 + f, 4, generator=g)
    for i in range(count):
        for j in range(1 + f):
            side = int(sides[i, j])
            image = F.interpolate(base[int(picks[i, j])][None], size=(side, side), mode="bilinear",
                                  align_corners=False).clamp(0, 1)[0, 0]
            if j:
                piece = int(pieces[i, j - 1])
                cy, cx = int(u[i, j, 0] * (side - piece + 1)), int(u[i, j, 1] * (side - piece + 1))
                image = image[cy:cy + piece, cx:cx + piece]
            h = image.shape[0]
            y, x = int(u[i, j, 2] * (size - h + 1)), int(u[i, j, 3] * (size - h + 1))
            for r in range(h):
                for c in range(h):
                    canvas[i, 0, y + r, x + c] = max(float(canvas[i, 0, y + r, x + c]), float(image[r, c]))
    canvas += D.CLUTTERED_NOISE * torch.randn(canvas.shape, generator=g)
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8)


def test_images_match_a_pixel_by_pixel_reference():
    images, _, _ = D.make_cluttered_digits("val", count=12)
    assert images.shape == (12, 1, D.CLUTTERED_CANVAS, D.CLUTTERED_CANVAS) and images.dtype == torch.uint8
    reference = _reference("val", 12)
    # Equal up to rounding at .5 of a float32 sum computed in another order.
    assert (images.int() - reference.int()).abs().max() <= 1
    assert (images != reference).float().mean() < 0.001


def test_deterministic_and_seeded():
    a = D.make_cluttered_digits("train", count=64)
    b = D.make_cluttered_digits("train", count=64)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = D.make_cluttered_digits("train", count=64, seed=D.CLUTTERED_SEED + 1)
    assert not torch.equal(a[0], c[0])


def test_splits_use_disjoint_source_digits_and_label_the_placed_digit():
    digits = load_digits()
    pools = D.cluttered_sources()
    assert sorted(torch.cat(list(pools.values())).tolist()) == list(range(len(digits.target)))
    used = {}
    for split in D.CLUTTERED_SOURCES:
        _, labels, sources = D.make_cluttered_digits(split)
        assert len(labels) == D.CLUTTERED_IMAGES[split]
        used[split] = set(sources.flatten().tolist())
        assert used[split] <= set(pools[split].tolist())  # the digit and its clutter come from the split's pool
        assert torch.equal(labels, torch.as_tensor(digits.target)[sources[:, 0]])
        assert torch.bincount(labels, minlength=10).min() > 0.05 * len(labels)  # every class, none rare
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_normalisation_constants():
    x = torch.cat([D.make_cluttered_digits(s)[0] for s in D.CLUTTERED_SOURCES]).float() / 255
    assert x.mean().item() == pytest.approx(D.CLUTTERED_MEAN[0], abs=1e-4)
    assert x.std().item() == pytest.approx(D.CLUTTERED_STD[0], abs=1e-4)


def test_load_data_fixed_splits_and_test():
    a = D.load_data("cluttered-digits", batch_size=500, seed=0)
    b = D.load_data("cluttered-digits", batch_size=500, seed=1)
    assert a.spec.input_size == (3, 24, 24) and a.spec.num_classes == 10
    assert (a.train.num_samples, a.val.num_samples, a.test.num_samples) == (5000, 2000, 3000)
    # The seed orders and augments; the images of each split stay the same.
    for split in ("val", "test"):
        xa, ya = zip(*getattr(a, split), strict=True)
        xb, yb = zip(*getattr(b, split), strict=True)
        assert torch.equal(torch.cat(xa), torch.cat(xb)) and torch.equal(torch.cat(ya), torch.cat(yb))
    test_x, test_y, _ = D.make_cluttered_digits("test")
    x, y = zip(*a.test, strict=True)
    x = torch.cat(x) * torch.tensor(D.CLUTTERED_STD).view(1, 3, 1, 1) + torch.tensor(D.CLUTTERED_MEAN).view(1, 3, 1, 1)
    assert torch.equal(torch.cat(y), test_y)
    assert torch.allclose(x * 255, test_x.float().expand(-1, 3, -1, -1), atol=1e-3)
    assert sorted(a.train.labels.tolist()) == sorted(b.train.labels.tolist())
    with pytest.raises(ValueError, match=r"val_size \(--val-size\): cluttered-digits has fixed"):
        D.load_data("cluttered-digits", val_size=0.2)
    assert D.load_data("cluttered-digits", limit_train=100, split_train=True).train_arch.num_samples == 50
    assert D.load_data("digits").test is None  # no test split where the dataset has none


@pytest.mark.slow
def test_search_train_scores_the_test_split(tmp_path):
    """`python -m search.train --dataset cluttered-digits` prints and records test top-1, and that number is the
    accuracy of the saved weights on the 3000 test images, computed here without search/ (the zoo model, the images
    from make_cluttered_digits, normalised by hand)."""
    from fpnas_zoo import create_model_from_spec, load_spec, save_spec, spec_from_dict
    from search.coordinate_descent.space import fpnas_space

    space = fpnas_space(4, (3, 24, 24), 10, width_mult=0.25, expansions=(3,), kernels=(3,), stem_stride=2)
    meta = {"algorithm": "fpnas", "settings": {}, "seed": 0, "dataset": "cluttered-digits", "budget_mult_adds": None,
            "measured": {}, "val_top1": None, "wall_time_s": 0.0, "gpu_hours": 0.0}
    spec_path = tmp_path / "tiny.json"
    save_spec(spec_from_dict(space.spec_dict(space.default_blocks(), "tiny", D.CLUTTERED_MEAN, D.CLUTTERED_STD,
                                             meta)), spec_path)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "search.train", "--spec", str(spec_path), "--dataset", "cluttered-digits",
         "--recipe", "cluttered-digits", "--epochs", "1", "--limit-train", "128", "--out", str(out),
         "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test top-1 {metrics['test_top1']:.2f}%" in done.stdout
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    model = create_model_from_spec(load_spec(spec_path), num_classes=10)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    images, labels, _ = D.make_cluttered_digits("test")
    x = (images.float().expand(-1, 3, -1, -1) / 255 - D.CLUTTERED_MEAN[0]) / D.CLUTTERED_STD[0]
    with torch.no_grad():
        hits = sum((model(x[i:i + 500]).argmax(1) == labels[i:i + 500]).sum().item() for i in range(0, 3000, 500))
    assert metrics["test_top1"] == pytest.approx(100 * hits / 3000, abs=1e-6)


def test_search_run_takes_it_as_an_offline_dataset():
    from search.run import build_parser, settings_from_args

    args = build_parser().parse_args(["--algo", "fpnas", "--dataset", "cluttered-digits", "--stem-stride", "2",
                                      "--out", "x"])
    settings = settings_from_args(args)
    assert args.preset == "demo" and settings.dataset == "cluttered-digits" and settings.stem_stride == 2
