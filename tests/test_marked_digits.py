"""marked-digits: made deterministically from scikit-learn's digits, the framed digit is the label, disjoint splits,
and usable by search.train and search.run like cluttered-digits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from search import data as D
from search.data import cluttered as C
from search.seeding import derive_seed


def _reference(split: str, count: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """The images re-made pixel by pixel with plain loops, from the random draws in the order the generator's
    docstring gives; also each image's frame (top, left, side of the box including the frame)."""
    digits = load_digits()
    pool = D.cluttered_sources(C.MARKED_SEED)[split]
    base = torch.tensor(digits.images, dtype=torch.float32)[pool, None] / 16.0
    g = torch.Generator().manual_seed(derive_seed(C.MARKED_SEED, list(D.CLUTTERED_SOURCES).index(split)))
    d, f, size = C.MARKED_DISTRACTORS, C.MARKED_FRAGMENTS, C.MARKED_CANVAS
    low, high = C.MARKED_SCALES
    objects = 1 + d + f
    picks = torch.randint(len(pool), (count, objects), generator=g)
    sides = torch.randint(low, high + 1, (count, objects), generator=g)
    pieces = torch.randint(C.MARKED_FRAGMENT_SIDE[0], C.MARKED_FRAGMENT_SIDE[1] + 1, (count, f), generator=g)
    u = torch.rand(count, objects, 4, generator=g)
    canvas = torch.zeros(count, 1, size, size)
    frames = []
    for i in range(count):
        for j in range(objects):
            side = int(sides[i, j])
            image = F.interpolate(base[int(picks[i, j])][None], size=(side, side), mode="bilinear",
                                  align_corners=False).clamp(0, 1)[0, 0]
            if j > d:
                piece = int(pieces[i, j - 1 - d])
                cy, cx = int(u[i, j, 0] * (side - piece + 1)), int(u[i, j, 1] * (side - piece + 1))
                image = image[cy:cy + piece, cx:cx + piece]
            h = image.shape[0]
            if j == 0:
                y, x = 1 + int(u[i, j, 2] * (size - h - 1)), 1 + int(u[i, j, 3] * (size - h - 1))
                frames.append((y - 1, x - 1, h + 2))
            else:
                y, x = int(u[i, j, 2] * (size - h + 1)), int(u[i, j, 3] * (size - h + 1))
            for r in range(h):
                for c in range(h):
                    canvas[i, 0, y + r, x + c] = max(float(canvas[i, 0, y + r, x + c]), float(image[r, c]))
        top, left, box = frames[-1]
        for k in range(box):
            for r, c in ((top, left + k), (top + box - 1, left + k), (top + k, left), (top + k, left + box - 1)):
                canvas[i, 0, r, c] = 1.0
    canvas += C.MARKED_NOISE * torch.randn(canvas.shape, generator=g)
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8), frames


def test_images_match_a_pixel_by_pixel_reference():
    images, _, _ = D.make_marked_digits("val", count=12)
    assert images.shape == (12, 1, C.MARKED_CANVAS, C.MARKED_CANVAS) and images.dtype == torch.uint8
    reference, frames = _reference("val", 12)
    assert (images.int() - reference.int()).abs().max() <= 1  # rounding at .5 of sums made in another order
    assert (images != reference).float().mean() < 0.001
    # Every frame lies inside the canvas and is drawn whole: its pixels are at full intensity before the noise, so
    # after it they are all bright.
    for image, (top, left, box) in zip(images, frames, strict=True):
        assert top >= 0 and left >= 0 and top + box <= C.MARKED_CANVAS and left + box <= C.MARKED_CANVAS
        ring = torch.cat([image[0, top, left:left + box], image[0, top + box - 1, left:left + box],
                          image[0, top:top + box, left], image[0, top:top + box, left + box - 1]])
        assert ring.float().mean() > 0.9 * 255


def test_deterministic_and_seeded():
    a = D.make_marked_digits("train", count=64)
    b = D.make_marked_digits("train", count=64)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], D.make_marked_digits("train", count=64, seed=C.MARKED_SEED + 1)[0])
    with pytest.raises(ValueError, match="marked-digits has the splits train, val, test; got 'dev'"):
        D.make_marked_digits("dev")


def test_splits_use_disjoint_source_digits_and_label_the_framed_digit():
    digits = load_digits()
    pools = D.cluttered_sources(C.MARKED_SEED)
    assert sorted(torch.cat(list(pools.values())).tolist()) == list(range(len(digits.target)))
    used = {}
    for split in D.CLUTTERED_SOURCES:
        _, labels, sources = D.make_marked_digits(split)
        assert len(labels) == C.MARKED_IMAGES[split] and sources.shape[1] == 1 + C.MARKED_DISTRACTORS
        used[split] = set(sources.flatten().tolist())
        assert used[split] <= set(pools[split].tolist())
        assert torch.equal(labels, torch.as_tensor(digits.target)[sources[:, 0]])
        assert torch.bincount(labels, minlength=10).min() > 0.05 * len(labels)
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_normalisation_constants_and_load_data():
    x = torch.cat([D.make_marked_digits(s)[0] for s in D.CLUTTERED_SOURCES]).float() / 255
    mean, std = D.dataset_mean_std("marked-digits")
    assert x.mean().item() == pytest.approx(mean[0], abs=1e-4) and x.std().item() == pytest.approx(std[0], abs=1e-4)
    data = D.load_data("marked-digits", batch_size=1000, seed=0)
    assert data.spec.input_size == (3, 24, 24) and data.spec.num_classes == 10
    assert (data.val.num_samples, data.test.num_samples) == (C.MARKED_IMAGES["val"], C.MARKED_IMAGES["test"])
    test_x, test_y, _ = D.make_marked_digits("test")
    xs, ys = zip(*data.test, strict=True)
    x = torch.cat(xs) * std[0] + mean[0]
    assert torch.equal(torch.cat(ys), test_y)
    assert torch.allclose(x * 255, test_x.float().expand(-1, 3, -1, -1), atol=1e-3)
    with pytest.raises(ValueError, match=r"val_size \(--val-size\): marked-digits has fixed"):
        D.load_data("marked-digits", val_size=0.2)


def test_search_run_takes_it_as_an_offline_dataset():
    from search.run import build_parser, settings_from_args

    args = build_parser().parse_args(["--algo", "fpnas", "--dataset", "marked-digits", "--out", "x"])
    settings = settings_from_args(args)
    assert args.preset == "demo" and settings.dataset == "marked-digits"
