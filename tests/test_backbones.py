"""Zoo models as dense-task backbones: segmentation_models_pytorch `tu-` encoders and torchvision tooling."""
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from conftest import model_sweep
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork

import fpnas_zoo

IMAGENET = sorted(n for n, s in fpnas_zoo.registered_specs().items() if s.input_size[1] >= 224)
SMP_ARCHS = {
    "PSPNet": dict(encoder_depth=3),
    "Unet": {},
    "FPN": {},
    "DeepLabV3": dict(encoder_output_stride=8),
    "DeepLabV3Plus": dict(encoder_output_stride=16),
}


@pytest.mark.parametrize("name", model_sweep(IMAGENET))
@pytest.mark.parametrize("arch", sorted(SMP_ARCHS))
def test_smp_tu_encoder(name, arch):
    model = getattr(smp, arch)(encoder_name=f"tu-{name}", encoder_weights=None, classes=7, **SMP_ARCHS[arch]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 7, 64, 64)
    expected = [3] + timm.create_model(name, features_only=True).feature_info.channels()
    depth = SMP_ARCHS[arch].get("encoder_depth", 5)
    assert model.encoder.out_channels == expected[: depth + 1]


def test_torchvision_feature_extractor_and_fpn():
    name = IMAGENET[0]
    model = timm.create_model(name).eval()
    levels = {info["module"]: f"c{i}" for i, info in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, levels)
    backbone = timm.create_model(name, features_only=True).eval()
    fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=64)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        named = extractor(x)
        assert [t.shape for t in named.values()] == [t.shape for t in model.forward_intermediates(
            x, intermediates_only=True)]
        pyramid = fpn({f"c{i}": f for i, f in enumerate(backbone(x))})
    assert [p.shape[1] for p in pyramid.values()] == [64] * 5
    assert [128 // p.shape[-1] for p in pyramid.values()] == [2, 4, 8, 16, 32]
