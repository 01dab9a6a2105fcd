"""The FPNAS search space: a fixed macro skeleton, and per block a choice of expansion, kernel, shortcut, split.

The searcher keeps a point of the space as a list of `Choice`s, one per searched position; `arch_blocks` turns it
into the zoo's own block dicts (the fixed `ds` block, then `fpnas` blocks), which is what the supernet and the cost
model take, and `to_spec_dict` into the zoo's spec, so what the searcher finds builds with the zoo's builder.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass

from timm.layers import make_divisible

from fpnas_zoo.block_types import BLOCK_TYPES

from ..space import searched_spec_dict

# The official FPNASNet skeleton (16 searched blocks): widths and ImageNet strides.
OFFICIAL_WIDTHS = (24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 112, 192, 192, 192, 320)
OFFICIAL_STRIDES = (2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)
MIN_BLOCKS = 4  # a smaller skeleton than its four stride-2 positions is not FPNASNet's


def check_num_blocks(num_blocks: int, name: str = "num_blocks") -> None:
    """ValueError naming `name` (the argument, or the option a command line gave) when the skeleton cannot have
    `num_blocks` searched positions."""
    if not MIN_BLOCKS <= num_blocks <= len(OFFICIAL_WIDTHS):
        raise ValueError(f"{name} must be in [{MIN_BLOCKS}, {len(OFFICIAL_WIDTHS)}] (the FPNASNet skeleton has "
                         f"{len(OFFICIAL_WIDTHS)} positions), got {num_blocks}")


FPNAS_PAPER = "Cui et al., Fast and Practical Neural Architecture Search (FPNAS), ICCV 2019"


@dataclass(frozen=True, order=True)
class Choice:
    """One candidate block: MBConv expansion t and kernel k, shortcut on/off, split on/off."""

    expansion: float
    kernel_size: int
    shortcut: bool
    split: bool

    def label(self) -> str:
        return f"t{self.expansion:g}_k{self.kernel_size}{'_sc' if self.shortcut else ''}{'_sp' if self.split else ''}"


def _fields_changed(a: Choice, b: Choice) -> int:
    """How many of expansion, kernel, shortcut and split differ."""
    return sum(x != y for x, y in zip(astuple(a), astuple(b), strict=True))


@dataclass(frozen=True)
class FpnasSpace:
    """N block positions with fixed widths and strides, and the candidate set of each position."""

    widths: tuple[int, ...]
    strides: tuple[int, ...]
    expansions: tuple[float, ...] = (3, 4, 6, 8)
    kernels: tuple[int, ...] = (3, 5)
    stem_chs: int = 34
    stem_stride: int = 2
    ds_chs: int = 24
    head_chs: int = 1280
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000

    @property
    def num_blocks(self) -> int:
        return len(self.widths)

    def in_chs(self, position: int) -> int:
        return self.ds_chs if position == 0 else self.widths[position - 1]

    def choices(self, position: int) -> list[Choice]:
        """Every valid candidate of a position (splits need even widths that add up)."""
        out = []
        for t, k, shortcut, split in itertools.product(self.expansions, self.kernels, (False, True), (False, True)):
            choice = Choice(float(t), k, shortcut, split)
            if not BLOCK_TYPES["fpnas"].check_channels(self.in_chs(position), self.block_args(position, choice)):
                out.append(choice)
        return out

    def block_args(self, position: int, choice: Choice) -> dict:
        t = choice.expansion
        return {"type": "fpnas", "out_chs": self.widths[position], "kernel_size": choice.kernel_size,
                "stride": self.strides[position], "expansion": int(t) if float(t).is_integer() else t,
                "shortcut": choice.shortcut, "split": choice.split, "act": "relu"}

    def ds_block(self) -> dict:
        """The fixed depthwise-separable block between the stem and the searched positions (FPNASNet's block1)."""
        return {"type": "ds", "out_chs": self.ds_chs, "kernel_size": 3, "stride": 1, "act": "relu"}

    def arch_blocks(self, arch: list[Choice]) -> list[dict]:
        """The zoo block dicts of an architecture: the fixed `ds` block, then one `fpnas` block per position."""
        return [self.ds_block()] + [self.block_args(i, c) for i, c in enumerate(arch)]

    def candidates(self) -> list[list[dict]]:
        """Per block of `arch_blocks`, the block dicts it may take (the supernet's positions)."""
        return [[self.ds_block()]] + [[self.block_args(i, c) for c in self.choices(i)] for i in range(self.num_blocks)]

    def default_arch(self) -> list[Choice]:
        """Where the search starts: MobileNetV2-like blocks (t = 6, 3x3, shortcut, no split)."""
        t = 6.0 if 6 in self.expansions else float(max(self.expansions))
        return [Choice(t, min(self.kernels), True, False) for _ in range(self.num_blocks)]

    def default_blocks(self) -> list[dict]:
        return self.arch_blocks(self.default_arch())

    def feasible_arch(self, cost: Callable[[list[Choice]], float], budget: float, option: str = "--mult-adds-budget",
                      format_cost: Callable[[float], str] = "{:,.0f} mult-adds".format) -> list[Choice]:
        """A start inside the budget and near it (`--start feasible`): from `default_arch`, lower one position at a
        time until the network costs less than `budget`, each time making the change that saves the least. The
        changes weighed are every position set to every choice that costs less there; ties go to the change of the
        fewest fields (expansion, kernel, shortcut, split), then to the earlier position and choice. So the start is
        the default network lowered by the smallest steps that reach the budget, and it ends within one such step
        of it. The widths and strides are fixed, so a position's choice adds the same cost whatever the others
        are: each is priced once, on the default network.

        ValueError naming `option` and the cost (`format_cost`) when even the smallest network is not under the
        budget.
        """
        arch = self.default_arch()
        choices = [self.choices(p) for p in range(self.num_blocks)]
        price = [[cost([*arch[:p], c, *arch[p + 1:]]) for c in choices[p]] for p in range(self.num_blocks)]
        chosen = [choices[p].index(c) for p, c in enumerate(arch)]
        current = cost(arch)
        while current >= budget:
            steps = [(price[p][chosen[p]] - price[p][i], _fields_changed(arch[p], c), p, i)
                     for p in range(self.num_blocks) for i, c in enumerate(choices[p])
                     if price[p][i] < price[p][chosen[p]]]
            if not steps:
                raise ValueError(f"{option} {budget:.4g}: the smallest network of the space costs "
                                 f"{format_cost(current)}, at or over it: no start meets it")
            _, _, p, chosen[p] = min(steps)
            arch[p] = choices[p][chosen[p]]
            current = cost(arch)
        return arch

    def to_spec_dict(self, arch: list[Choice], name: str, mean, std, metadata: dict) -> dict:
        """The zoo spec of an architecture of this space (provenance 'searched')."""
        return self.spec_dict(self.arch_blocks(arch), name, mean, std, metadata)

    def spec_dict(self, blocks: list[dict], name: str, mean, std, metadata: dict) -> dict:
        """The zoo spec of an architecture given as block dicts (what `arch_blocks` returns)."""
        return searched_spec_dict(
            name=name, input_size=self.input_size, num_classes=self.num_classes, mean=mean, std=std,
            stem={"type": "conv_bn_act", "out_chs": self.stem_chs, "kernel_size": 3, "stride": self.stem_stride,
                  "act": "relu"},
            blocks=blocks,
            head={"type": "conv_head", "out_chs": self.head_chs, "act": "relu", "pool": "avg", "pre_logits_chs": None,
                  "drop_rate": 0.2},
            paper=FPNAS_PAPER, conventions=("without_bn", "conv_only"), metadata=metadata,
            default_notes="Found by python -m search.run --algo fpnas.")

    def describe(self) -> dict:
        return asdict(self)


def fpnas_space(num_blocks: int = 16, input_size: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000,
                width_mult: float = 1.0, expansions: tuple[float, ...] = (3, 4, 6, 8),
                kernels: tuple[int, ...] = (3, 5), stem_stride: int | None = None) -> FpnasSpace:
    """The official FPNASNet skeleton with `num_blocks` positions (16 = all of it).

    Fewer blocks keep the stride-2 positions and the last one, then as many others as fit, evenly spread.
    32-px inputs get CIFAR strides: stem and the first searched block at stride 1 (MobileNetV2-for-CIFAR).
    `stem_stride` overrides the stem's (small CPU studies: 2 searches a 32-px task at 16x16).
    """
    if stem_stride is not None and stem_stride not in (1, 2):
        raise ValueError(f"--stem-stride must be 1 or 2, got {stem_stride}")
    check_num_blocks(num_blocks)
    keep = {i for i, s in enumerate(OFFICIAL_STRIDES) if s == 2} | {15}
    rest = [i for i in range(16) if i not in keep]
    extra = num_blocks - len(keep)
    if extra < 0:
        keep = set(sorted(keep)[:num_blocks])
    else:
        keep |= {rest[round(j * (len(rest) - 1) / max(extra - 1, 1))] for j in range(extra)} if extra else set()
    positions = sorted(keep)
    small = input_size[1] <= 64
    strides = [OFFICIAL_STRIDES[i] for i in positions]
    if small:
        strides[0] = 1

    def scale(c: int) -> int:
        return make_divisible(c * width_mult, 8)

    return FpnasSpace(
        widths=tuple(scale(OFFICIAL_WIDTHS[i]) for i in positions), strides=tuple(strides),
        expansions=tuple(expansions), kernels=tuple(kernels), stem_chs=make_divisible(34 * width_mult, 2),
        stem_stride=stem_stride or (1 if small else 2), ds_chs=scale(24), head_chs=scale(1280),
        input_size=tuple(input_size), num_classes=num_classes,
    )
