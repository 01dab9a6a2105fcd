"""FPNASNet is the official network: exact size, and the official weights reproduce its outputs."""
import os
import urllib.parse

import pytest
import timm
import torch

from fpnas_zoo import CheckpointError, count_spec, registered_specs
from fpnas_zoo.checkpoint import checkpoint_filter_fn

OFFICIAL_URL = "https://github.com/jiequancui/FPNASNet/raw/master/FPNASNet%4073.34.pt"


def test_fpnasnet_size_matches_the_official_network_exactly():
    counts = count_spec(registered_specs()["fpnasnet"])
    assert counts.params == 3_439_004
    assert counts.params_without_bn == 3_405_340
    assert counts.mult_adds == 301_211_352
    assert counts.mult_adds_conv == 299_931_352
    # and the measured numbers sit on the paper's (3.41M params without BN, 300M conv mult-adds)
    assert round(counts.params_without_bn / 1e6, 2) == 3.41
    assert round(counts.mult_adds_conv / 1e6) == 300


def test_counts_on_meta_equal_counts_of_a_real_model():
    from fpnas_zoo import count_model

    spec = registered_specs()["fpnasnet"]
    assert count_model(timm.create_model("fpnasnet"), spec.input_size) == count_spec(spec)


@pytest.mark.parametrize("wrapping", ["raw", "state_dict", "module_prefix", "state_dict+module_prefix"])
def test_official_checkpoint_reproduces_official_outputs(tmp_path, official, wrapping):
    state_dict, x, y = official
    if "module_prefix" in wrapping:
        state_dict = {"module." + k: v for k, v in state_dict.items()}
    checkpoint = {"state_dict": state_dict, "epoch": 120} if wrapping.startswith("state_dict") else state_dict
    path = tmp_path / "FPNASNet@73.34.pt"
    torch.save(checkpoint, path)
    model = timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        out = model(x)
    assert (out - y).abs().max().item() <= 1e-5


def test_official_url_path_loads_from_the_torch_hub_cache(tmp_path, monkeypatch, official):
    """`pretrained=True` with the registry cfg: the real URL, served from torch.hub's cache (no network)."""
    state_dict, x, y = official
    assert registered_specs()["fpnasnet"].weights["in1k"]["url"] == OFFICIAL_URL
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state_dict, cache / os.path.basename(urllib.parse.urlparse(OFFICIAL_URL).path))
    model = timm.create_model("fpnasnet", pretrained=True).eval()
    assert model.pretrained_cfg["url"] == OFFICIAL_URL
    with torch.no_grad():
        assert (model(x) - y).abs().max().item() <= 1e-5


def test_official_weights_load_into_features_only_and_new_heads(tmp_path, official):
    state_dict, x, _ = official
    path = tmp_path / "official.pt"
    torch.save(state_dict, path)
    overlay = dict(file=str(path))
    full = timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    feats = timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True).eval()
    ten = timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10).eval()
    gray = timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1).eval()
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], full.forward_intermediates(x, intermediates_only=True)[-1])
        assert torch.equal(ten.forward_features(x), full.forward_features(x))
        assert ten(x).shape == (2, 10)
        assert gray(x[:, :1]).shape == (2, 1000)


def test_filter_rejects_checkpoints_of_another_architecture(official):
    state_dict, _, _ = official
    smaller = {k: v for k, v in state_dict.items() if not k.startswith("features.17.")}
    smaller = {k.replace("features.18.", "features.17."): v for k, v in smaller.items()}
    with pytest.raises(CheckpointError, match="has 16 blocks after the stem, model fpnasnet has 17$"):
        checkpoint_filter_fn(smaller, timm.create_model("fpnasnet"))
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        checkpoint_filter_fn({"state_dict": [1, 2]}, timm.create_model("fpnasnet"))
    weird = dict(state_dict, **{"features.5.conv.9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="features.5.conv.9.weight"):
        checkpoint_filter_fn(weird, timm.create_model("fpnasnet"))


def test_zoo_layout_checkpoints_pass_through_the_filter():
    model = timm.create_model("fpnasnet")
    wrapped = {"state_dict_ema": {"module." + k: v for k, v in model.state_dict().items()}}
    assert checkpoint_filter_fn(wrapped, model).keys() == model.state_dict().keys()
