"""The one network class: any `ModelSpec` becomes a timm-compatible `nn.Module`.

Layout (timm's EfficientNet naming, so timm tooling finds what it expects):
`conv_stem`, `bn1`, `blocks` (one `nn.Sequential` per stage; a stage starts at each stride-2 block),
`conv_head`, `bn2`, `global_pool`, `classifier`.
"""

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d, create_conv2d, get_act_layer, get_device_dtype
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from .block_types import BLOCK_TYPES
from .blocks import norm_act_layer_for
from .spec import ModelSpec


def stage_plan(spec: ModelSpec) -> list[list[int]]:
    """Block indices grouped into stages: a new stage starts at every stride-2 block."""
    stages: list[list[int]] = []
    for i, block in enumerate(spec.blocks):
        if not stages or (block["stride"] > 1 and stages[-1]):
            stages.append([])
        stages[-1].append(i)
    return stages


def stem_is_feature(spec: ModelSpec) -> bool:
    """The stem output is a feature level when the first block reduces resolution again."""
    return spec.stem["stride"] > 1 and spec.blocks[0]["stride"] > 1


def num_feature_levels(spec: ModelSpec) -> int:
    return len(stage_plan(spec)) + int(stem_is_feature(spec))


class FpnasZooNet(nn.Module):
    """A network built from a spec, with timm's model interface.

    `device` / `dtype` are timm's factory arguments (`timm.create_model(name, device="meta", dtype=torch.bfloat16)`):
    every parameter and buffer is created there, down to each block, as timm's own models do.
    """

    def __init__(
        self,
        spec: ModelSpec,
        num_classes: int | None = None,
        in_chans: int = 3,
        global_pool: str | None = None,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        norm_layer: str | Callable[..., nn.Module] | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if output_stride not in (8, 16, 32):
            raise ValueError(f"{spec.name}: output_stride must be 8, 16 or 32, got {output_stride}")
        self.spec = spec
        self.num_classes = spec.num_classes if num_classes is None else num_classes
        self.in_chans = in_chans
        self.drop_rate = spec.head["drop_rate"] if drop_rate is None else drop_rate
        self.grad_checkpointing = False
        norm_layer = norm_layer or nn.BatchNorm2d

        stem = spec.stem
        self.conv_stem = create_conv2d(in_chans, stem["out_chs"], stem["kernel_size"], stride=stem["stride"], **dd)
        self.bn1 = norm_act_layer_for(norm_layer, get_act_layer(stem["act"]))(stem["out_chs"], inplace=True, **dd)

        current_stride, dilation = stem["stride"], 1
        self.feature_info = []
        if stem_is_feature(spec):
            self.feature_info.append(dict(num_chs=stem["out_chs"], reduction=current_stride, module="bn1", stage=0))
        in_chs, num_blocks = stem["out_chs"], len(spec.blocks)
        stages = []
        for stage_idx, block_ids in enumerate(stage_plan(spec)):
            layers = []
            for i in block_ids:
                args = spec.blocks[i]
                block_type = BLOCK_TYPES[args["type"]]
                stride, next_dilation = args["stride"], dilation
                if stride > 1:
                    if current_stride * stride > output_stride:
                        # Past the output stride: keep the resolution and dilate what follows instead.
                        next_dilation, stride = dilation * stride, 1
                    else:
                        current_stride *= stride
                layers.append(block_type.build(
                    in_chs, args, stride=stride, dilation=dilation, norm_layer=norm_layer,
                    drop_path_rate=drop_path_rate * i / num_blocks if block_type.has_residual else 0.0, **dd,
                ))
                dilation, in_chs = next_dilation, args["out_chs"]
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(
                num_chs=in_chs, reduction=current_stride, module=f"blocks.{stage_idx}", stage=stage_idx + 1,
            ))
        self.blocks = nn.Sequential(*stages)
        self.stage_ends = [info["stage"] for info in self.feature_info]

        head = spec.head
        head_act = get_act_layer(head["act"])
        self.num_features = head["out_chs"]
        self.conv_head = create_conv2d(in_chs, head["out_chs"], 1, **dd)
        self.bn2 = norm_act_layer_for(norm_layer, head_act)(head["out_chs"], inplace=True, **dd)
        # After pooling: an optional 1x1 conv + act (FBNetV2's head), flatten, dropout, classifier.
        self.global_pool = SelectAdaptivePool2d(pool_type=head["pool"] if global_pool is None else global_pool)
        if head["pre_logits_chs"]:
            self.head_hidden_size = head["pre_logits_chs"]
            self.conv_pre_logits = nn.Conv2d(self.num_features, self.head_hidden_size, 1, bias=False, **dd)
            self.act_pre_logits = head_act(inplace=True)
        else:
            self.head_hidden_size = self.num_features
            self.conv_pre_logits, self.act_pre_logits = nn.Identity(), nn.Identity()
        self.flatten = nn.Flatten(1) if self.global_pool.pool_type else nn.Identity()
        self.classifier = self._make_classifier(self.num_classes, **dd)
        self._init_weights()

    def _make_classifier(self, num_classes: int, device=None, dtype=None) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.head_hidden_size, num_classes, device=device, dtype=dtype)

    def _init_weights(self) -> None:
        # As the official FPNASNet: He-normal convs (fan-out), BN 1/0, classifier N(0, 0.01).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # --- timm interface ---------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^conv_stem|bn1",
            blocks=[
                (r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)", None),
                (r"conv_head|bn2", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = self._make_classifier(num_classes, **get_device_dtype(self))  # where the model is

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features at the `feature_info` levels (indices as timm: None all, int last n, list) and the final map."""
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        take_indices = [self.stage_ends[i] for i in take_indices]
        max_index = self.stage_ends[max_index]

        feat_idx = 0  # the stem
        x = self.bn1(self.conv_stem(x))
        if feat_idx in take_indices:
            intermediates.append(x)
        if torch.jit.is_scripting() or not stop_early:  # torchscript cannot slice a Sequential
            stages = self.blocks
        else:
            stages = self.blocks[:max_index]
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if feat_idx == self.stage_ends[-1]:
            x = self.bn2(self.conv_head(x))
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages (and head) that the requested intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        max_index = self.stage_ends[max_index]
        num_stages = len(self.blocks)
        self.blocks = self.blocks[:max_index]
        if prune_norm or max_index < num_stages:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
        if prune_head:
            self.conv_pre_logits, self.act_pre_logits = nn.Identity(), nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x, flatten=True)
        else:
            x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.act_pre_logits(self.conv_pre_logits(self.global_pool(x))))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
