"""Block modules: the FPNAS, FBNetV2 and depthwise-separable blocks of the zoo.

The modules know nothing of the spec schema: `block_types.py` joins each JSON block type (declared in
`schema.py`) to the module that builds it. Blocks take uniform keyword arguments (`stride`, `dilation`,
`act_layer`, `norm_layer`, `drop_path_rate`) as timm's do, and timm's factory `device` / `dtype`, with which every
parameter and buffer is created (not created on the CPU, then moved).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    BatchNormAct2d,
    DropPath,
    FrozenBatchNormAct2d,
    SEModule,
    SyncBatchNormAct,
    create_conv2d,
    get_norm_act_layer,
    make_divisible,
)
from torchvision.ops.misc import FrozenBatchNorm2d

LayerType = type[nn.Module] | Callable[..., nn.Module]
RESIDUALS = (None, "pad")  # how a stride-1 block's identity path meets a width change (see PadOrTruncate)


def norm_act_layer_for(norm_layer: LayerType | str, act_layer: LayerType) -> Callable[..., nn.Module]:
    """timm's norm+act layer for `norm_layer`, also for torchvision's FrozenBatchNorm2d (detectron2-style
    clients pass it), which timm's own lookup does not map."""
    if norm_layer is FrozenBatchNorm2d or norm_layer == "frozenbatchnorm2d":
        return functools.partial(FrozenBatchNormAct2d, act_layer=act_layer)
    return get_norm_act_layer(norm_layer, act_layer)


class DepthwiseSeparable(nn.Module):
    """dw kxk conv -> BN -> act -> pw 1x1 conv -> BN (no activation, no residual)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 act_layer: LayerType = nn.ReLU, norm_layer: LayerType = nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        norm_act = norm_act_layer_for(norm_layer, act_layer)
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation, depthwise=True,
                                     **dd)
        self.bn1 = norm_act(in_chs, inplace=True, **dd)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1, **dd)
        self.bn2 = norm_act(out_chs, apply_act=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))


class StridedPointwiseConv(nn.Conv2d):
    """A 1x1 conv with a stride (a shortcut or skip that halves the resolution), safe to train channels-last on a CPU.

    oneDNN's channels-last backward kernel for strided 1x1 convs corrupts the heap (SIGSEGV, `free(): invalid next
    size`) for narrow inputs: 8 or 12 channels at 56 px and above, batch 2 and up (torch 2.14, an Intel Xeon);
    `fpnasnet*` at 224 px feed it 12. While autograd records (`torch.is_grad_enabled()`), the conv therefore runs at
    stride 1 over the input subsampled by its stride, which is the same computation for a 1x1 kernel without padding
    (outputs and gradients equal) and never reaches that kernel. Without autograd (inference, `torch.no_grad()`
    exports) it is the plain strided conv. Parameters and state_dict keys are nn.Conv2d's."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, bias: bool = False, device=None, dtype=None):
        super().__init__(in_chs, out_chs, 1, stride=stride, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return F.conv2d(x[:, :, :: self.stride[0], :: self.stride[1]], self.weight, self.bias, 1, 0, 1, self.groups)
        return self._conv_forward(x, self.weight, self.bias)


def pointwise_conv(in_chs: int, out_chs: int, stride: int = 1, device=None, dtype=None) -> nn.Conv2d:
    """A bias-free 1x1 conv: timm's at stride 1, `StridedPointwiseConv` when it has a stride."""
    if stride > 1:
        return StridedPointwiseConv(in_chs, out_chs, stride, device=device, dtype=dtype)
    return create_conv2d(in_chs, out_chs, 1, device=device, dtype=dtype)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: out[g' * G + g] = in[g * C/G + g'] for G groups."""
    return torch.channel_shuffle(x, groups)


class FpnasBlock(nn.Module):
    """The searched FPNAS block: an optional channel split, an MBConv branch, an optional shortcut.

    With `split`, the first `in_chs // 2` channels bypass the MBConv branch (through a depthwise-separable
    conv when the block has stride 2) and the two parts are concatenated and channel-shuffled. The
    shortcut is added around the MBConv branch only: identity when shapes allow, else a 1x1 conv + BN.
    Module structure follows the spec's stride, so a dilated copy (`output_stride`) keeps the same weights.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        spec_stride: int | None = None,
        dilation: int = 1,
        expansion: float = 6.0,
        shortcut: bool = True,
        split: bool = False,
        act_layer: LayerType = nn.ReLU,
        norm_layer: LayerType = nn.BatchNorm2d,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        spec_stride = stride if spec_stride is None else spec_stride
        norm_act_layer = norm_act_layer_for(norm_layer, act_layer)
        self.split_chs = in_chs // 2 if split else 0
        branch_in = in_chs - self.split_chs
        branch_out = out_chs - self.split_chs
        if split and spec_stride > 1:
            self.split_branch = DepthwiseSeparable(
                self.split_chs, self.split_chs, 3, stride=stride, dilation=dilation, act_layer=act_layer,
                norm_layer=norm_layer, **dd,
            )
        else:
            self.split_branch = nn.Identity()

        mid_chs = int(round(branch_in * expansion))
        self.conv_pw = create_conv2d(branch_in, mid_chs, 1, **dd)
        self.bn1 = norm_act_layer(mid_chs, inplace=True, **dd)
        self.conv_dw = create_conv2d(mid_chs, mid_chs, kernel_size, stride=stride, dilation=dilation, depthwise=True,
                                     **dd)
        self.bn2 = norm_act_layer(mid_chs, inplace=True, **dd)
        self.conv_pwl = create_conv2d(mid_chs, branch_out, 1, **dd)
        self.bn3 = norm_act_layer(branch_out, apply_act=False, **dd)

        self.has_shortcut = shortcut
        if shortcut and (spec_stride > 1 or branch_in != branch_out):
            conv = pointwise_conv(branch_in, branch_out, stride=stride, **dd)
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", conv)
            self.shortcut.add_module("bn", norm_act_layer(branch_out, apply_act=False, **dd))
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if shortcut and drop_path_rate > 0 else nn.Identity()

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.bn2(self.conv_dw(out))
        out = self.bn3(self.conv_pwl(out))
        if self.has_shortcut:
            out = self.drop_path(out) + self.shortcut(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_chs == 0:
            return self._branch(x)
        left = self.split_branch(x[:, : self.split_chs])
        right = self._branch(x[:, self.split_chs :])
        if self.conv_pwl.out_channels == self.split_chs:  # equal halves (static, so fx and TorchScript trace it)
            # the same interleaving as channel_shuffle(cat(...), 2), in one copy instead of two (cat, then
            # shuffle): exported, a Concat on a new axis and a free Reshape in place of Concat + Transpose
            return torch.stack([left, right], dim=2).flatten(1, 2)
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class SplitAttnDw(nn.Module):
    """Depthwise kxk conv with `radix` filters per channel, fused back to `chs` channels by split attention.

    The conv gives r maps per channel (the r splits); their sum is pooled, passed through
    fc1 -> BN -> ReLU -> fc2, and a softmax across the splits (a sigmoid when r = 1, SE-like gating)
    weighs the splits before they are summed. Reduction width: `make_divisible(chs * rd_ratio, 8)`.

    In training (and with a norm layer that has no running statistics) the block runs the grouped conv with r
    filters per channel and 5-D tensors (B, C, r, H, W), so that BatchNorm sees all C * r maps in one call (and a
    SyncBatchNorm its process group). In inference it computes the same function as r depthwise convs with one filter
    per channel, each with its slice of the BatchNorm folded in, and keeps every large tensor 4-D: pooling as
    global average pooling of each split, the weighting as r multiplies and adds. Depthwise convs are what oneDNN and
    ONNX Runtime's channel-blocked (NCHWc) kernels run fast; the grouped conv with r filters per channel and the 5-D
    reductions have no such kernels (1.2-1.9x faster models under ONNX Runtime,
    bench/results/2026-12-05-zoo-blocks.md). Parameters and state_dict keys are the same in both.
    """

    def __init__(self, chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1, radix: int = 2,
                 rd_ratio: float = 0.25, act_layer: LayerType = nn.ReLU, norm_layer: LayerType = nn.BatchNorm2d,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.radix = radix
        rd_chs = make_divisible(chs * rd_ratio, 8, round_limit=0.0)
        self.conv = create_conv2d(chs, chs * radix, kernel_size, stride=stride, dilation=dilation, groups=chs, **dd)
        self.bn0 = norm_act_layer_for(norm_layer, act_layer)(chs * radix, inplace=True, **dd)
        self.fc1 = nn.Conv2d(chs, rd_chs, 1, **dd)
        self.bn1 = norm_act_layer_for(norm_layer, nn.ReLU)(rd_chs, inplace=True, **dd)
        self.fc2 = nn.Conv2d(rd_chs, chs * radix, 1, **dd)
        # BatchNorm on stored statistics (BatchNormAct2d, and the Sync / Frozen copies timm converts it to) can be
        # applied a slice of channels at a time in eval mode; other norm layers take the grouped path
        self.split_in_eval = isinstance(self.bn0, (BatchNormAct2d, SyncBatchNormAct, FrozenBatchNormAct2d)) \
            and self.bn0.running_mean is not None
        # the conv's geometry and the BatchNorm's eps as plain numbers, which TorchScript reads here (not from the
        # submodules)
        self.dw_stride, self.dw_padding = list(self.conv.stride), list(self.conv.padding)
        self.dw_dilation, self.chs, self.bn_eps = list(self.conv.dilation), chs, float(getattr(self.bn0, "eps", 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.split_in_eval:
            return self._forward_grouped(x)
        return self._forward_split(x)

    def _forward_grouped(self, x: torch.Tensor) -> torch.Tensor:
        # grouped conv with groups=chs puts a channel's r filters next to each other: (B, C, r, H, W)
        splits = self.bn0(self.conv(x)).unflatten(1, (-1, self.radix))
        attn = self.fc2(self.bn1(self.fc1(splits.sum(2).mean((2, 3), keepdim=True))))
        attn = attn.unflatten(1, (-1, self.radix))
        attn = attn.softmax(dim=2) if self.radix > 1 else attn.sigmoid()
        return (splits * attn).sum(2)

    def _forward_split(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radix
        # the BatchNorm on stored statistics folded into the filters (a per-filter scale) and a bias, as an exporter
        # or timm's fusion would; split j takes the filters at j, j + r, j + 2r, ... (the conv has no bias)
        scale = self.bn0.weight * torch.rsqrt(self.bn0.running_var + self.bn_eps)
        shift = self.bn0.bias - self.bn0.running_mean * scale
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        maps = []
        for j in range(r):
            y = F.conv2d(x, weight[j::r], shift[j::r], self.dw_stride, self.dw_padding, self.dw_dilation, self.chs)
            maps.append(self.bn0.act(y))
        pooled = F.adaptive_avg_pool2d(maps[0], 1)  # the mean of the sum of the splits, as the sum of their means
        for y in maps[1:]:
            pooled = pooled + F.adaptive_avg_pool2d(y, 1)
        attn = self.fc2(self.bn1(self.fc1(pooled)))
        if r == 1:
            return maps[0] * attn.sigmoid()
        attn = attn.unflatten(1, (-1, r)).softmax(dim=2)  # (B, C, r, 1, 1): small
        out = maps[0] * attn[:, :, 0]
        for j in range(1, r):
            out = out + maps[j] * attn[:, :, j]
        return out


class PadOrTruncate(nn.Module):
    """The identity across a width change, without parameters: x with zero channels appended up to `out_chs`
    (widening), or its first `out_chs` channels (narrowing), as FBNetV2's supernet keeps residuals across widths.

    The widths are fixed at construction, so the branch taken is static (fx, TorchScript and export see one path)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_chs < self.in_chs:
            return x[:, : self.out_chs]
        if self.out_chs > self.in_chs:
            return F.pad(x, (0, 0, 0, 0, 0, self.out_chs - self.in_chs))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}"


class InvertedResidual(nn.Module):
    """FBNetV2's MBConv: [1x1 -> BN -> act] -> kxk depthwise -> BN -> act -> [SE] -> 1x1 -> BN, + residual.

    The mid width is `in_chs * expansion` rounded to a multiple of 8, never more than 5% down (mobile-vision's
    rule, stricter than timm's default 10%); the first 1x1 is left out when it equals the input width.
    `attention='split_attention'` replaces the depthwise conv by `SplitAttnDw` with `splits` filters per
    channel; `'se'` adds an SE gate (h-sigmoid, reduction relative to the mid width).
    The residual is the identity at stride 1 when the widths match; `residual='pad'` keeps it at stride 1 when they
    differ too, zero-padded or truncated to the output width (`PadOrTruncate`). Drop-path applies to the branch.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 expansion: float = 6.0, attention: str = "none", splits: int = 1, se_ratio: float = 0.25,
                 spec_stride: int | None = None, residual: str | None = None, act_layer: LayerType = nn.ReLU,
                 norm_layer: LayerType = nn.BatchNorm2d, drop_path_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual: expected one of {RESIDUALS}, got {residual!r}")
        dd = {"device": device, "dtype": dtype}
        spec_stride = stride if spec_stride is None else spec_stride
        norm_act = norm_act_layer_for(norm_layer, act_layer)
        mid_chs = make_divisible(in_chs * expansion, 8, round_limit=0.95)
        self.has_skip = spec_stride == 1 and (in_chs == out_chs or residual == "pad")
        if mid_chs != in_chs:
            self.conv_pw = create_conv2d(in_chs, mid_chs, 1, **dd)
            self.bn1 = norm_act(mid_chs, inplace=True, **dd)
        else:
            self.conv_pw, self.bn1 = nn.Identity(), nn.Identity()
        if attention == "split_attention":
            self.conv_dw = SplitAttnDw(mid_chs, kernel_size, stride, dilation, radix=splits, rd_ratio=se_ratio,
                                       act_layer=act_layer, norm_layer=norm_layer, **dd)
            self.bn2 = nn.Identity()
        else:
            self.conv_dw = create_conv2d(mid_chs, mid_chs, kernel_size, stride=stride, dilation=dilation,
                                         depthwise=True, **dd)
            self.bn2 = norm_act(mid_chs, inplace=True, **dd)
        if attention == "se":  # as mobile-vision: the block's own activation inside, widths rounded like mid
            rd_chs = make_divisible(int(mid_chs * se_ratio), 8, round_limit=0.95)
            self.se = SEModule(mid_chs, rd_channels=rd_chs, act_layer=act_layer, gate_layer="hard_sigmoid", **dd)
        else:
            self.se = nn.Identity()
        self.conv_pwl = create_conv2d(mid_chs, out_chs, 1, **dd)
        self.bn3 = norm_act(out_chs, apply_act=False, **dd)
        self.shortcut = PadOrTruncate(in_chs, out_chs) if self.has_skip and in_chs != out_chs else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if self.has_skip and drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.se(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        if self.has_skip:
            out = self.drop_path(out) + self.shortcut(x)
        return out


class Skip(nn.Module):
    """FBNetV2's `skip`: identity, or 1x1 conv + BN + ReLU when the width or the stride changes; with
    `residual='pad'`, a width change at stride 1 stays an identity, zero-padded or truncated (`PadOrTruncate`)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, spec_stride: int | None = None,
                 residual: str | None = None, norm_layer: LayerType = nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual: expected one of {RESIDUALS}, got {residual!r}")
        spec_stride = stride if spec_stride is None else spec_stride
        if residual == "pad" and spec_stride == 1 and in_chs != out_chs:
            self.conv, self.bn = PadOrTruncate(in_chs, out_chs), nn.Identity()  # no conv: the identity path
        elif in_chs != out_chs or spec_stride > 1:
            self.conv = pointwise_conv(in_chs, out_chs, stride=stride, device=device, dtype=dtype)
            self.bn = norm_act_layer_for(norm_layer, nn.ReLU)(out_chs, inplace=True, device=device, dtype=dtype)
        else:
            self.conv, self.bn = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
