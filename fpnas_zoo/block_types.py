"""The block-type registry: joins each JSON block type of the schema to the module that builds it.

`BLOCK_TYPES` is the one place a block type is bound: its fields and channel rules (from `schema.py`, plain
data) and the function that builds its module (from `blocks.py`, which knows nothing of the schema).
Adding a block type is a schema entry, a module and one line here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn
from timm.layers import get_act_layer

from .blocks import DepthwiseSeparable, FpnasBlock, InvertedResidual, LayerType, Skip
from .schema import BLOCK_SCHEMAS, BlockSchema, Field


@dataclass(frozen=True)
class BlockType:
    """How one `type` of spec block is validated and built.

    `build(in_chs, args, stride=, dilation=, norm_layer=, drop_path_rate=[, device=, dtype=])` gets the validated
    JSON fields in `args`; `stride` may be lower than `args['stride']` when an output stride is imposed by dilation;
    `device` / `dtype` are timm's factory arguments, where the module's parameters are created.
    """

    schema: BlockSchema
    build: Callable[..., nn.Module]
    has_residual: bool = False  # whether drop_path_rate applies

    @property
    def fields(self) -> dict[str, Field]:
        return self.schema.fields

    def check_channels(self, in_chs: int, args: dict) -> list[tuple[str, str]]:
        return self.schema.check_channels(in_chs, args)


def _build_ds(in_chs: int, args: dict, *, stride: int, dilation: int, norm_layer: LayerType,
              drop_path_rate: float, device=None, dtype=None) -> nn.Module:
    return DepthwiseSeparable(
        in_chs, args["out_chs"], args["kernel_size"], stride=stride, dilation=dilation,
        act_layer=get_act_layer(args["act"]), norm_layer=norm_layer, device=device, dtype=dtype,
    )


def _build_fpnas(in_chs: int, args: dict, *, stride: int, dilation: int, norm_layer: LayerType,
                 drop_path_rate: float, device=None, dtype=None) -> nn.Module:
    return FpnasBlock(
        in_chs, args["out_chs"], kernel_size=args["kernel_size"], stride=stride, spec_stride=args["stride"],
        dilation=dilation, expansion=args["expansion"], shortcut=args["shortcut"], split=args["split"],
        act_layer=get_act_layer(args["act"]), norm_layer=norm_layer, drop_path_rate=drop_path_rate,
        device=device, dtype=dtype,
    )


def _build_ir(in_chs: int, args: dict, *, stride: int, dilation: int, norm_layer: LayerType,
              drop_path_rate: float, device=None, dtype=None) -> nn.Module:
    return InvertedResidual(
        in_chs, args["out_chs"], kernel_size=args["kernel_size"], stride=stride, dilation=dilation,
        expansion=args["expansion"], attention=args["attention"], splits=args["splits"],
        spec_stride=args["stride"], residual=args.get("residual"), act_layer=get_act_layer(args["act"]),
        norm_layer=norm_layer, drop_path_rate=drop_path_rate, device=device, dtype=dtype,
    )


def _build_skip(in_chs: int, args: dict, *, stride: int, dilation: int, norm_layer: LayerType,
                drop_path_rate: float, device=None, dtype=None) -> nn.Module:
    return Skip(in_chs, args["out_chs"], stride=stride, spec_stride=args["stride"], residual=args.get("residual"),
                norm_layer=norm_layer, device=device, dtype=dtype)


_BUILDERS = {
    "ds": (_build_ds, False),
    "fpnas": (_build_fpnas, True),
    "ir": (_build_ir, True),
    "skip": (_build_skip, False),
}
BLOCK_TYPES: dict[str, BlockType] = {
    name: BlockType(schema, *_BUILDERS[name]) for name, schema in BLOCK_SCHEMAS.items()
}
