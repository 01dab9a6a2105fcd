"""How a weight-sharing supernet is trained on the networks of its space: one rule per name of `RULES`.

A rule is a task for `search.engine.train_epoch` (its `task`: (images, targets) -> {"loss", "output"}), so the
engine's loop, optimiser and schedule stay the ones every other training uses.

- `uniform`: one network drawn uniformly per step (single-path one-shot, SPOS: Guo et al., ECCV 2020).
- `sandwich`: per step the largest and the smallest network of the space and `draws` uniform draws, their losses
  summed into one backward pass (the sandwich rule of universally slimmable networks, Yu & Huang, ICCV 2019, as
  BigNAS, Yu et al., ECCV 2020, trains its supernet). With in-place distillation (`distill`, the default) the largest
  network learns from the labels and every other one from the largest's predictions, detached (BigNAS; Once-for-All,
  Cai et al., ICLR 2020, distils from a trained largest network the same way), with timm's soft-target
  cross-entropy.

A sandwich step runs 2 + `draws` networks, so it costs that many uniform steps; `passes_per_step` says how many.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from .space import Arch

RULES = ("uniform", "sandwich")
SANDWICH_DRAWS = 2  # uniform draws per sandwich step besides the largest and the smallest network


def passes_per_step(rule: str, draws: int = SANDWICH_DRAWS) -> int:
    """Networks run (forward and backward) per step of `rule`."""
    return 1 if rule == "uniform" else 2 + draws


class SupernetTask:
    """The loss of one training step of `supernet` (a `search.supernet.Supernet`) under `rule`.

    `draw(rng)` returns a uniform draw of the space; `largest` and `smallest` are the space's extremes (the sandwich's
    bread). The draws come from `rng`, so a seeded run repeats. "output" is the logits of the first network run (the
    uniform draw, or the largest), which the engine counts accuracy on."""

    def __init__(self, supernet: torch.nn.Module, rule: str, draw: Callable[[random.Random], Arch],
                 rng: random.Random, largest: Arch | None = None, smallest: Arch | None = None,
                 draws: int = SANDWICH_DRAWS, distill: bool = True, label_smoothing: float = 0.0):
        if rule not in RULES:
            raise ValueError(f"supernet rule {rule!r}: expected one of {', '.join(RULES)}")
        if rule == "sandwich" and (largest is None or smallest is None):
            raise ValueError("the sandwich rule needs the space's largest and smallest networks")
        if draws < 0:
            raise ValueError(f"sandwich draws must be >= 0, got {draws}")
        self.supernet, self.rule, self.draw, self.rng = supernet, rule, draw, rng
        self.largest, self.smallest, self.draws, self.distill = largest, smallest, draws, distill
        self.label_smoothing = label_smoothing
        self.soft = SoftTargetCrossEntropy()

    @property
    def passes_per_step(self) -> int:
        """Networks run (forward and backward) per step."""
        return passes_per_step(self.rule, self.draws)

    def networks(self) -> list[Arch]:
        """The networks of the next step, the teacher (when there is one) first."""
        if self.rule == "uniform":
            return [self.draw(self.rng)]
        return [self.largest, self.smallest, *(self.draw(self.rng) for _ in range(self.draws))]

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> dict:
        nets = self.networks()
        first = self.supernet(images, nets[0]).float()
        loss = F.cross_entropy(first, targets, label_smoothing=self.label_smoothing)
        teacher = first.detach().softmax(dim=1) if self.distill else None
        for arch in nets[1:]:
            logits = self.supernet(images, arch).float()
            loss = loss + (self.soft(logits, teacher) if teacher is not None else
                           F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing))
        return {"loss": loss, "output": first}
