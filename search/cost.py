"""The cost of an architecture (a list of zoo block dicts): one interface, mult-adds now, latency later.

`BlockwiseCost.cost(arch)` is the cost of the stem and head (which depends only on the last block's width) plus
one term per block, each measured once and memoised per (position, input width, block dict), so a searcher can
price thousands of architectures without building them. A subclass says how one block and one whole network are
measured: `MultAddsCost` counts them with the zoo's own counter (`fpnas_zoo.counting`, on the meta device); a
measured-latency cost would time them on the target device instead. Tests cross-check the sums against
`fpnas_zoo.count_spec` of the built specs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fpnas_zoo import count_spec, spec_from_dict
from fpnas_zoo.block_types import BLOCK_TYPES
from fpnas_zoo.counting import count_mult_adds
from fpnas_zoo.spec import ModelSpec

from .supernet import block_key

# The `search` field of a probe spec (specs need one); nothing reads it.
_METADATA = {"algorithm": "fpnas", "settings": {}, "seed": 0, "dataset": "-", "budget_mult_adds": None,
             "measured": {}, "val_top1": None, "wall_time_s": 0.0, "gpu_hours": 0.0}


class BlockwiseCost:
    """Cost of an architecture = ends(last width) + sum of its blocks' costs, each measured once.

    `base` gives the stem, head and input size (its blocks are not used). Subclasses implement
    `measure_block(in_chs, resolution, block)` and `measure_network(spec)`.
    """

    unit = ""

    def __init__(self, base: ModelSpec):
        self.base = base
        self.blocks: dict[tuple[int, int, tuple], float] = {}
        self.ends: dict[int, float] = {}

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> float:
        raise NotImplementedError

    def measure_network(self, spec: ModelSpec) -> float:
        raise NotImplementedError

    def block_costs(self, arch: list[dict]) -> list[float]:
        """The cost of each block of `arch`, measured on first use."""
        costs = []
        in_chs, res = self.base.stem["out_chs"], -(-self.base.input_size[1] // self.base.stem["stride"])
        for position, block in enumerate(arch):
            key = (position, in_chs, block_key(block))
            if key not in self.blocks:
                self.blocks[key] = self.measure_block(in_chs, res, block)
            costs.append(self.blocks[key])
            in_chs, res = block["out_chs"], -(-res // block["stride"])  # 'same' padding: ceil(res / stride)
        return costs

    def cost(self, arch: list[dict]) -> float:
        blocks = self.block_costs(arch)
        width = arch[-1]["out_chs"]
        if width not in self.ends:  # stem + head: the whole network less its blocks, once per last width
            spec = spec_from_dict({**self.base.to_dict(), "blocks": [dict(b) for b in arch]})
            self.ends[width] = self.measure_network(spec) - sum(blocks)
        return self.ends[width] + sum(blocks)


class MultAddsCost(BlockwiseCost):
    """Mult-adds of every op the zoo's counter knows (the zoo's `mult_adds`), as integers."""

    unit = "mult-adds"

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> int:
        with torch.device("meta"):
            module = BLOCK_TYPES[block["type"]].build(in_chs, block, stride=block["stride"], dilation=1,
                                                      norm_layer=nn.BatchNorm2d, drop_path_rate=0.0)
        return count_mult_adds(module, (in_chs, resolution, resolution))[0]

    def measure_network(self, spec: ModelSpec) -> int:
        return count_spec(spec).mult_adds
