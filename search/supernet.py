"""One weight-sharing supernet for every search space, running the zoo's own modules.

An architecture is a list of the zoo's spec block dicts (what `fpnas_zoo.block_types.BLOCK_TYPES` validates), one per
position; `Supernet(base, candidates)` takes the stem and head from a base `ModelSpec` and, per position, the
candidate block dicts. Each position keeps one shared tensor per tensor name of its candidates, at the largest
shape any candidate needs. A candidate runs as the zoo's own module (built once per distinct input width and
block dict, on the meta device, so it holds no memory) through `torch.func.functional_call`, with views of the
shared tensors as its parameters and buffers. The supernet therefore computes exactly what `FpnasZooNet` built
from the architecture's spec computes, and BatchNorm running statistics update in place through the views.

Which part of a shared tensor a candidate uses is decided in one place, `_storage_name` and `_window`:
leading channels for widths and expansions, the centre of the kernel for smaller kernels, and the right half of
the channels for the branch of an FPNAS split block (the half it sees in the built network). The depthwise filters
of an MBConv are one tensor of shape (channels, splits, k, k) for every attention choice: no attention and SE use
split 0, split attention with r splits uses splits 0..r-1 (laid out as the zoo's `SplitAttnDw` wants them, channel
c's r filters at c * r + j, by a reshape), so every attention choice of a layer computes with the same filters.
Sharing them matters: with separate filters per attention choice, architectures that mix the choices layer by layer
barely train (bench/results/2026-11-24-fp-nas-mixing.md). The rest of split attention (its BN over r maps, its two 1x1
convs) stays per r.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from fpnas_zoo.block_types import BLOCK_TYPES
from fpnas_zoo.model import FpnasZooNet, stage_plan
from fpnas_zoo.schema import block_key, canonical_block
from fpnas_zoo.spec import ModelSpec, spec_from_dict

Arch = list[dict]

# The layout of the supernet's tensors (their names, shapes and which candidate uses which part). A search checkpoint
# records it and one of another layout is refused: bump it whenever a change here moves what a saved tensor means.
# 2: one depthwise filter tensor shared by every attention choice (1 kept separate filters per split count).
LAYOUT_VERSION = 2


# ---------------------------------------------------------------------------------------------
# The slicing rules: where a candidate's tensor lives in the shared tensors of its position.


def _splits(block: dict | None, key: str) -> int | None:
    """r when `key` is the depthwise filters of a split-attention MBConv with r splits (stored as (C, r, k, k))."""
    if block is not None and block["type"] == "ir" and block["attention"] == "split_attention" \
            and key == "conv_dw.conv.weight":
        return block["splits"]
    return None


def _storage_name(block: dict | None, key: str) -> str:
    """The shared tensor that a zoo module's tensor `key` uses."""
    if _splits(block, key) is not None:
        return "conv_dw.weight"  # the depthwise filters every attention choice shares
    if block is not None and block["type"] == "ir" and block["attention"] == "split_attention" \
            and key.startswith("conv_dw."):
        # the rest of SplitAttnDw: r maps per channel, interleaved (c * r + j), so each r keeps its own
        return f"conv_dw_splits{block['splits']}" + key[len("conv_dw"):]
    return key


def _stored_shape(block: dict | None, key: str, shape: torch.Size) -> torch.Size:
    """The shape of a module's tensor inside the shared one: (C * r, 1, k, k) split filters sit as (C, r, k, k)."""
    r = _splits(block, key)
    return shape if r is None else torch.Size((shape[0] // r, r, *shape[2:]))


def _channel_offsets(block: dict | None, in_chs: int, key: str, ndim: int) -> tuple[int, ...]:
    """Where the candidate's tensor starts along each dimension of the shared one (before kernel centring)."""
    if block is not None and block["type"] == "fpnas" and block["split"] and not key.startswith("split_branch."):
        s = in_chs // 2  # the branch reads and writes the right half of the channels, as in the built network
        if key.startswith("conv_pw."):
            return (0, s, 0, 0)
        if key.startswith("conv_pwl."):
            return (s, 0, 0, 0)
        if key == "shortcut.conv.weight":
            return (s, s, 0, 0)
        if key.startswith(("bn3.", "shortcut.bn.")) and ndim == 1:
            return (s,)
    return (0,) * ndim


def _window(offsets: tuple[int, ...], shape: torch.Size, shared_shape: torch.Size) -> tuple[slice, ...]:
    """The index of the candidate's tensor in the shared one: from `offsets` on, and the centre of conv kernels."""
    index = []
    for dim, (offset, size, full) in enumerate(zip(offsets, shape, shared_shape, strict=True)):
        if len(shape) == 4 and dim >= 2:  # kxk inside the largest kernel: its centre
            offset = (full - size) // 2
        index.append(slice(offset, offset + size))
    return tuple(index)


# ---------------------------------------------------------------------------------------------
# Shared storage and the zoo modules that run over it.


@dataclass(frozen=True)
class _Slot:
    key: str  # the tensor's name in the zoo module
    owner: nn.Module  # the storage module holding the shared tensor (looked up at call time: .to() swaps buffers)
    name: str
    index: tuple[slice, ...]
    shape: torch.Size | None = None  # the module's shape when the window has another (split filters)


class _Bound:
    """A zoo module on the meta device and, for each of its tensors, the view of shared storage it runs with."""

    def __init__(self, module: nn.Module, slots: list[_Slot], bn_pairs: list[tuple[_BatchNorm, _BatchNorm]]):
        self.module, self.slots, self.bn_pairs = module, slots, bn_pairs

    def windows(self) -> dict[str, torch.Tensor]:
        """The module's tensors as views of the shared ones, in the shared layout."""
        return {s.key: getattr(s.owner, s.name)[s.index] for s in self.slots}

    def views(self) -> dict[str, torch.Tensor]:
        """The module's tensors in its own shapes (a reshape, not a view, for split filters; gradients flow)."""
        shapes = {s.key: s.shape for s in self.slots if s.shape is not None}
        return {k: v.reshape(shapes[k]) if k in shapes else v for k, v in self.windows().items()}

    def __call__(self, training: bool, *args) -> torch.Tensor:
        if self.module.training != training:
            self.module.train(training)
        for template, shared in self.bn_pairs:  # BN recalibration sets momentum on the shared BN module
            template.momentum = shared.momentum
        return functional_call(self.module, self.views(), args)


def _init_shared(tensor: torch.Tensor, owner_type: type) -> None:
    """The zoo's initialisation (`FpnasZooNet._init_weights`) on a shared tensor, at its largest shape."""
    if tensor.ndim > 1 and issubclass(owner_type, nn.Conv2d):
        nn.init.kaiming_normal_(tensor, mode="fan_out", nonlinearity="relu")
    elif tensor.ndim > 1 and issubclass(owner_type, nn.Linear):
        nn.init.normal_(tensor, 0, 0.01)
    else:
        nn.init.zeros_(tensor)  # biases


class _Store(nn.Module):
    """The shared tensors of one position (or of the stem and head), nested under the zoo's module names.

    BatchNorm tensors live in real `nn.BatchNorm2d` modules, so BN recalibration (which looks for BN modules)
    resets and re-estimates them like any network's.
    """

    def bind(self, templates: dict[Hashable, tuple[nn.Module, dict | None, int]], strip: str = ""
             ) -> dict[Hashable, _Bound]:
        """Create the shared tensors that `templates` (id -> (zoo module, its block dict, its input width)) need,
        each at the largest extent any of them uses, and bind every template to its views of them.

        `strip` is a prefix of the modules' tensor names that the storage leaves out.
        """
        need: dict[str, list[int]] = {}
        kinds: dict[str, type] = {}
        placed: dict[Hashable, list[tuple[str, str, tuple[int, ...], torch.Size]]] = {}
        for tid, (module, block, in_chs) in templates.items():
            placed[tid] = []
            for key, tensor in module.state_dict(keep_vars=True).items():
                name = _storage_name(block, key).removeprefix(strip)
                offsets = _channel_offsets(block, in_chs, key, tensor.ndim)
                stored = _stored_shape(block, key, tensor.shape)
                extent = [o + n for o, n in zip(offsets, stored, strict=True)]
                if name in need and len(need[name]) != len(extent):
                    raise ValueError(f"shared tensor {name}: candidates disagree on its number of dimensions")
                need[name] = [max(a, b) for a, b in zip(need.get(name, extent), extent, strict=True)]
                kinds[name] = type(module.get_submodule(key.rpartition(".")[0]))
                placed[tid].append((key, name, offsets, tensor.shape, stored))
        for name, shape in need.items():
            path, _, attr = name.rpartition(".")
            if issubclass(kinds[name], _BatchNorm):
                if not _has_module(self, path):
                    _add_module(self, path, nn.BatchNorm2d(need[path + ".running_mean"][0]))
                continue
            tensor = torch.empty(shape)
            _init_shared(tensor, kinds[name])
            _container(self, path).register_parameter(attr, nn.Parameter(tensor))
        bound = {}
        for tid, (module, _, _) in templates.items():
            slots = []
            for key, name, offsets, shape, stored in placed[tid]:
                path, _, attr = name.rpartition(".")
                owner = self.get_submodule(path)
                slots.append(_Slot(key, owner, attr, _window(offsets, stored, getattr(owner, attr).shape),
                                   None if stored == shape else shape))
            shared_bn = {key.rpartition(".")[0]: name.rpartition(".")[0] for key, name, *_ in placed[tid]}
            bn_pairs = [(m, self.get_submodule(shared_bn[path]))
                        for path, m in module.named_modules() if isinstance(m, _BatchNorm)]
            bound[tid] = _Bound(module, slots, bn_pairs)
        return bound


def _has_module(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


def _container(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split(".") if path else []:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    return module


def _add_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    _container(root, parent).add_module(name, module)


class _Ends(nn.Module):
    """The zoo model's stem and head around a function that runs the blocks (as `FpnasZooNet.forward`)."""

    def __init__(self, zoo: FpnasZooNet):
        super().__init__()
        zoo.blocks = nn.Sequential()  # the positions run the blocks
        self.zoo = zoo

    def forward(self, x: torch.Tensor, run_blocks: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        zoo = self.zoo
        x = run_blocks(zoo.bn1(zoo.conv_stem(x)))
        return zoo.forward_head(zoo.bn2(zoo.conv_head(x)))


# ---------------------------------------------------------------------------------------------
# The supernet.


class Supernet(nn.Module):
    """All architectures of a search space, sharing weights; `forward(x, arch)` runs one of them.

    `base` gives the stem, head, input size and classes (its blocks are not used); `candidates[i]` lists the
    block dicts position i may take (one for a fixed position). Candidates of a position share their stride.
    A candidate runs after every input width the previous position gives, as its canonical form there
    (`fpnas_zoo.schema.canonical_block`: `residual: 'pad'` is dropped where the widths match), and an arch may
    spell a block either way.
    """

    def __init__(self, base: ModelSpec, candidates: list[list[dict]]):
        super().__init__()
        if not candidates or any(not c for c in candidates):
            raise ValueError("candidates: expected a non-empty list of candidates for every position")
        self.base = base
        self.candidates = [[dict(b) for b in c] for c in candidates]
        for i, cands in enumerate(self.candidates):
            if len({b["stride"] for b in cands}) > 1:
                raise ValueError(f"candidates[{i}]: expected one stride for all candidates of a position")
        # Zoo module prefixes of the positions: stages split at stride-2 blocks, the same for every arch.
        first = self.spec_of([c[0] for c in self.candidates])
        self.prefixes = [f"blocks.{s}.{j}" for s, ids in enumerate(stage_plan(first)) for j in range(len(ids))]

        self.positions = nn.ModuleList()
        self._bound: list[dict[tuple[int, tuple], _Bound]] = []
        in_widths = {base.stem["out_chs"]}
        for cands in self.candidates:
            templates = {}
            with torch.device("meta"):
                for in_chs in sorted(in_widths):
                    for block in cands:
                        block = canonical_block(in_chs, block)
                        block_type = BLOCK_TYPES[block["type"]]
                        if block_type.check_channels(in_chs, block) or (in_chs, block_key(block)) in templates:
                            continue  # impossible after this input width (forward refuses it), or built
                        module = block_type.build(in_chs, block, stride=block["stride"], dilation=1,
                                                  norm_layer=nn.BatchNorm2d, drop_path_rate=0.0)
                        templates[in_chs, block_key(block)] = (module, block, in_chs)
            store = _Store()
            self._bound.append(store.bind(templates))
            self.positions.append(store)
            in_widths = {b["out_chs"] for b in cands}

        # Stem and head, once per width of the last position (the head's 1x1 conv reads it).
        ends = {}
        with torch.device("meta"):
            for width in sorted(in_widths):
                spec = self.spec_of([{"type": "skip", "out_chs": width, "stride": 1}])
                ends[width] = (_Ends(FpnasZooNet(spec)), None, base.stem["out_chs"])
        self.ends = _Store()
        self._ends = self.ends.bind(ends, strip="zoo.")

    # --- architectures -----------------------------------------------------------------------

    def spec_of(self, arch: Arch, **fields) -> ModelSpec:
        """The zoo spec of an architecture (the base spec's other fields, overridden by `fields`)."""
        return spec_from_dict({**self.base.to_dict(), **fields, "blocks": [dict(b) for b in arch]})

    def _path(self, arch: Arch) -> list[_Bound]:
        """The bound zoo module of every position, after checking the arch is one of the space."""
        if len(arch) != len(self.positions):
            raise ValueError(f"arch: expected {len(self.positions)} blocks, got {len(arch)}")
        path, in_chs = [], self.base.stem["out_chs"]
        for i, block in enumerate(arch):
            bound = self._bound[i].get((in_chs, block_key(canonical_block(in_chs, block))))
            if bound is None:
                raise ValueError(f"arch[{i}]: {block} is not a candidate of position {i} after width {in_chs}")
            path.append(bound)
            in_chs = block["out_chs"]
        return path

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        path, training = self._path(arch), self.training

        def run_blocks(h: torch.Tensor) -> torch.Tensor:
            for bound in path:
                h = bound(training, h)
            return h

        return self._ends[arch[-1]["out_chs"]](training, x, run_blocks)

    def bind(self, arch: Arch) -> nn.Module:
        """A module whose `forward(x)` runs `arch` (for code that calls `model(x)`, e.g. BN recalibration)."""
        return FixedArch(self, arch)

    # --- weights ---------------------------------------------------------------------------

    def views(self, arch: Arch, windows: bool = False) -> dict[str, torch.Tensor]:
        """The shared tensors an architecture uses, under the keys of `FpnasZooNet(spec_of(arch))`: in the model's
        shapes, or with `windows` as views in the shared layout (what writes go through)."""
        path = self._path(arch)
        get = (lambda bound: bound.windows()) if windows else (lambda bound: bound.views())  # noqa: E731
        out = {k.removeprefix("zoo."): v for k, v in get(self._ends[arch[-1]["out_chs"]]).items()}
        for prefix, bound in zip(self.prefixes, path, strict=True):
            out |= {f"{prefix}.{k}": v for k, v in get(bound).items()}
        return out

    def export(self, arch: Arch) -> dict[str, torch.Tensor]:
        """A state_dict that loads strictly into `FpnasZooNet(self.spec_of(arch))` (copies, not views)."""
        return {k: v.detach().clone() for k, v in self.views(arch).items()}

    @torch.no_grad()
    def import_(self, arch: Arch, state: dict[str, torch.Tensor]) -> None:
        """Write a zoo model's weights (a state_dict of `arch`) back into the shared tensors."""
        windows = self.views(arch, windows=True)
        missing, unexpected = windows.keys() - state.keys(), state.keys() - windows.keys()
        if missing or unexpected:
            raise KeyError(f"import_: state_dict does not match the arch (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
        for key, window in windows.items():
            window.copy_(state[key].reshape(window.shape))


class FixedArch(nn.Module):
    """The supernet running one architecture: `forward(x)`. It holds no weights of its own."""

    def __init__(self, supernet: Supernet, arch: Arch):
        super().__init__()
        self.supernet, self.arch = supernet, [dict(b) for b in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.arch)
