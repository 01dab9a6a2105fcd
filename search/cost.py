"""The cost of an architecture (a list of zoo block dicts): one interface, mult-adds now, latency later.

`BlockwiseCost.cost(arch)` is the cost of the stem and head (which depends only on the last block's width) plus
one term per block, each measured once and memoised per (input width, input resolution, block dict), so a
searcher can price thousands of architectures without building them. A subclass says how one block and one whole
network are measured: `MultAddsCost` counts them with the zoo's own counter (`fpnas_zoo.counting`, on the meta
device); `search.latency_table.LatencyCost` looks them up in a table of times measured on the target device. Tests
cross-check the sums against `fpnas_zoo.count_spec` of the built specs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fpnas_zoo import count_spec, spec_from_dict
from fpnas_zoo.block_types import BLOCK_TYPES
from fpnas_zoo.counting import count_mult_adds
from fpnas_zoo.schema import block_key, canonical_block
from fpnas_zoo.spec import ModelSpec


def entry_key(in_chs: int, resolution: int, block: dict) -> tuple[int, int, tuple]:
    """How a block's cost is keyed: its input width and resolution, and its canonical dict (dicts with the same
    canonical form build the same module, `fpnas_zoo.schema.canonical_block`)."""
    return in_chs, resolution, block_key(canonical_block(in_chs, block))


def build_block(in_chs: int, block: dict, device: str | torch.device | None = None) -> nn.Module:
    """The zoo's module for one spec block dict on an `in_chs`-wide input, as the builder makes it (eval mode)."""
    return BLOCK_TYPES[block["type"]].build(in_chs, block, stride=block["stride"], dilation=1,
                                            norm_layer=nn.BatchNorm2d, drop_path_rate=0.0, device=device).eval()


class BlockwiseCost:
    """Cost of an architecture = ends(last width) + sum of its blocks' costs, each measured once.

    `base` gives the stem, head and input size (its blocks are not used). Subclasses implement
    `measure_block(in_chs, resolution, block)` and `measure_network(spec)`.
    """

    unit = ""

    def __init__(self, base: ModelSpec):
        self.base = base
        self.blocks: dict[tuple[int, int, tuple], float] = {}  # (in_chs, resolution, block_key) -> cost
        self.ends: dict[int, float] = {}  # last width -> cost of the stem and head

    def stem_output(self) -> tuple[int, int]:
        """(width, resolution) of the stem's output: the first block's input."""
        return self.base.stem["out_chs"], -(-self.base.input_size[1] // self.base.stem["stride"])

    def block_cost(self, in_chs: int, resolution: int, block: dict) -> float:
        """The cost of one block on an (in_chs, resolution, resolution) input, measured on first use."""
        key = entry_key(in_chs, resolution, block)
        if key not in self.blocks:
            self.blocks[key] = self.measure_block(in_chs, resolution, block)
        return self.blocks[key]

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> float:
        raise NotImplementedError

    def measure_network(self, spec: ModelSpec) -> float:
        raise NotImplementedError

    def block_costs(self, arch: list[dict]) -> list[float]:
        """The cost of each block of `arch`, measured on first use."""
        costs = []
        in_chs, res = self.stem_output()
        for block in arch:
            costs.append(self.block_cost(in_chs, res, block))
            in_chs, res = block["out_chs"], -(-res // block["stride"])  # 'same' padding: ceil(res / stride)
        return costs

    def spec(self, arch: list[dict]) -> ModelSpec:
        """The base spec with `arch` as its blocks."""
        return spec_from_dict({**self.base.to_dict(), "blocks": [dict(b) for b in arch]})

    def end_cost(self, arch: list[dict]) -> float:
        """The cost of the stem and head around `arch`: the whole network less its blocks, measured once per last
        width (the only thing of `arch` it depends on)."""
        width = arch[-1]["out_chs"]
        if width not in self.ends:
            blocks = sum(self.block_costs(arch))  # the blocks first: a timed cost measures them before the whole
            self.ends[width] = self.measure_network(self.spec(arch)) - blocks
        return self.ends[width]

    def cost(self, arch: list[dict]) -> float:
        return self.end_cost(arch) + sum(self.block_costs(arch))

    def reachable(self, candidates: list[list[dict]]) -> tuple[list[tuple[int, int, dict]], dict[int, list[dict]]]:
        """Every (in_chs, resolution, block) a network of `candidates` (one list per position) can meet, each once,
        and for every width the last block can end at one architecture that ends there (to measure the ends)."""
        entries: dict[tuple, tuple[int, int, dict]] = {}
        states: dict[tuple[int, int], list[dict]] = {self.stem_output(): []}  # (width, resolution) -> a path there
        for choices in candidates:
            following: dict[tuple[int, int], list[dict]] = {}
            for (in_chs, res), path in states.items():
                for block in choices:
                    entries.setdefault(entry_key(in_chs, res, block), (in_chs, res, canonical_block(in_chs, block)))
                    following.setdefault((block["out_chs"], -(-res // block["stride"])), path + [block])
            states = following
        last = {}
        for (width, _), path in states.items():
            last.setdefault(width, path)
        return list(entries.values()), last


class MultAddsCost(BlockwiseCost):
    """Mult-adds of every op the zoo's counter knows (the zoo's `mult_adds`), as integers."""

    unit = "mult-adds"
    # A block's mult-adds depend on its key alone, so every table of a process shares one memo: a second runner of
    # the same space (a study builds several) counts nothing again.
    _counted: dict[tuple[int, int, tuple], int] = {}

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> int:
        key = entry_key(in_chs, resolution, block)
        if key not in MultAddsCost._counted:
            MultAddsCost._counted[key] = count_mult_adds(build_block(in_chs, block, device="meta"),
                                                         (in_chs, resolution, resolution))[0]
        return MultAddsCost._counted[key]

    def measure_network(self, spec: ModelSpec) -> int:
        return count_spec(spec).mult_adds
