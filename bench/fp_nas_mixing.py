"""How fast the shared weights learn when each variable of the FP-NAS space is mixed per layer (run by hand).

    python bench/fp_nas_mixing.py                                 # the variables, embedded digits, CPU, ~2 minutes
    python bench/fp_nas_mixing.py --rows widths --seeds 0 1 2     # the width rows, 3 seeds, ~20 minutes

The supernet over the demo preset's reduced layers (8 layers at a quarter width, 16x16) trains with plain SGD
(lr 0.1, one architecture per step, batch 64) for a few epochs of the weight half of the digits, each step's
architecture drawn uniformly per layer from a space where only the named variables vary (the others fixed at k3,
ReLU, no attention, expansion 6, published width). Rows give the mean training loss of every 12 steps (the mean over
seeds) and the last window's mean +- std over seeds: a variable whose per-layer mixing keeps the loss near
log(10) = 2.30 is one the shared weights learn slowly. "whole network" rows switch every layer together (all layers
the first choice, or all the second), the slimmable-network setting. Every row takes the same steps, one forward and
backward each. A seed sets the supernet's initialisation, the data order and the architectures drawn.

The width rows compare the blocks of the space (`residual: 'pad'` at the layers where the published network has an
identity residual, `search/probabilistic/space.py`) with the zoo's blocks as they were (an identity only where the
widths match, a 1x1 conv skip where they do not), and widths rounded to multiples of 8 (as before) with the
rounding that scales with width_mult.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from search.engine import Recipe, make_optimizer
from search.probabilistic.algorithm import PRESETS, FpNasSearch, FpNasSettings
from search.probabilistic.space import build_space
from search.runner import SearchRunner

FIXED = {"block": ("k3",), "act": ("relu",), "attention": ("none",), "expansion": (6,), "width": (1.0,)}
WIDTHS = {"width": (0.75, 1.0)}
SKIP_WIDTHS = {"block": ("k3", "skip"), "width": (0.75, 1.0)}
TODAY = ()  # no block keeps its identity across a width change: the zoo's default blocks


@dataclass(frozen=True)
class Row:
    label: str
    space: str
    varied: dict = field(default_factory=dict)  # the varied variables' choices
    whole: bool = False  # every layer switches together instead of each drawing its own
    pad_residual: tuple[str, ...] | None = None  # FbnetSpace.pad_residual; None: the space's default
    divisor: int | None = None  # build_space's divisor; None: the default (scales with width_mult)


VARIABLE_ROWS = [
    Row("nothing varies (one network)", "fbnetv2-f++"),
    Row("kernel k3/k5", "fbnetv2-f++", {"block": ("k3", "k5")}),
    Row("activation relu/h-swish", "fbnetv2-f++", {"act": ("relu", "hard_swish")}),
    Row("expansion 3/6", "fbnetv2-f++", {"expansion": (3, 6)}),
    Row("SE none/se", "fbnetv2-f", {"attention": ("none", "se")}),
    Row("width x0.75/x1", "fbnetv2-f++", WIDTHS),
    Row("split attention none/sa1", "fbnetv2-f++", {"attention": ("none", "sa1")}),
    Row("split attention sa1/sa2", "fbnetv2-f++", {"attention": ("sa1", "sa2")}),
    Row("split attention none/sa1, whole network", "fbnetv2-f++", {"attention": ("none", "sa1")}, whole=True),
    Row("width x0.75/x1, whole network", "fbnetv2-f++", WIDTHS, whole=True),
    Row("demo space (F: kernel/skip, act, SE, expansion)", "fbnetv2-f", {"block": ("k3", "k5", "skip"),
        "act": ("relu", "hard_swish"), "attention": ("none", "se"), "expansion": (3, 6)}),
    Row("demo space + widths x0.75/x1", "fbnetv2-f", {"block": ("k3", "k5", "skip"), "act": ("relu", "hard_swish"),
        "attention": ("none", "se"), "expansion": (3, 6), "width": (0.75, 1.0)}),
]
WIDTH_ROWS = [
    Row("width x0.75/x1, default blocks, widths of 8 (before)", "fbnetv2-f++", WIDTHS, pad_residual=TODAY, divisor=8),
    Row("width x0.75/x1, residual pad, widths of 8", "fbnetv2-f++", WIDTHS, divisor=8),
    Row("width x0.75/x1, whole network, default blocks, widths of 8 (before)", "fbnetv2-f++", WIDTHS, whole=True,
        pad_residual=TODAY, divisor=8),
    Row("width x0.75/x1, default blocks", "fbnetv2-f++", WIDTHS, pad_residual=TODAY),
    Row("width x0.75/x1, residual pad", "fbnetv2-f++", WIDTHS),
    Row("width x0.75/x1, whole network, default blocks", "fbnetv2-f++", WIDTHS, whole=True, pad_residual=TODAY),
    Row("width x0.75/x1, whole network, residual pad", "fbnetv2-f++", WIDTHS, whole=True),
    Row("k3/skip, width x1 (no width change: the ceiling of the rows below)", "fbnetv2-f++", {"block": ("k3", "skip")}),
    Row("k3/skip + width x0.75/x1, default blocks", "fbnetv2-f++", SKIP_WIDTHS, pad_residual=TODAY),
    Row("k3/skip + width x0.75/x1, residual pad on ir only", "fbnetv2-f++", SKIP_WIDTHS, pad_residual=("ir",)),
    Row("k3/skip + width x0.75/x1, residual pad on ir and skip", "fbnetv2-f++", SKIP_WIDTHS,
        pad_residual=("ir", "skip")),
]
ROWS = {"variables": VARIABLE_ROWS, "widths": WIDTH_ROWS}


def probe_algorithm(row: Row) -> type[FpNasSearch]:
    """FP-NAS's wiring with the row's space: its rounding divisor and which blocks keep the residual."""

    class Probe(FpNasSearch):
        @classmethod
        def make_space(cls, settings: FpNasSettings, data):
            space = build_space(settings.space, tuple(data.input_size), data.num_classes,
                                width_mult=settings.width_mult, layers=tuple(settings.layers),
                                choices={k: tuple(v) for k, v in settings.choices.items()}, divisor=row.divisor)
            space = replace(space, stem_stride=settings.stem_stride)
            return space if row.pad_residual is None else replace(space, pad_residual=row.pad_residual)

    return Probe


def train(row: Row, seed: int, epochs: int, out: str) -> list[float]:
    """The training loss of every step."""
    choices = {**FIXED, **row.varied}
    settings = FpNasSettings(**{**PRESETS["demo"], "space": row.space, "choices": choices, "target": 1e12,
                                "seed": seed})
    runner = SearchRunner(probe_algorithm(row), settings, out, progress=False)
    space, supernet, data = runner.space, runner.supernet, runner.data
    sizes = space.sizes()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = make_optimizer(supernet, Recipe(lr=0.1, weight_decay=5e-4))
    supernet.train()
    losses = []
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for images, labels in data.train:
            if row.whole:
                which = rng.randrange(2)
                arch = [tuple(min(which, n - 1) for n in layer) for layer in sizes]
            else:
                arch = [tuple(rng.randrange(n) for n in layer) for layer in sizes]
            loss = F.cross_entropy(supernet(images, space.arch_blocks(arch)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", choices=sorted(ROWS), default="variables")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the losses do not depend on it)")
    p.add_argument("--out", default="runs/fp_nas_mixing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    SearchRunner.check_budget = lambda self: None  # these probe spaces measure training speed; no cost target
    print(f"| varied per layer | mean training loss per 12 steps ({len(args.seeds)} seeds) | last 12 steps, "
          "mean ± std | s |")
    print("|---|---|---|---|")
    for index, row in enumerate(ROWS[args.rows]):
        started = time.perf_counter()
        runs = [train(row, seed, args.epochs, f"{args.out}/{args.rows}{index}_s{seed}") for seed in args.seeds]
        steps = len(runs[0])
        windows = [statistics.mean(statistics.mean(r[i:i + 12]) for r in runs) for i in range(0, steps, 12)]
        last = [statistics.mean(r[-12:]) for r in runs]
        spread = statistics.stdev(last) if len(last) > 1 else 0.0
        print(f"| {row.label} | {' '.join(f'{w:.2f}' for w in windows)} | {statistics.mean(last):.2f} ± "
              f"{spread:.2f} | {time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
