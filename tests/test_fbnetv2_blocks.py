"""FBNetV2 / FP-NAS blocks: exact against mobile-vision's published FBNetV2 models, and split attention."""
import copy
import json
from pathlib import Path

import pytest
import torch
from timm.layers import DropPath

from fpnas_zoo import FpnasZooNet, SpecError, count_spec, load_spec, save_spec, spec_from_dict
from fpnas_zoo.blocks import InvertedResidual, PadOrTruncate, Skip, SplitAttnDw
from fpnas_zoo.counting import count_mult_adds

SPECS = Path(__file__).parent / "fixtures" / "specs"


@pytest.mark.parametrize(
    "name, weights, mult_adds",
    [
        # mobile-vision's counts: conv + linear weights, and FLOPs = conv/linear mult-adds + avg-pool input sizes
        ("fbnetv2_f4", 6_994_824, 238_351_984 - 746_392),
        ("fbnetv2_l2", 8_496_520, 423_912_768 - 1_302_464),
    ],
)
def test_fbnetv2_counts_match_mobile_vision(name, weights, mult_adds):
    spec = load_spec(SPECS / f"{name}.json")
    counts = count_spec(spec)
    assert counts.params_weights_only == weights
    assert counts.mult_adds == mult_adds
    # and within 0.5% of the published numbers in their own conventions (the gap is the pools' adds)
    assert abs(counts.params_weights_only / (spec.paper["params_m"] * 1e6) - 1) < 0.005
    assert abs(counts.mult_adds / (spec.paper["mult_adds_m"] * 1e6) - 1) < 0.005


def test_fbnetv2_l1_is_l2_at_224():
    spec = load_spec(SPECS / "fbnetv2_l2.json")
    assert abs(count_spec(spec, (3, 224, 224)).mult_adds / 326.02e6 - 1) < 0.005  # mobile-vision: 326.02M


def test_mid_width_rounds_like_mobile_vision():
    # 24 * 1.7912 = 42.99: 40 would lose 7% (> 5%), so the mid width is 48 (timm's default rule gives 40)
    block = InvertedResidual(24, 24, expansion=1.7912)
    assert block.conv_pw.out_channels == 48
    # no expansion conv when the mid width equals the input width
    assert isinstance(InvertedResidual(16, 16, expansion=1.0).conv_pw, torch.nn.Identity)


@pytest.mark.parametrize("splits", [1, 2, 4])
def test_split_attention_fuses_splits_back(splits):
    torch.manual_seed(0)
    layer = SplitAttnDw(24, kernel_size=3, stride=2, radix=splits).eval()
    assert layer.conv.out_channels == 24 * splits and layer.conv.groups == 24
    x = torch.randn(2, 24, 16, 16)
    out = layer(x)
    assert out.shape == (2, 24, 8, 8)
    # recompute by hand: chunk k of channel c is conv output channel c * splits + k
    with torch.no_grad():
        maps = layer.bn0(layer.conv(x)).reshape(2, 24, splits, 8, 8)
        gap = maps.sum(2).mean((2, 3), keepdim=True)
        logits = layer.fc2(layer.bn1(layer.fc1(gap))).reshape(2, 24, splits)
        weights = logits.softmax(-1) if splits > 1 else logits.sigmoid()
        expected = (maps * weights[..., None, None]).sum(2)
    assert torch.allclose(out, expected, atol=1e-6)


def test_ir_block_variants_build_and_keep_shapes():
    x = torch.randn(2, 32, 14, 14)
    for attention, splits in (("none", 1), ("se", 1), ("split_attention", 2), ("split_attention", 4)):
        block = InvertedResidual(32, 32, kernel_size=5, expansion=3.5, attention=attention, splits=splits).eval()
        assert block.has_skip and block(x).shape == x.shape
    down = InvertedResidual(32, 48, stride=2, expansion=4, attention="split_attention", splits=2)
    assert not down.has_skip and down(x).shape == (2, 48, 7, 7)
    assert isinstance(Skip(32, 32).conv, torch.nn.Identity) and Skip(32, 64, stride=2)(x).shape == (2, 64, 7, 7)


def test_splits_need_split_attention(tmp_path):
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    bad = copy.deepcopy(data)
    bad["blocks"][5]["splits"] = 2  # attention 'se'
    with pytest.raises(SpecError, match=r"blocks\[5\]\.splits: got 2, expected 1 unless attention"):
        spec_from_dict(bad, "f4.json")
    bad = copy.deepcopy(data)
    bad["blocks"][5]["splits"] = 3
    with pytest.raises(SpecError, match=r"blocks\[5\]\.splits: got 3, expected one of 1, 2, 4"):
        spec_from_dict(bad, "f4.json")


def test_fbnetv2_head_pools_before_its_pre_logits_conv():
    model = FpnasZooNet(load_spec(SPECS / "fbnetv2_f4.json")).eval()
    assert model.num_features == 1344 and model.head_hidden_size == 1984
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 1344, 7, 7)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 1984)
        assert model(x).shape == (1, 1000)


def randomized_bn(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return module


def padded_or_truncated(x: torch.Tensor, chs: int) -> torch.Tensor:
    """The residual of `residual: 'pad'`, written out: zero channels after x, or x's first `chs` channels."""
    if chs <= x.shape[1]:
        return x[:, :chs]
    return torch.cat([x, x.new_zeros(x.shape[0], chs - x.shape[1], *x.shape[2:])], dim=1)


@pytest.mark.parametrize("in_chs, out_chs", [(24, 32), (32, 24), (24, 24)])
def test_pad_residual_adds_the_zero_padded_or_truncated_input(in_chs, out_chs):
    torch.manual_seed(0)
    kwargs = dict(kernel_size=5, expansion=3, attention="se")
    block = randomized_bn(InvertedResidual(in_chs, out_chs, residual="pad", **kwargs)).eval()
    plain = InvertedResidual(in_chs, out_chs, **kwargs).eval()  # without the option: no residual if widths differ
    plain.load_state_dict(block.state_dict())  # the option adds no tensors
    x = torch.randn(2, in_chs, 8, 8)
    with torch.no_grad():
        expected = plain(x) if in_chs == out_chs else plain(x) + padded_or_truncated(x, out_chs)
        torch.testing.assert_close(block(x), expected, rtol=1e-6, atol=1e-6)
    # drop-path acts on the branch only: with probability 1 (train mode) the block is the padded identity
    dropped = InvertedResidual(in_chs, out_chs, residual="pad", drop_path_rate=1.0).train()
    torch.testing.assert_close(dropped(x), padded_or_truncated(x, out_chs), rtol=0, atol=0)
    assert not InvertedResidual(in_chs, out_chs, stride=2, residual="pad").has_skip  # no residual at stride 2


@pytest.mark.parametrize("in_chs, out_chs", [(24, 32), (32, 24)])
def test_pad_skip_is_a_parameter_free_identity(in_chs, out_chs):
    skip = Skip(in_chs, out_chs, residual="pad")
    x = torch.randn(2, in_chs, 5, 5)
    assert not list(skip.parameters())
    torch.testing.assert_close(skip(x), padded_or_truncated(x, out_chs), rtol=0, atol=0)
    assert isinstance(Skip(in_chs, out_chs, stride=2, residual="pad").conv, torch.nn.Conv2d)  # a stride changes it


def pad_spec_data() -> dict:
    """F4 at 32 px cut to 6 blocks, with `residual: 'pad'` widening (16 -> 24) and narrowing (32 -> 24) ir blocks and
    a narrowing skip (24 -> 16)."""
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    ir = dict(data["blocks"][2])  # 24 -> 24, stride 1, k5 e1.79, h-swish
    data.update(name="pad_probe", input_size=[3, 32, 32], num_classes=10, blocks=[
        {**ir, "out_chs": 24, "residual": "pad"},
        {**ir, "out_chs": 32, "residual": "pad", "attention": "se"},
        {**ir, "out_chs": 24, "residual": "pad", "attention": "split_attention", "splits": 2},
        {"type": "skip", "out_chs": 16, "stride": 1, "residual": "pad"},
        {**ir, "out_chs": 32, "stride": 2},
        {**ir, "out_chs": 32, "residual": "pad"},  # equal widths: the plain identity
    ])
    return data


def test_pad_residual_spec_builds_counts_and_round_trips(tmp_path):
    spec = spec_from_dict(pad_spec_data())
    model = FpnasZooNet(spec, drop_path_rate=0.2)
    blocks = [b for stage in model.blocks for b in stage]
    assert [type(b.shortcut).__name__ for b in blocks if isinstance(b, InvertedResidual)] == [
        "PadOrTruncate", "PadOrTruncate", "PadOrTruncate", "Identity", "Identity"]
    assert isinstance(blocks[3].conv, PadOrTruncate)
    assert all(isinstance(b.drop_path, DropPath) for b in blocks[1:3])  # drop-path as for any residual
    # padding costs no parameters and no mult-adds: the counts of the same network with the ir blocks' residual off
    data = pad_spec_data()
    data["blocks"] = [{k: v for k, v in b.items() if k != "residual" or b["type"] == "skip"} for b in data["blocks"]]
    ours, theirs = count_spec(spec), count_spec(spec_from_dict(data))
    assert (ours.params, ours.mult_adds) == (theirs.params, theirs.mult_adds)
    assert count_mult_adds(Skip(24, 16, residual="pad"), (24, 8, 8)) == (0, 0)
    path = tmp_path / "pad.json"
    save_spec(spec, path)
    assert load_spec(path).blocks == spec.blocks and load_spec(path).blocks[5]["residual"] == "pad"
    assert all("residual" not in b for b in load_spec(SPECS / "fbnetv2_f4.json").to_dict()["blocks"])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_pad_residual_scripts_and_fx_traces_to_the_same_outputs():
    """The padding or truncation is chosen at construction, so TorchScript and fx see one static path."""
    model = randomized_bn(FpnasZooNet(spec_from_dict(pad_spec_data()))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("block, index, expected", [
    ({"residual": "zero"}, 2, r"blocks\[2\]\.residual: got 'zero', expected one of 'pad' or left out"),
    ({"residual": None}, 2, r"blocks\[2\]\.residual: got None, expected one of 'pad' or left out"),
    ({"residual": "pad"}, 1, r"blocks\[1\]\.residual: got 'pad', expected left out at stride 2"),
])
def test_residual_field_is_validated(block, index, expected):
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    data["blocks"][index].update(block)
    with pytest.raises(SpecError, match=expected):
        spec_from_dict(data, "f4.json")
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    data["blocks"][18].update(residual="pad")  # a skip 184 -> 224 at stride 1
    assert spec_from_dict(data).blocks[18]["residual"] == "pad"
