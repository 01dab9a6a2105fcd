"""The block-type registry (fpnas_zoo.block_types): every type the schema knows builds a module that maps the spec's
in/out channels and stride, and the registry knows no type the schema lacks. Blocks come from the bundled specs."""
import pytest
import torch
import torch.nn as nn

import fpnas_zoo
from fpnas_zoo.block_types import BLOCK_TYPES
from fpnas_zoo.schema import BLOCK_SCHEMAS


def first_blocks_of_each_type() -> dict[str, tuple[int, dict]]:
    """type -> (in_chs, block) of its first block among the bundled specs."""
    found = {}
    for spec in fpnas_zoo.registered_specs().values():
        in_chs = spec.stem["out_chs"]
        for block in spec.blocks:
            found.setdefault(block["type"], (in_chs, block))
            in_chs = block["out_chs"]
    return found


def test_the_registry_binds_exactly_the_schemas_types():
    assert set(BLOCK_TYPES) == set(BLOCK_SCHEMAS) and set(first_blocks_of_each_type()) == set(BLOCK_SCHEMAS)


@pytest.mark.parametrize("type_name", sorted(BLOCK_SCHEMAS))
def test_each_type_builds_a_module_with_the_specs_channels_and_stride(type_name):
    in_chs, block = first_blocks_of_each_type()[type_name]
    module = BLOCK_TYPES[type_name].build(in_chs, block, stride=block["stride"], dilation=1,
                                          norm_layer=nn.BatchNorm2d, drop_path_rate=0.0)
    y = module.eval()(torch.randn(2, in_chs, 16, 16))
    assert y.shape == (2, block["out_chs"], 16 // block["stride"], 16 // block["stride"])
