"""The generated digit scenes (cluttered-digits, marked-digits, crowded-digits): made deterministically from
scikit-learn's digits, the target digit is the label (framed in marked-digits), disjoint splits, and usable by
search.run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from search import data as D
from search.data import cluttered as C
from search.seeding import derive_seed


def _reference(scene: C.DigitScene, split: str, count: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """The images re-made pixel by pixel with plain loops, from the random draws in the order the generator's
    docstring gives; also each image's frame (top, left, side of the box including the frame)."""
    digits = load_digits()
    pool = D.cluttered_sources(scene.seed)[split]
    base = torch.tensor(digits.images, dtype=torch.float32)[pool, None] / 16.0
    g = torch.Generator().manual_seed(derive_seed(scene.seed, list(D.CLUTTERED_SOURCES).index(split)))
    d, f, size = scene.distractors, scene.fragments, scene.canvas
    low, high = scene.scales
    objects = 1 + d + f
    picks = torch.randint(len(pool), (count, objects), generator=g)
    sides = torch.randint(low, high + 1, (count, objects), generator=g)
    pieces = torch.randint(scene.fragment_side[0], scene.fragment_side[1] + 1, (count, f), generator=g)
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
                m = scene.margin
                y, x = m + int(u[i, j, 2] * (size - h - 2 * m + 1)), m + int(u[i, j, 3] * (size - h - 2 * m + 1))
                frames.append((y - 1, x - 1, h + 2))
            else:
                y, x = int(u[i, j, 2] * (size - h + 1)), int(u[i, j, 3] * (size - h + 1))
            for r in range(h):
                for c in range(h):
                    canvas[i, 0, y + r, x + c] = max(float(canvas[i, 0, y + r, x + c]), float(image[r, c]))
        top, left, box = frames[-1]
        for k in range(box if scene.framed else 0):
            for r, c in ((top, left + k), (top + box - 1, left + k), (top + k, left), (top + k, left + box - 1)):
                canvas[i, 0, r, c] = 1.0
    canvas += scene.noise * torch.randn(canvas.shape, generator=g)
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8), frames


SCENES = pytest.mark.parametrize("scene", list(C.SCENES.values()), ids=list(C.SCENES))


@SCENES
def test_images_match_a_pixel_by_pixel_reference(scene):
    images, _, _ = D.make_scene(scene.name, "val", count=12)
    assert images.shape == (12, 1, scene.canvas, scene.canvas) and images.dtype == torch.uint8
    reference, frames = _reference(scene, "val", 12)
    assert (images.int() - reference.int()).abs().max() <= 1  # rounding at .5 of sums made in another order
    assert (images != reference).float().mean() < 0.001
    # Every frame lies inside the canvas and is drawn whole: its pixels are at full intensity before the noise, so
    # after it they are all bright.
    for image, (top, left, box) in zip(images if scene.framed else [], frames if scene.framed else [], strict=True):
        assert top >= 0 and left >= 0 and top + box <= scene.canvas and left + box <= scene.canvas
        ring = torch.cat([image[0, top, left:left + box], image[0, top + box - 1, left:left + box],
                          image[0, top:top + box, left], image[0, top:top + box, left + box - 1]])
        assert ring.float().mean() > 0.9 * 255


@SCENES
def test_deterministic_and_seeded(scene):
    a = D.make_scene(scene, "train", count=64)
    b = D.make_scene(scene, "train", count=64)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], D.make_scene(scene, "train", count=64, seed=scene.seed + 1)[0])
    # The process keeps what it made: a caller that writes into its copy changes neither the memo nor what the next
    # caller gets, and a split made afresh (the memo emptied) is the same.
    a[0].zero_()
    assert all(torch.equal(x, y) for x, y in zip(b, D.make_scene(scene, "train", count=64), strict=True))
    C._MADE.clear()
    assert all(torch.equal(x, y) for x, y in zip(b, D.make_scene(scene, "train", count=64), strict=True))
    with pytest.raises(ValueError, match=f"{scene.name} has the splits train, val, test; got 'dev'"):
        D.make_scene(scene, "dev")


@SCENES
def test_splits_use_disjoint_source_digits_and_label_the_target(scene):
    digits = load_digits()
    pools = D.cluttered_sources(scene.seed)
    assert sorted(torch.cat(list(pools.values())).tolist()) == list(range(len(digits.target)))
    used = {}
    for split in D.CLUTTERED_SOURCES:
        _, labels, sources = D.make_scene(scene, split)
        assert len(labels) == scene.images[split] and sources.shape[1] == 1 + scene.distractors + scene.fragments
        used[split] = set(sources.flatten().tolist())
        assert used[split] <= set(pools[split].tolist())
        assert torch.equal(labels, torch.as_tensor(digits.target)[sources[:, 0]])
        assert torch.bincount(labels, minlength=10).min() > 0.05 * len(labels)
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


@SCENES
def test_normalisation_constants_and_load_data(scene):
    x = torch.cat([D.make_scene(scene, s)[0] for s in D.CLUTTERED_SOURCES]).float() / 255
    mean, std = D.dataset_mean_std(scene.name)
    assert x.mean().item() == pytest.approx(mean[0], abs=1e-4) and x.std().item() == pytest.approx(std[0], abs=1e-4)
    data = D.load_data(scene.name, batch_size=1000, seed=0)
    assert data.spec.input_size == (3, 24, 24) and data.spec.num_classes == 10
    assert (data.val.num_samples, data.test.num_samples) == (scene.images["val"], scene.images["test"])
    test_x, test_y, _ = D.make_scene(scene, "test")
    xs, ys = zip(*data.test, strict=True)
    x = torch.cat(xs) * std[0] + mean[0]
    assert torch.equal(torch.cat(ys), test_y)
    assert torch.allclose(x * 255, test_x.float().expand(-1, 3, -1, -1), atol=1e-3)
    with pytest.raises(ValueError, match=rf"val_size \(--val-size\): {scene.name} has fixed"):
        D.load_data(scene.name, val_size=0.2)
    # limit_test keeps the test split's first images, in order, and nothing else changes
    few = D.load_data(scene.name, batch_size=1000, seed=0, limit_test=37)
    assert few.test.num_samples == 37 and few.val.num_samples == data.val.num_samples
    assert torch.equal(torch.cat([y for _, y in few.test]), test_y[:37])
    with pytest.raises(ValueError, match="limit_test .*--limit-test.* not digits"):
        D.load_data("digits", limit_test=37)


@SCENES
def test_search_run_takes_it_as_an_offline_dataset(scene):
    from search.run import build_parser, settings_from_args

    args = build_parser().parse_args(["--algo", "fpnas", "--dataset", scene.name, "--out", "x"])
    settings = settings_from_args(args)
    assert args.preset == "demo" and settings.dataset == scene.name
