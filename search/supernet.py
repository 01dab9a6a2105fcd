"""The FPNAS supernet: every block position holds the largest candidate's weights; a candidate uses a slice.

Slicing (as Once-for-All): the MBConv mid width takes the first `h` channels, a 3x3 kernel is the centre of
the 5x5, and a split block's branch uses the input and output channels of the right half, the ones it sees
in the built network. `export(arch)` hands the active weights to the zoo's own network (same keys as
`FpnasZooNet` built from the spec), and `import_(arch, state_dict)` writes trained weights back.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_conv2d

from fpnas_zoo.blocks import DepthwiseSeparable, channel_shuffle
from fpnas_zoo.model import stage_plan
from fpnas_zoo.spec import ModelSpec

from .space import Choice, FpnasSpace


class SlicedBN(nn.BatchNorm2d):
    """BatchNorm over the first (or a given range of) channels of a wider BN."""

    def forward_slice(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        use_batch_stats = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.momentum is None:  # cumulative average (BN recalibration)
            self.num_batches_tracked += 1
            momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x, self.running_mean[start:stop], self.running_var[start:stop], self.weight[start:stop],
            self.bias[start:stop], use_batch_stats, momentum, self.eps,
        )


def _bn_views(name: str, bn: SlicedBN, start: int, stop: int) -> dict[str, torch.Tensor]:
    return {f"{name}.weight": bn.weight.data[start:stop], f"{name}.bias": bn.bias.data[start:stop],
            f"{name}.running_mean": bn.running_mean[start:stop], f"{name}.running_var": bn.running_var[start:stop],
            f"{name}.num_batches_tracked": bn.num_batches_tracked}


class SuperFpnasBlock(nn.Module):
    """All candidates of one FPNAS block position, sharing weights."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, max_expansion: float, max_kernel: int):
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.max_kernel = max_kernel
        self.split_chs = in_chs // 2
        mid = int(round(in_chs * max_expansion))
        self.pw = nn.Parameter(torch.empty(mid, in_chs, 1, 1))
        self.bn1 = SlicedBN(mid)
        self.dw = nn.Parameter(torch.empty(mid, 1, max_kernel, max_kernel))
        self.bn2 = SlicedBN(mid)
        self.pwl = nn.Parameter(torch.empty(out_chs, mid, 1, 1))
        self.bn3 = SlicedBN(out_chs)
        self.proj = nn.Parameter(torch.empty(out_chs, in_chs, 1, 1))
        self.proj_bn = SlicedBN(out_chs)
        # the stride-2 split branch has one fixed shape: a depthwise-separable conv on the left half
        self.split_branch = DepthwiseSeparable(self.split_chs, self.split_chs, 3, stride=stride) if stride > 1 else None
        for w in (self.pw, self.dw, self.pwl, self.proj):
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")

    def _ranges(self, choice: Choice) -> tuple[int, int]:
        """(start, mid width): the branch reads input channels and writes output channels [start:], a split
        block's right half, and its MBConv is `mid` wide."""
        start = self.split_chs if choice.split else 0
        return start, int(round((self.in_chs - start) * choice.expansion))

    def _needs_proj(self, choice: Choice) -> bool:
        # both branch widths lose the same `start` channels, so they differ exactly when in and out do
        return choice.shortcut and (self.stride > 1 or self.in_chs != self.out_chs)

    def _kernel(self, k: int) -> torch.Tensor:
        off = (self.max_kernel - k) // 2
        return self.dw[:, :, off:off + k, off:off + k]

    def forward(self, x: torch.Tensor, choice: Choice) -> torch.Tensor:
        start, mid = self._ranges(choice)
        inp = x[:, start:]
        k = choice.kernel_size
        out = F.relu(self.bn1.forward_slice(F.conv2d(inp, self.pw[:mid, start:]), 0, mid))
        out = F.conv2d(out, self._kernel(k)[:mid], stride=self.stride, padding=k // 2, groups=mid)
        out = F.relu(self.bn2.forward_slice(out, 0, mid))
        out = self.bn3.forward_slice(F.conv2d(out, self.pwl[start:, :mid]), start, self.out_chs)
        if choice.shortcut:
            if self._needs_proj(choice):
                proj = F.conv2d(inp, self.proj[start:, start:], stride=self.stride)
                out = out + self.proj_bn.forward_slice(proj, start, self.out_chs)
            else:
                out = out + inp
        if not choice.split:
            return out
        left = x[:, :start] if self.split_branch is None else self.split_branch(x[:, :start])
        return channel_shuffle(torch.cat([left, out], dim=1), 2)

    def export(self, choice: Choice) -> dict[str, torch.Tensor]:
        """The candidate's weights, copied, under the zoo `FpnasBlock`'s keys."""
        return {key: v.clone() for key, v in self.weight_views(choice).items()}

    @torch.no_grad()
    def import_(self, choice: Choice, state: dict[str, torch.Tensor]) -> None:
        """Write a candidate's (trained) weights back into the shared slices."""
        for key, view in self.weight_views(choice).items():
            view.copy_(state[key])

    def weight_views(self, choice: Choice) -> dict[str, torch.Tensor]:
        """Views into the shared tensors that a candidate uses, under the zoo `FpnasBlock`'s keys."""
        start, mid = self._ranges(choice)
        views = {"conv_pw.weight": self.pw.data[:mid, start:],
                 "conv_dw.weight": self._kernel(choice.kernel_size).data[:mid],
                 "conv_pwl.weight": self.pwl.data[start:, :mid]}
        views |= _bn_views("bn1", self.bn1, 0, mid) | _bn_views("bn2", self.bn2, 0, mid)
        views |= _bn_views("bn3", self.bn3, start, self.out_chs)
        if self._needs_proj(choice):
            views["shortcut.conv.weight"] = self.proj.data[start:, start:]
            views |= _bn_views("shortcut.bn", self.proj_bn, start, self.out_chs)
        if choice.split and self.split_branch is not None:
            views |= {f"split_branch.{key}": v for key, v in self.split_branch.state_dict().items()}
        return views


class FpnasSupernet(nn.Module):
    """Stem, block1, the super blocks and the head; `arch` says which candidate each position runs."""

    def __init__(self, space: FpnasSpace, arch: list[Choice] | None = None):
        super().__init__()
        self.space = space
        self.arch = list(arch or space.default_arch())
        self.conv_stem = create_conv2d(space.input_size[0], space.stem_chs, 3, stride=space.stem_stride)
        self.bn1 = nn.BatchNorm2d(space.stem_chs)
        self.block1 = DepthwiseSeparable(space.stem_chs, space.ds_chs, 3)
        self.blocks = nn.ModuleList(
            SuperFpnasBlock(space.in_chs(i), space.widths[i], space.strides[i], max(space.expansions),
                            max(space.kernels))
            for i in range(space.num_blocks)
        )
        self.conv_head = create_conv2d(space.widths[-1], space.head_chs, 1)
        self.bn2 = nn.BatchNorm2d(space.head_chs)
        self.classifier = nn.Linear(space.head_chs, space.num_classes)
        nn.init.kaiming_normal_(self.conv_stem.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv_head.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(F.relu(self.bn1(self.conv_stem(x))))
        for block, choice in zip(self.blocks, self.arch, strict=True):
            x = block(x, choice)
        x = F.relu(self.bn2(self.conv_head(x)))
        x = F.dropout(x.mean((2, 3)), p=0.2, training=self.training)
        return self.classifier(x)

    def _prefixes(self, spec: ModelSpec) -> list[str]:
        """Zoo module names of block1 and the searched blocks, in order."""
        return [f"blocks.{s}.{j}" for s, ids in enumerate(stage_plan(spec)) for j in range(len(ids))]

    def export(self, spec: ModelSpec) -> dict[str, torch.Tensor]:
        """A state_dict for `FpnasZooNet(spec)`, where `spec` is `space.to_spec_dict(self.arch, ...)`."""
        prefixes = self._prefixes(spec)
        state = {f"conv_stem.{k}": v for k, v in self.conv_stem.state_dict().items()}
        state |= {f"bn1.{k}": v for k, v in self.bn1.state_dict().items()}
        state |= {f"{prefixes[0]}.{k}": v for k, v in self.block1.state_dict().items()}
        for prefix, block, choice in zip(prefixes[1:], self.blocks, self.arch, strict=True):
            state |= {f"{prefix}.{k}": v for k, v in block.export(choice).items()}
        state |= {f"conv_head.{k}": v for k, v in self.conv_head.state_dict().items()}
        state |= {f"bn2.{k}": v for k, v in self.bn2.state_dict().items()}
        state |= {f"classifier.{k}": v for k, v in self.classifier.state_dict().items()}
        return {k: v.detach().clone() for k, v in state.items()}

    @torch.no_grad()
    def import_(self, spec: ModelSpec, state: dict[str, torch.Tensor]) -> None:
        """Write a zoo model's weights (of `self.arch`) back into the supernet."""
        prefixes = self._prefixes(spec)
        plain = {"conv_stem": self.conv_stem, "bn1": self.bn1, prefixes[0]: self.block1, "conv_head": self.conv_head,
                 "bn2": self.bn2, "classifier": self.classifier}
        for prefix, module in plain.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
        for prefix, block, choice in zip(prefixes[1:], self.blocks, self.arch, strict=True):
            block.import_(choice, {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
