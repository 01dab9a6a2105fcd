"""How fast the shared weights learn when each variable of the FP-NAS space is mixed per layer (run by hand).

    python bench/fp_nas_mixing.py                 # embedded digits, CPU, about 2 minutes
    python bench/fp_nas_mixing.py --epochs 8

The supernet over the demo preset's reduced layers (8 layers at a quarter width, 16x16) trains with plain SGD
(lr 0.1, one architecture per step, batch 64) for a few epochs of the weight half of the digits, each step's
architecture drawn uniformly per layer from a space where only the named variables vary (the others fixed at k3,
ReLU, no attention, expansion 6, published width). Rows give the mean training loss of every 12 steps: a variable
whose per-layer mixing keeps the loss near log(10) = 2.30 is one the shared weights learn slowly. "whole network"
rows switch every layer together (all layers the first choice, or all the second), the slimmable-network setting.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from search.engine import Recipe, make_optimizer
from search.probabilistic.algorithm import PRESETS, FpNasSearch, FpNasSettings
from search.runner import SearchRunner

FIXED = {"block": ("k3",), "act": ("relu",), "attention": ("none",), "expansion": (6,), "width": (1.0,)}
ROWS = [  # (label, space, the varied variables' choices, per layer?)
    ("nothing varies (one network)", "fbnetv2-f++", {}, True),
    ("kernel k3/k5", "fbnetv2-f++", {"block": ("k3", "k5")}, True),
    ("activation relu/h-swish", "fbnetv2-f++", {"act": ("relu", "hard_swish")}, True),
    ("expansion 3/6", "fbnetv2-f++", {"expansion": (3, 6)}, True),
    ("SE none/se", "fbnetv2-f", {"attention": ("none", "se")}, True),
    ("width x0.75/x1", "fbnetv2-f++", {"width": (0.75, 1.0)}, True),
    ("split attention none/sa1", "fbnetv2-f++", {"attention": ("none", "sa1")}, True),
    ("split attention sa1/sa2", "fbnetv2-f++", {"attention": ("sa1", "sa2")}, True),
    ("split attention none/sa1, whole network", "fbnetv2-f++", {"attention": ("none", "sa1")}, False),
    ("width x0.75/x1, whole network", "fbnetv2-f++", {"width": (0.75, 1.0)}, False),
    ("demo space (F: kernel/skip, act, SE, expansion)", "fbnetv2-f", {"block": ("k3", "k5", "skip"),
     "act": ("relu", "hard_swish"), "attention": ("none", "se"), "expansion": (3, 6)}, True),
    ("demo space + widths x0.75/x1", "fbnetv2-f", {"block": ("k3", "k5", "skip"), "act": ("relu", "hard_swish"),
     "attention": ("none", "se"), "expansion": (3, 6), "width": (0.75, 1.0)}, True),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", default="runs/fp_nas_mixing")
    args = p.parse_args()
    SearchRunner.check_budget = lambda self: None  # these probe spaces measure training speed; no cost target
    print("| varied per layer | mean training loss per 12 steps | s |")
    print("|---|---|---|")
    for label, space, varied, per_layer in ROWS:
        choices = {**FIXED, **varied}
        settings = FpNasSettings(**{**PRESETS["demo"], "space": space, "choices": choices, "target": 1e12})
        runner = SearchRunner(FpNasSearch, settings, f"{args.out}/{len(label)}", progress=False)
        space_, supernet, data = runner.space, runner.supernet, runner.data
        sizes = space_.sizes()
        torch.manual_seed(0)
        rng = random.Random(0)
        optimizer = make_optimizer(supernet, Recipe(lr=0.1, weight_decay=5e-4))
        supernet.train()
        losses, started = [], time.perf_counter()
        for epoch in range(args.epochs):
            data.train.set_epoch(epoch)
            for images, labels in data.train:
                if per_layer:
                    arch = [tuple(rng.randrange(n) for n in layer) for layer in sizes]
                else:
                    which = rng.randrange(2)
                    arch = [tuple(min(which, n - 1) for n in layer) for layer in sizes]
                loss = F.cross_entropy(supernet(images, space_.arch_blocks(arch)), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        windows = [sum(losses[i:i + 12]) / len(losses[i:i + 12]) for i in range(0, len(losses), 12)]
        print(f"| {label} | {' '.join(f'{w:.2f}' for w in windows)} | {time.perf_counter() - started:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
