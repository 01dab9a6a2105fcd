"""Mult-adds lookup table of a search space: a candidate's cost is a sum, no model build needed.

Entries are measured with the zoo's own counter (`torch.utils.flop_counter` on the meta device), one per
(position, choice) at that position's input width and resolution; the fixed part (stem, block1, head,
classifier) is measured once. Tests cross-check the sums against `fpnas_zoo.count_spec` of built specs.
"""
from __future__ import annotations

import torch

from fpnas_zoo import count_spec, spec_from_dict
from fpnas_zoo.block_types import BLOCK_TYPES
from fpnas_zoo.counting import flop_counts

from .space import Choice, FpnasSpace

_METADATA = {"algorithm": "fpnas", "settings": {}, "seed": 0, "dataset": "-", "budget_mult_adds": None,
             "measured": {}, "val_top1": None, "wall_time_s": 0.0, "gpu_hours": 0.0}


def block_mult_adds(space: FpnasSpace, position: int, choice: Choice) -> int:
    args = space.block_args(position, choice)
    res = space.resolution(position)
    with torch.device("meta"):
        block = BLOCK_TYPES["fpnas"].build(space.in_chs(position), args, stride=args["stride"], dilation=1,
                                           norm_layer=torch.nn.BatchNorm2d, drop_path_rate=0.0)
    return sum(flop_counts(block, (space.in_chs(position), res, res))["Global"].values()) // 2


class FlopsTable:
    """`table.cost(arch)` = mult-adds of the whole network (all counted ops, the zoo's `mult_adds`)."""

    def __init__(self, space: FpnasSpace):
        self.space = space
        self.entries: dict[tuple[int, Choice], int] = {
            (i, c): block_mult_adds(space, i, c) for i in range(space.num_blocks) for c in space.choices(i)
        }
        default = space.default_arch()
        spec = spec_from_dict(space.to_spec_dict(default, "flops_probe", (0.5,) * 3, (0.25,) * 3, dict(_METADATA)))
        self.fixed = count_spec(spec).mult_adds - sum(self.entries[i, c] for i, c in enumerate(default))

    def cost(self, arch: list[Choice]) -> int:
        return self.fixed + sum(self.entries[i, c] for i, c in enumerate(arch))

    def rows(self) -> list[dict]:
        """The table as plain data (position, input width, resolution, choice, mult-adds)."""
        return [{"position": i, "in_chs": self.space.in_chs(i), "resolution": self.space.resolution(i),
                 "choice": c.label(), "mult_adds": v} for (i, c), v in self.entries.items()]
