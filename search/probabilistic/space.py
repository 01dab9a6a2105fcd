"""The FP-NAS search spaces (FBNetV2-F, FBNetV2-F++ and FP-NAS-L) as data: per layer, a few search variables.

A layer of FP-NAS's spaces is not one categorical over whole blocks but a tuple of variables (block, nonlinearity,
attention, expansion, width), each with its own small choice set; the probabilistic searcher keeps one distribution
per variable (factorised) or per layer (joint). A point of the space is one choice index per variable per layer;
`arch_blocks` turns it into the zoo's own `ir` / `skip` block dicts, which the supernet, the cost model and the
zoo's builder take, and `locate` goes back.

Residuals across width changes: at a stride-1 layer where the published network has an identity residual (the
layer is as wide as the space's previous layer, or the stem), a drawn width that differs from the drawn input width
would switch the zoo block's identity path off (an `ir` adds it only when the widths match; a `skip` becomes a 1x1
conv). Drawn per layer, that switches identity paths on and off from step to step and the shared weights barely
learn (bench/results/2026-11-24-fp-nas-mixing.md). There, `arch_blocks` gives the block the zoo's `residual: 'pad'`
(the input zero-padded or
truncated to the block's width, FBNetV2's supernet rule) exactly where the widths differ: so the field appears only
where it changes the computation, and the published networks, whose widths match there, stay points with identical
block dicts. Layers where the published network changes width (a stage's first layer, and at small inputs the layer
whose stride 2 became 1) keep the zoo's default: the published network has no residual there, and giving one to
such layers of the full-size spaces would take the published networks out of them.

FBNetV2's own search space (its Table 1) is not readable here, so every number below says where it comes from:
[paper] FP-NAS or FBNetV2 text, [code: mobile-vision ...] the published FBNetV2 model definitions, [inferred] our
rule. The rules are chosen so that the published networks are points: FBNetV2-F4 of `fbnetv2-f` and FBNetV2-L2 of
`fp-nas-l` (width choices are multiples of the published width, expansion choices a grid plus the published value).
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from timm.layers import make_divisible

from fpnas_zoo.schema import block_key, canonical_block
from fpnas_zoo.spec import spec_from_dict

from ..cost import BlockwiseCost, MultAddsCost
from ..space import PROBE_METADATA, searched_spec_dict

SPACES = ("fbnetv2-f", "fbnetv2-f++", "fp-nas-l")
FP_NAS_PAPER = "Yan et al., FP-NAS: Fast Probabilistic Neural Architecture Search, CVPR 2021"
VARIABLES = ("block", "act", "attention", "expansion", "width")  # the paper's order: block, act, SE, e, width

# The published layer lists: (out_chs, stride, block, act, attention, expansion); None where a skip has none.
# [code: mobile-vision fbnet_v2 model definitions fbnetv2_f4 / fbnetv2_l2], as in tests/fixtures/specs/.
HS, RE = "hard_swish", "relu"
F4_LAYERS = (
    (16, 1, "k3", HS, "none", 1),
    (24, 2, "k5", HS, "none", 5.4566), (24, 1, "k5", HS, "none", 1.7912), (24, 1, "k5", HS, "none", 1.7912),
    (32, 2, "k5", RE, "se", 5.3501), (32, 1, "k5", RE, "se", 3.5379), (32, 1, "k5", RE, "se", 4.5379),
    (32, 1, "k5", RE, "se", 4.5379),
    (64, 2, "k5", HS, "none", 5.7133), (64, 1, "k3", HS, "none", 2.1212), (64, 1, "skip", None, None, None),
    (104, 1, "k3", HS, "none", 5.0333), (104, 1, "k5", HS, "se", 2.507), (104, 1, "k5", HS, "se", 1.7712),
    (112, 1, "k5", HS, "se", 3.7712),
    (184, 2, "k3", HS, "se", 5.5685), (184, 1, "k5", HS, "se", 2.84), (184, 1, "k5", HS, "se", 4.8754),
    (224, 1, "skip", None, None, None),
)
L2_LAYERS = (
    (16, 1, "k3", HS, "none", 1),
    (24, 2, "k5", HS, "none", 5.4566), (24, 1, "k5", HS, "none", 1.7912), (24, 1, "k3", HS, "none", 1.7912),
    (24, 1, "k5", HS, "none", 1.7912),
    (40, 2, "k5", HS, "se", 5.3501), (32, 1, "k5", HS, "se", 3.5379), (32, 1, "k5", HS, "se", 4.5379),
    (32, 1, "k5", HS, "se", 4.5379),
    (64, 2, "k5", HS, "none", 5.7133), (64, 1, "k3", HS, "none", 2.1212), (64, 1, "skip", None, None, None),
    (64, 1, "k3", HS, "none", 3.1246), (112, 1, "k3", HS, "none", 5.0333), (112, 1, "k5", HS, "se", 2.507),
    (112, 1, "k5", HS, "se", 1.7712), (112, 1, "k5", HS, "se", 2.7712), (112, 1, "k5", HS, "se", 3.7712),
    (112, 1, "k5", HS, "se", 3.7712),
    (184, 2, "k3", HS, "se", 5.5685), (184, 1, "k5", HS, "se", 2.84), (184, 1, "k5", HS, "se", 2.84),
    (184, 1, "k5", HS, "se", 4.8754), (184, 1, "k5", HS, "se", 4.8754),
    (224, 1, "skip", None, None, None),
)

# Per space: published layer list, its name, width multipliers, attention choices, default input size.
# Width multipliers [inferred]: FBNetV2-F around the published widths; FP-NAS-L "wider" [paper] from the
# published L2 widths up. Three values each keep the supernet affordable (see build_space).
_SPACE_DEFS = {
    "fbnetv2-f": (F4_LAYERS, "fbnetv2_f4", (0.75, 1.0, 1.25), ("none", "se"), 224),
    "fbnetv2-f++": (F4_LAYERS, "fbnetv2_f4", (0.75, 1.0, 1.25), ("none", "sa1", "sa2", "sa4"), 224),
    "fp-nas-l": (L2_LAYERS, "fbnetv2_l2", (1.0, 1.25, 1.5), ("none", "se", "sa1", "sa2", "sa4"), 256),
}
_ATTENTION_SOURCE = {
    "fbnetv2-f": "[paper] FP-NAS searches SE on/off per block in FBNetV2-F",
    "fbnetv2-f++": "[paper] F++ replaces SE by split attention with a searched number of splits; "
                   "[inferred] splits 1/2/4 (the ablation's 2 and 4, and 1 for SE-like gating)",
}
_ATTENTION_SOURCE["fp-nas-l"] = (_ATTENTION_SOURCE["fbnetv2-f++"] + " (L spaces use the F++ micro-architecture "
                                  "[paper]); [inferred] se kept as well, so that FBNetV2-L2 (which has SE) is a point")
EXPANSION_GRID = (2, 4, 6)  # [inferred] even steps over MBConv's usual 1..6 range (FBNet's largest is e6)
BLOCKS = ("k3", "k5", "skip")
ACTS = (RE, HS)
ATTENTIONS = ("none", "se", "sa1", "sa2", "sa4")
STEM_CHS, HEAD_CHS, PRE_LOGITS_CHS = 16, 1344, 1984  # [code: mobile-vision fbnetv2_f4/_l2] stem 16, ir_pool 224x6
# The block types that keep a layer's identity path across a width change. A skip too: as a 1x1 conv + BN + ReLU it
# is not an identity, and per-layer k3/skip + width mixing learns faster with the padded identity
# (bench/results/2026-11-24-fp-nas-mixing.md).
PAD_RESIDUAL = ("ir", "skip")


@dataclass(frozen=True)
class Variable:
    """One search variable of a layer: its name, its choice values (JSON-able) and where they come from."""

    name: str  # "block" | "act" | "attention" | "expansion" | "width"
    choices: tuple
    source: str


@dataclass(frozen=True)
class Layer:
    """One searched layer: its stride (shared by every choice, as the supernet needs) and its variables.

    `residual`: the published network adds an identity residual here (stride 1, the previous layer's width), so a
    width change keeps it (`residual: 'pad'`, see the module docstring)."""

    stride: int
    variables: tuple[Variable, ...]
    residual: bool = False


def _attention_fields(label: str) -> tuple[str, int]:
    """The `ir` block's (attention, splits) of an attention choice."""
    if label.startswith("sa"):
        return "split_attention", int(label[2:])
    return label, 1


def _attention_label(block: dict) -> str:
    return f"sa{block['splits']}" if block["attention"] == "split_attention" else block["attention"]


@dataclass(frozen=True)
class FbnetSpace:
    """The layers of an FP-NAS space and the fixed stem and head around them (satisfies `search.runner.SearchSpace`).

    A point is one choice index per variable of every layer (`sizes()` gives how many each has). `pad_residual`
    names the block types that get `residual: 'pad'` at a `residual` layer whose input width differs from theirs
    (empty: the zoo's default blocks everywhere, as before the option existed).
    """

    name: str
    layers: tuple[Layer, ...]
    stem_chs: int = STEM_CHS
    stem_stride: int = 2
    head_chs: int = HEAD_CHS
    pre_logits_chs: int = PRE_LOGITS_CHS
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    pad_residual: tuple[str, ...] = PAD_RESIDUAL

    # --- the shape of the space --------------------------------------------------------------

    def sizes(self) -> list[list[int]]:
        """Per layer, the number of choices of each variable (the distribution's shape)."""
        return [[len(v.choices) for v in layer.variables] for layer in self.layers]

    def used_variables(self) -> list[list[tuple[int, ...]]]:
        """Per layer and per choice of its block variable (variable 0), the indices of the variables that block
        uses: a skip uses only block and width (`block` ignores the rest), k3 / k5 use every variable. Tuples that
        differ only in ignored variables are one network (the distribution's `uses`)."""
        out = []
        for layer in self.layers:
            names = [v.name for v in layer.variables]
            skip = tuple(m for m, name in enumerate(names) if name in ("block", "width"))
            out.append([skip if b == "skip" else tuple(range(len(names))) for b in layer.variables[0].choices])
        return out

    def variable_names(self, layer: int) -> list[str]:
        return [v.name for v in self.layers[layer].variables]

    def choice_labels(self, layer: int) -> list[list[str]]:
        """Per variable of a layer, short labels of its choices for plots ("k5", "hs", "sa2", "e4", "w24")."""
        short = {"relu": "re", "hard_swish": "hs"}
        out = []
        for v in self.layers[layer].variables:
            if v.name == "expansion":
                out.append([f"e{c:g}" for c in v.choices])
            elif v.name == "width":
                out.append([f"w{c}" for c in v.choices])
            else:
                out.append([short.get(c, c) for c in v.choices])
        return out

    # --- points -> zoo block dicts ------------------------------------------------------------

    def block(self, layer: int, choice: Sequence[int]) -> dict:
        """The zoo block dict of one layer for choice indices (one per variable, in `variable_names` order), as it is
        when its input has its width (`arch_blocks` adds `residual` where the input width differs)."""
        variables = self.layers[layer].variables
        if len(choice) != len(variables):
            raise ValueError(f"layer {layer}: expected {len(variables)} choice indices ({', '.join(VARIABLES)}), "
                             f"got {len(choice)}")
        for v, i in zip(variables, choice, strict=True):
            if not 0 <= i < len(v.choices):
                raise ValueError(f"layer {layer}: {v.name} index {i} is not in 0..{len(v.choices) - 1}")
        value = {v.name: v.choices[i] for v, i in zip(variables, choice, strict=True)}
        stride = self.layers[layer].stride
        if value["block"] == "skip":  # identity, or the zoo's 1x1 conv skip when the width changes
            return {"type": "skip", "out_chs": value["width"], "stride": stride}
        attention, splits = _attention_fields(value["attention"])
        return {"type": "ir", "out_chs": value["width"], "kernel_size": int(value["block"][1:]), "stride": stride,
                "expansion": value["expansion"], "attention": attention, "splits": splits, "act": value["act"]}

    def with_residual(self, layer: int, block: dict) -> dict:
        """`block` (a dict of `block`) with `residual: 'pad'` when the layer keeps its identity path across width
        changes: the form that holds after any input width (the supernet's candidate)."""
        if self.layers[layer].residual and block["type"] in self.pad_residual:
            return {**block, "residual": "pad"}
        return block

    def placed(self, layer: int, block: dict, in_chs: int) -> dict:
        """`block` (a dict of `block`) as layer `layer` runs it after an input `in_chs` wide, canonical: `residual`
        only where the widths differ, so only where it changes the computation."""
        return canonical_block(in_chs, self.with_residual(layer, block))

    def arch_blocks(self, choices: Sequence[Sequence[int]]) -> list[dict]:
        """The zoo block dicts of a point (one tuple of choice indices per layer)."""
        if len(choices) != len(self.layers):
            raise ValueError(f"choices: expected {len(self.layers)} layers of {self.name}, got {len(choices)}")
        blocks, in_chs = [], self.stem_chs
        for i, c in enumerate(choices):
            blocks.append(self.placed(i, self.block(i, c), in_chs))
            in_chs = blocks[-1]["out_chs"]
        return blocks

    def locate(self, blocks: Sequence[dict]) -> list[tuple[int, ...]]:
        """The choice indices of a network given as block dicts (the inverse of `arch_blocks`).

        A skip block does not use kernel, act, attention or expansion: those get index 0. Raises ValueError naming
        the layer and the value when the network is not a point of the space.
        """
        if len(blocks) != len(self.layers):
            raise ValueError(f"blocks: expected {len(self.layers)} blocks (one per layer of {self.name}), "
                             f"got {len(blocks)}")
        out, in_chs = [], self.stem_chs
        for i, (layer, b) in enumerate(zip(self.layers, blocks, strict=True)):
            if b.get("type") == "skip":
                value = {"block": "skip", "width": b["out_chs"]}
            elif b.get("type") == "ir":
                value = {"block": f"k{b['kernel_size']}", "act": b["act"], "attention": _attention_label(b),
                         "expansion": b["expansion"], "width": b["out_chs"]}
            else:
                raise ValueError(f"blocks[{i}]: type {b.get('type')!r} is not a block of {self.name} (ir or skip)")
            index = []
            for v in layer.variables:
                if v.name not in value:
                    index.append(0)
                elif value[v.name] in v.choices:
                    index.append(v.choices.index(value[v.name]))
                else:
                    raise ValueError(f"blocks[{i}]: {v.name} {value[v.name]!r} is not a choice of layer {i} of "
                                     f"{self.name} (choices: {', '.join(map(str, v.choices))})")
            nearest = self.placed(i, self.block(i, index), in_chs)
            if block_key(nearest) != block_key(b):
                raise ValueError(f"blocks[{i}]: {b} is not a point of layer {i} of {self.name} after width {in_chs} "
                                 f"(nearest: {nearest})")
            out.append(tuple(index))
            in_chs = b["out_chs"]
        return out

    def candidates(self) -> list[list[dict]]:
        """Per layer, the distinct block dicts its choices give (a skip ignores kernel, act, attention, expansion), in
        the form that holds after any input width (`with_residual`; the supernet runs each in its canonical form)."""
        return [[self.with_residual(i, b) for b in own] for i, own in enumerate(self._own_candidates())]

    def _own_candidates(self) -> list[list[dict]]:
        """Per layer, the distinct block dicts of its choices, as `block` gives them (no `residual`)."""
        out = []
        for i, layer in enumerate(self.layers):
            seen: dict[tuple, dict] = {}
            for choice in itertools.product(*(range(len(v.choices)) for v in layer.variables)):
                block = self.block(i, choice)
                seen.setdefault(block_key(block), block)
            out.append(list(seen.values()))
        return out

    def default_choices(self) -> list[tuple[int, ...]]:
        """The middle choice of every variable (index n // 2)."""
        return [tuple(n // 2 for n in sizes) for sizes in self.sizes()]

    def default_blocks(self) -> list[dict]:
        """A middle point of the space (the base spec's blocks before anything is searched)."""
        return self.arch_blocks(self.default_choices())

    # --- the cheapest and the most expensive networks -------------------------------------------

    def smallest_blocks(self, cost: BlockwiseCost | None = None) -> list[dict]:
        """The network of the space with the lowest `cost` (default: the fewest mult-adds)."""
        return self._extreme_blocks(largest=False, cost=cost)

    def largest_blocks(self, cost: BlockwiseCost | None = None) -> list[dict]:
        """The network of the space with the highest `cost` (default: the most mult-adds)."""
        return self._extreme_blocks(largest=True, cost=cost)

    def _extreme_blocks(self, largest: bool, cost: BlockwiseCost | None = None) -> list[dict]:
        """Exact min / max of a blockwise cost by dynamic programming over layers, the state being the width a layer
        ends at: a block's cost depends only on its input width and its own dict, the head's on the last width
        (`residual: 'pad'` adds no mult-adds, but the blocks are placed as `arch_blocks` places them). For
        mult-adds the candidates that cannot be extreme are skipped (`_dominant`); a measured cost tries all."""
        prune = cost is None
        cost = cost or MultAddsCost(spec_from_dict(self.spec_dict(self.default_blocks(), "probe", (0.5,) * 3,
                                                                  (0.5,) * 3, dict(PROBE_METADATA))))
        better = (lambda a, b: a > b) if largest else (lambda a, b: a < b)
        res = -(-self.input_size[1] // self.stem_stride)
        states: dict[int, tuple[float, list[dict]]] = {self.stem_chs: (0.0, [])}  # width -> (cost so far, blocks)
        for i, cands in enumerate(self._own_candidates()):
            cands = _dominant(cands, largest) if prune else cands
            nxt: dict[int, tuple[float, list[dict]]] = {}
            for in_chs, (so_far, path) in states.items():
                for own in cands:
                    block = self.placed(i, own, in_chs)
                    total = so_far + cost.block_cost(in_chs, res, block)
                    w = block["out_chs"]
                    if w not in nxt or better(total, nxt[w][0]):
                        nxt[w] = (total, path + [block])
            states, res = nxt, -(-res // self.layers[i].stride)
        ends = [(cost.cost(path), path) for _, path in states.values()]  # adds the stem and head of each last width
        pick = max if largest else min
        return pick(ends, key=lambda e: e[0])[1]

    # --- the zoo spec -------------------------------------------------------------------------

    def spec_dict(self, blocks: list[dict], name: str, mean, std, metadata: dict) -> dict:
        """The zoo spec of a point given as block dicts (provenance 'searched')."""
        return searched_spec_dict(
            name=name, input_size=self.input_size, num_classes=self.num_classes, mean=mean, std=std,
            stem={"type": "conv_bn_act", "out_chs": self.stem_chs, "kernel_size": 3, "stride": self.stem_stride,
                  "act": HS},
            blocks=blocks,
            head={"type": "conv_head", "out_chs": self.head_chs, "act": HS, "pool": "avg",
                  "pre_logits_chs": self.pre_logits_chs, "drop_rate": 0.2},
            paper=FP_NAS_PAPER, conventions=("weights_only", "total"), metadata=metadata,
            default_notes=f"Found by python -m search.run --algo fp-nas in {self.name}.")

    def describe(self) -> dict:
        """Everything that defines the space, as plain JSON data (part of a checkpoint's identity)."""
        return json.loads(json.dumps(asdict(self)))


def _dominant(cands: list[dict], largest: bool) -> list[dict]:
    """The candidates that can be the cheapest / dearest for their (input, output) widths.

    Mult-adds do not depend on the activation (the counter counts convolutions and matmuls), grow with the kernel
    and, for expansions of at least 1, with the expansion (the middle width grows; e = 1 drops the 1x1 expansion
    conv, which only helps the cheap end): so only the extreme kernel and expansion of each (width, attention)
    remain, and at the cheap end only no attention. Expansions below 1 can be cheaper than e = 1 (that conv comes
    back), so then all stay.
    """
    irs = [b for b in cands if b["type"] == "ir"]
    if any(b["expansion"] < 1 for b in irs):
        return cands
    pick = max if largest else min
    extreme: dict[tuple, dict] = {}
    for b in irs:  # the space is a product, so the extreme (kernel, expansion) pair exists for every key
        key = (b["out_chs"], b["attention"], b["splits"])
        extreme[key] = pick(extreme.get(key, b), b, key=lambda x: (x["kernel_size"], x["expansion"]))
    if not largest and any(b["attention"] == "none" for b in irs):
        # attention only adds convolutions (SE's two, split attention's r-fold depthwise conv and two)
        extreme = {k: b for k, b in extreme.items() if b["attention"] == "none"}
    return [b for b in cands if b["type"] == "skip"] + list(extreme.values())


def width_divisor(width_mult: float) -> int:
    """The multiple every width of a space rounds to: 8 (mobile-vision's) at width_mult 1 and above, and below it
    the largest power of two not above 8 x width_mult, at least 1. The published widths are multiples of 8, so a
    rounding step stays the same fraction of a layer's width at any width_mult, and the published widths times
    width_mult are kept exactly when 8 x width_mult is a power of two. (A fixed 8 made the demo's x0.75 / x1
    choices at width_mult 0.25 8 / 16 channels, a 2x step, in most layers.)"""
    divisor = 8
    while divisor > 1 and divisor > 8 * width_mult:
        divisor //= 2
    return divisor


def _widths(published: int, multipliers: Sequence[float], width_mult: float, d: int) -> tuple[int, ...]:
    """Width choices of a layer: make_divisible(published x width_mult x m, d) for each multiplier m, moved apart by
    d where rounding makes two equal (so every choice is a distinct width); m = 1 keeps its value unless a narrow
    layer's set has to move up off the minimum of d. With d = `width_divisor(width_mult)` each choice is within 1.5 d
    of published x width_mult x m (tests/test_fbnet_space.py checks it for the spaces and multipliers)."""
    ms = sorted(multipliers)
    values = [make_divisible(published * width_mult * m, d) for m in ms]
    anchor = min(range(len(ms)), key=lambda j: abs(ms[j] - 1.0))
    for j in range(anchor - 1, -1, -1):
        values[j] = min(values[j], values[j + 1] - d)
    for j in range(anchor + 1, len(ms)):
        values[j] = max(values[j], values[j - 1] + d)
    if values[0] < d:  # a narrow layer with m < 1: the whole set moves up rather than lose a choice
        values = [v + d - values[0] for v in values]
    return tuple(values)


def build_space(name: str, input_size: tuple[int, int, int] | None = None, num_classes: int = 1000, *,
                width_mult: float = 1.0, layers: Sequence[int] | None = None,
                choices: dict[str, tuple] | None = None, divisor: int | None = None) -> FbnetSpace:
    """One of the FP-NAS spaces (`SPACES`), optionally reduced.

    Per layer the variables are block (k3, k5, and skip at stride-1 layers), act (relu, hard_swish), attention
    (none/se in fbnetv2-f; none/sa1/sa2/sa4 in fbnetv2-f++; none/se/sa1/sa2/sa4 in fp-nas-l), expansion (2, 4, 6
    and the published network's value at that layer, 1 where it has a skip) and width (the published width times
    width_mult times each multiplier: 0.75/1/1.25 in the F spaces, 1/1.25/1.5 in fp-nas-l, rounded to multiples of
    `width_divisor(width_mult)`: 8 at width_mult 1). Layers where the published network has an identity residual
    keep it across width changes (`Layer.residual`, `FbnetSpace.pad_residual`, the module docstring).

    `input_size` None takes the space's default (224 px; 256 for fp-nas-l); inputs of 64 px or less get CIFAR
    strides (stem and first stride-2 layer at stride 1). `width_mult` scales every width, the stem and the head;
    `layers` keeps those layer indices (every stride-2 layer must stay); `choices` replaces a variable's values in
    every layer, e.g. `{"expansion": (3, 6), "width": (0.75, 1.0)}` (multipliers for width, values for the others);
    `divisor` replaces `width_divisor(width_mult)` as the multiple widths round to (8 gives the spaces as they were
    before the divisor scaled with width_mult, for comparisons).

    A CPU demo on 32-px digits in well under 10 minutes: `build_space("fbnetv2-f++", (3, 32, 32), 10,
    width_mult=0.25, layers=(0, 1, 2, 4, 5, 8, 15, 18), choices={"expansion": (3, 6), "width": (0.75, 1.0)})`:
    8 layers, at most 96 joint choices per layer, 2 or more choices for every variable, a supernet built in ~2 s.
    """
    if name not in _SPACE_DEFS:
        raise ValueError(f"--space {name}: expected one of {', '.join(SPACES)}")
    published, model, multipliers, attentions, default_px = _SPACE_DEFS[name]
    input_size = (3, default_px, default_px) if input_size is None else tuple(input_size)
    if not width_mult > 0:
        raise ValueError(f"width_mult: expected a positive number, got {width_mult}")
    keep = list(range(len(published))) if layers is None else list(layers)
    must = [i for i, row in enumerate(published) if row[1] == 2]
    if (any(not isinstance(i, int) or not 0 <= i < len(published) for i in keep) or len(set(keep)) != len(keep)
            or not keep):
        raise ValueError(f"layers: expected distinct layer indices in 0..{len(published) - 1} of {name}, got {keep}")
    if missing := [i for i in must if i not in keep]:
        raise ValueError(f"layers: every stride-2 layer of {name} ({', '.join(map(str, must))}) must stay; "
                         f"missing {', '.join(map(str, missing))}")
    overrides = _check_overrides(choices or {})
    small = input_size[1] <= 64

    divisor = width_divisor(width_mult) if divisor is None else divisor
    if not (isinstance(divisor, int) and divisor >= 1):
        raise ValueError(f"divisor: expected a positive integer, got {divisor}")

    def scale(c: int) -> int:  # the stem and head, rounded as the layers' widths (the stem is layer 0's input)
        return make_divisible(c * width_mult, divisor)

    out_layers, first_s2, in_width = [], True, STEM_CHS
    for i in sorted(keep):
        width, stride, block, act, attention, expansion = published[i]
        where = f"{model} layer {i}"
        if small and stride == 2 and first_s2:
            stride = 1  # CIFAR-style: the first stride-2 layer keeps the resolution (as FPNAS's space does)
        first_s2 = first_s2 and published[i][1] != 2
        residual, in_width = stride == 1 and width == in_width, width  # the published network's identity residual
        blocks = tuple(b for b in overrides.get("block", BLOCKS) if stride == 1 or b != "skip")
        if not blocks:
            raise ValueError(f"choices['block']: layer {i} of {name} has stride 2 and needs k3 or k5, not only skip")
        exp_values = overrides.get("expansion") or tuple(sorted(set(EXPANSION_GRID) | {1 if expansion is None
                                                                                           else expansion}))
        mults = overrides.get("width", multipliers)
        variables = (
            Variable("block", blocks, "[paper] kernel size searched; [code: mobile-vision fbnet_v2] ir_k3 / ir_k5 "
                     "and skip (a 1x1 conv where the width changes); [inferred] skip only at stride-1 layers"
                     + ("; [override] choices" if "block" in overrides else "")),
            Variable("act", overrides.get("act", ACTS), "[paper] nonlinearity searched; [code: mobile-vision "
                     "fbnet_v2] relu or h-swish (_hs)" + ("; [override] choices" if "act" in overrides else "")),
            Variable("attention", overrides.get("attention", attentions), _ATTENTION_SOURCE[name]
                     + ("; [override] choices" if "attention" in overrides else "")),
            Variable("expansion", exp_values, "[override] choices" if "expansion" in overrides else
                     f"[inferred] grid {EXPANSION_GRID} plus [code: mobile-vision {where}] "
                     + (f"e{expansion:g}" if expansion is not None else "1 (it has a skip here)")),
            Variable("width", _widths(width, mults, width_mult, divisor),
                     f"[inferred] make_divisible({width} x {width_mult:g} x m, {divisor}), m in {tuple(mults)}"
                     f"{' [override]' if 'width' in overrides else ''}, published width {width} "
                     f"[code: mobile-vision {where}]"),
        )
        out_layers.append(Layer(stride, variables, residual))
    return FbnetSpace(name=name, layers=tuple(out_layers), stem_chs=scale(STEM_CHS), stem_stride=1 if small else 2,
                      head_chs=scale(HEAD_CHS), pre_logits_chs=scale(PRE_LOGITS_CHS), input_size=input_size,
                      num_classes=num_classes)


def _check_overrides(choices: dict[str, tuple]) -> dict[str, tuple]:
    """The `choices` overrides, checked: known variables, non-empty, distinct, valid values."""
    allowed = {"block": BLOCKS, "act": ACTS, "attention": ATTENTIONS}
    out = {}
    for key, values in choices.items():
        if key not in VARIABLES:
            raise ValueError(f"choices: unknown variable {key!r}; expected some of {', '.join(VARIABLES)}")
        values = tuple(values)
        if not values or len(set(values)) != len(values):
            raise ValueError(f"choices[{key!r}]: expected distinct values, got {values}")
        if key in allowed and (bad := [v for v in values if v not in allowed[key]]):
            raise ValueError(f"choices[{key!r}]: {bad[0]!r} is not one of {', '.join(allowed[key])}")
        if key == "expansion" and any(not isinstance(v, (int, float)) or not 0.5 <= v <= 12 for v in values):
            raise ValueError(f"choices['expansion']: expected numbers in [0.5, 12], got {values}")
        if key == "width" and any(not isinstance(v, (int, float)) or not v > 0 for v in values):
            raise ValueError(f"choices['width']: expected positive width multipliers, got {values}")
        out[key] = values
    return out

