"""Digit scenes made offline from scikit-learn's digits, with train, validation and test splits from disjoint source
digits: cluttered-digits (a digit at a random place and scale among fragments of other digits and noise), and the
scenes of `SCENES` (crowded-digits, marked-digits), all by one generator, `make_scene`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from search.seeding import derive_seed

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


def _split_pool(name: str, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A split's source digits: (indices into scikit-learn's digits, images (P, 1, 8, 8) on [0, 1], labels)."""
    from sklearn.datasets import load_digits

    if split not in CLUTTERED_SOURCES:
        raise ValueError(f"{name} has the splits {', '.join(CLUTTERED_SOURCES)}; got {split!r}")
    digits = load_digits()
    pool = cluttered_sources(seed)[split]
    base = torch.tensor(digits.images, dtype=torch.float32)[pool, None].div_(16.0)
    return pool, base, torch.tensor(digits.target, dtype=torch.long)[pool]


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
    return make_scene(CLUTTERED, split, count, seed)


@dataclass(frozen=True)
class DigitScene:
    """How a generated digit scene is made (see :func:`make_scene`): the canvas side, every digit's side range,
    how many whole distractor digits and pieces of digits surround the one to name, whether that one is framed, the
    noise, the images per split and the seed the data is made from."""

    name: str
    canvas: int
    scales: tuple[int, int]
    distractors: int
    fragments: int
    fragment_side: tuple[int, int]
    noise: float
    framed: bool
    images: dict
    seed: int
    margin: int = 1  # the target's least distance in pixels from every border (room for a frame)


# marked-digits: several whole digits on one canvas, the one to name framed by a one-pixel box; the others are
# distractors. Telling which digit carries the frame ties a digit's shape to a mark around it.
MARKED = DigitScene("marked-digits", canvas=24, scales=(9, 12), distractors=2, fragments=2, fragment_side=(3, 5),
                    noise=0.1, framed=True, images={"train": 20000, "val": 5000, "test": 10000}, seed=0x3A4D)
# crowded-digits: one small digit among many pieces of others, in stronger noise: a recognition task that stays
# short of its ceiling for small networks, with no frame to find.
CROWDED = DigitScene("crowded-digits", canvas=24, scales=(9, 13), distractors=0, fragments=5, fragment_side=(3, 6),
                     noise=0.15, framed=False, images={"train": 20000, "val": 5000, "test": 10000}, seed=0xC40D)
# cluttered-digits is the same kind of scene: one digit anywhere among three pieces of others.
CLUTTERED = DigitScene("cluttered-digits", canvas=CLUTTERED_CANVAS, scales=CLUTTERED_SCALES, distractors=0,
                       fragments=CLUTTERED_FRAGMENTS, fragment_side=CLUTTERED_FRAGMENT_SIDE, noise=CLUTTERED_NOISE,
                       framed=False, images=CLUTTERED_IMAGES, seed=CLUTTERED_SEED, margin=0)
SCENES = {scene.name: scene for scene in (CLUTTERED, MARKED, CROWDED)}  # every generated dataset, by name


def _paste(flat: torch.Tensor, tile: torch.Tensor, side: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
           size: int) -> None:
    """Paste each image's square ``tile[i, :side[i], :side[i]]`` at (y[i], x[i]) of ``flat`` (n, size * size) by
    pixel-wise maximum (pixels beyond a tile's side are zeroed first, so they change nothing)."""
    n, high = tile.shape[0], tile.shape[-1]
    ar = torch.arange(high)
    rows, cols = ar.view(1, -1, 1), ar.view(1, 1, -1)
    h = side.view(-1, 1, 1)
    tile = tile * ((rows < h) & (cols < h))
    y, x = y.view(-1, 1, 1), x.view(-1, 1, 1)
    index = ((y + rows).clamp(max=size - 1) * size + (x + cols).clamp(max=size - 1)).view(n, -1)
    flat.scatter_reduce_(1, index, tile.reshape(n, -1), reduce="amax")


def make_scene(scene: DigitScene | str, split: str, count: int | None = None,
               seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images of one split of a generated scene (``scene`` or its name in ``SCENES``):
    ``(images uint8 (N, 1, canvas, canvas), labels, sources (N, 1 + D + F))``.

    Each image, with the split's source pool of :func:`cluttered_sources` (disjoint pools): the target digit, scaled
    to a side in ``scales``, placed at least ``margin`` pixels from every border and, if ``framed``, boxed by a
    one-pixel frame of full intensity; ``distractors`` other digits of the pool scaled the same way,
    anywhere; ``fragments`` square pieces (sides in ``fragment_side``) of further digits; all pasted by pixel-wise
    maximum, so anything may cross anything; Gaussian noise; clipped and stored as uint8. The label is the target's.
    The random draws, in order: picks (N, 1 + D + F), sides (N, 1 + D + F), fragment sides (N, F), uniforms
    (N, 1 + D + F, 4) for crop and placement, noise. ``sources`` lists every digit used: the target, the
    distractors, then the digits the fragments come from.
    ``seed`` (default the scene's) fixes the data; a run's seed never changes it.
    """
    scene = SCENES[scene] if isinstance(scene, str) else scene
    seed = scene.seed if seed is None else seed
    key = (repr(scene), split, count, seed)  # every field of the scene
    if key not in _MADE:
        made = _made(scene, split, count, seed)
        if len(_MADE) >= MEMO_SPLITS:
            del _MADE[next(iter(_MADE))]  # the oldest
        _MADE[key] = made
    return tuple(t.clone() for t in _MADE[key])  # the caller's own copy


# A process that trains many networks (a study, the tests) makes each split once: the last MEMO_SPLITS made are kept.
MEMO_SPLITS = 6
_MADE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _made(scene: DigitScene, split: str, count: int | None,
          seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`make_scene`'s images, made."""
    pool, base, labels_all = _split_pool(scene.name, split, seed)
    low, high = scene.scales
    d, f, size = scene.distractors, scene.fragments, scene.canvas
    n = scene.images[split] if count is None else count
    g = torch.Generator().manual_seed(derive_seed(seed, list(CLUTTERED_SOURCES).index(split)))
    objects = 1 + d + f
    picks = torch.randint(len(pool), (n, objects), generator=g)
    sides = torch.randint(low, high + 1, (n, objects), generator=g)
    frag_sides = torch.randint(scene.fragment_side[0], scene.fragment_side[1] + 1, (n, f), generator=g)
    u = torch.rand(n, objects, 4, generator=g)
    tiles = torch.zeros(high - low + 1, len(pool), high, high)
    for side in range(low, high + 1):
        tiles[side - low, :, :side, :side] = F.interpolate(base, size=(side, side), mode="bilinear",
                                                           align_corners=False).clamp_(0, 1)[:, 0]
    canvas = torch.zeros(n, 1, size, size)
    flat = canvas.view(n, -1)
    everyone = torch.arange(n).view(-1, 1, 1)
    ar = torch.arange(high)
    for j in range(objects):
        side = sides[:, j]
        tile = tiles[side - low, picks[:, j]]
        if j > d:  # a fragment: a square piece of the scaled digit, moved to the tile's corner
            piece = frag_sides[:, j - 1 - d]
            cy = (u[:, j, 0] * (side - piece + 1)).long().view(-1, 1, 1)
            cx = (u[:, j, 1] * (side - piece + 1)).long().view(-1, 1, 1)
            tile = tile[everyone, (cy + ar.view(1, -1, 1)).clamp(max=high - 1),
                        (cx + ar.view(1, 1, -1)).clamp(max=high - 1)]
            side = piece
        if j == 0:  # the target: `margin` pixels clear of the borders (room for its frame)
            m = scene.margin
            y = m + (u[:, j, 2] * (size - side - 2 * m + 1)).long()
            x = m + (u[:, j, 3] * (size - side - 2 * m + 1)).long()
            target = (side, y, x)
        else:
            y = (u[:, j, 2] * (size - side + 1)).long()
            x = (u[:, j, 3] * (size - side + 1)).long()
        _paste(flat, tile, side, y, x, size)
    if scene.framed:
        side, y, x = target
        rows, cols = torch.arange(size).view(1, -1, 1), torch.arange(size).view(1, 1, -1)
        top, left = (y - 1).view(-1, 1, 1), (x - 1).view(-1, 1, 1)
        bottom, right = (y + side).view(-1, 1, 1), (x + side).view(-1, 1, 1)
        inside = (rows >= top) & (rows <= bottom) & (cols >= left) & (cols <= right)
        edge = inside & ((rows == top) | (rows == bottom) | (cols == left) | (cols == right))
        canvas[:, 0].masked_fill_(edge, 1.0)
    canvas.add_(torch.randn(canvas.shape, generator=g), alpha=scene.noise).clamp_(0, 1)
    images = canvas.mul_(255).round_().to(torch.uint8)
    return images, labels_all[picks[:, 0]], pool[picks]
