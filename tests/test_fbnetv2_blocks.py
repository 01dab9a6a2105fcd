"""FBNetV2 / FP-NAS blocks: exact against mobile-vision's published FBNetV2 models, and split attention."""
import copy
import json
from pathlib import Path

import pytest
import torch

from fpnas_zoo import FpnasZooNet, SpecError, count_spec, load_spec, spec_from_dict
from fpnas_zoo.blocks import InvertedResidual, Skip, SplitAttnDw

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
