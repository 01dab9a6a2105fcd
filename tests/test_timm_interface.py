"""Every zoo model implements timm's model interface (checks modelled on timm's own model tests, tests/test_models.py
of timm: forward, backward, default cfgs, forward_features, forward_intermediates, features_only, fx, torchscript),
over every name `import fpnas_zoo` adds to timm's registry."""
import re
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
from conftest import FIXTURES, model_sweep
from timm.layers import FrozenBatchNormAct2d
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

import fpnas_zoo

SPECS = sorted(fpnas_zoo.registered_specs())
# every name the zoo adds to timm.list_models(): the bundled specs and the generic entry point (fpnas_zoo_spec)
MODELS = sorted(m for m in timm.list_models()
                if timm.models.model_entrypoint(m).__module__.partition(".")[0] == "fpnas_zoo")


def cfg_size(name: str) -> int:
    """The input size of a name's registered cfg (timm's tests look it up by name); timm's 224 for a name without
    one, which test_import_registers_every_bundled_spec_with_timm refuses."""
    cfg = timm.get_pretrained_cfg(name)
    return cfg.input_size[1] if cfg else 224


IMAGENET = [m for m in MODELS if cfg_size(m) >= 224]


def small_input(name: str, target: int = 128, batch: int = 2) -> torch.Tensor:
    size = min(cfg_size(name), target)  # timm's tests: the cfg's size, capped
    return torch.randn(batch, 3, size, size)


def test_models_are_every_name_the_import_adds_to_timm():
    script = ("import timm; before = set(timm.list_models()); import fpnas_zoo; "
              "print(' '.join(sorted(set(timm.list_models()) - before)))")
    added = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert added == MODELS and "fpnas_zoo_spec" in MODELS and set(SPECS) < set(MODELS)


def test_import_registers_every_bundled_spec_with_timm():
    assert SPECS and set(SPECS) == set(timm.list_models(module="fpnas_zoo"))
    # timm's tests look a model's input size up by name (list_models(name_matches_cfg=True)): every name has a cfg
    assert set(timm.list_models("fp*", name_matches_cfg=True)) >= set(MODELS)
    for name in MODELS:
        cfg = timm.get_pretrained_cfg(name).to_dict()
        for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv",
                    "classifier", "license", "paper_ids", "num_classes"):
            assert cfg.get(key) not in (None, ""), f"{name}: cfg lacks {key}"
    for name in SPECS:
        cfg = timm.get_pretrained_cfg(name).to_dict()
        spec = fpnas_zoo.registered_specs()[name]
        assert cfg.get("origin_url") == spec.source["repository"]
        assert cfg["notes"][0].startswith(f"{spec.provenance} architecture")
        assert re.fullmatch(r"arXiv:\d{4}\.\d{5}|https://openaccess\.thecvf\.com/\S+\.html", cfg["paper_ids"])
        assert (cfg["paper_ids"] == "arXiv:2011.10949") == spec.source["paper"].startswith("Yan et al.")


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_default_cfg_is_consistent_with_the_model(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[2:]) == tuple(cfg["pool_size"])
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        logits = model(x)
        assert logits.shape == (1, cfg["num_classes"]) and torch.isfinite(logits).all()
        model.reset_classifier(0)
        assert model(x).shape == (1, model.head_hidden_size)
        # unpooled: FBNetV2-style heads still apply their 1x1 pre-logits conv per position
        model.reset_classifier(0, "")
        assert model(x).shape == (1, model.head_hidden_size, *cfg["pool_size"])
        unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == (1, model.head_hidden_size, *cfg["pool_size"])
    keys = timm.create_model(name).state_dict().keys()
    assert cfg["first_conv"] + ".weight" in keys and cfg["classifier"] + ".weight" in keys
    assert isinstance(model.get_classifier(), nn.Module)


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42, drop_rate=0.1, drop_path_rate=0.1).train()
    out = model(small_input(name))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_grad_checkpointing_and_intermediates_match_forward_features(name):
    model = timm.create_model(name).eval()
    x = small_input(name)
    with torch.no_grad():
        reference = model.forward_features(x)
        final, intermediates = model.forward_intermediates(x)
        assert torch.allclose(final, reference, rtol=1e-4, atol=1e-5)
        assert [t.shape[1] for t in intermediates] == [f["num_chs"] for f in model.feature_info]
        assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
        model.set_grad_checkpointing(True)
        assert torch.allclose(model.forward_features(x), reference, rtol=1e-4, atol=1e-5)
        assert torch.allclose(model.forward_intermediates(x)[0], reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", model_sweep(IMAGENET))
def test_feature_info_has_five_levels_at_reductions_2_to_32(name):
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    x = small_input(name, 224, batch=1)
    outs = model(x)
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    assert [224 // o.shape[-1] for o in outs] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("name", model_sweep(MODELS))
@pytest.mark.parametrize("feature_cls", [None, "getter", "hook", "fx", "dict"])
def test_features_only_feature_classes_agree(name, feature_cls):
    x = small_input(name, 96)
    torch.manual_seed(0)
    reference = timm.create_model(name).eval()
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    torch.manual_seed(0)  # the same initial weights
    model = timm.create_model(name, features_only=True, **kwargs)
    with torch.no_grad():
        outs = model.eval()(x)
        outs = list(outs.values()) if isinstance(outs, dict) else outs
        expected = reference.forward_intermediates(x, intermediates_only=True)
    assert len(outs) == len(expected) >= 3
    for out, exp in zip(outs, expected, strict=True):  # the same ops; fx's graph may sum in another order
        torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-6 * float(exp.abs().max()))
    channels = [info["num_chs"] for info in reference.feature_info]
    reductions = [info["reduction"] for info in reference.feature_info]
    assert [o.shape[1] for o in outs] == channels
    for out, reduction in zip(outs, reductions, strict=True):  # timm's rule: spatial <= ceil(size / red) + 1
        assert out.shape[-1] <= -(-x.shape[-1] // reduction) + 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_out_indices_positive_and_negative(name):
    levels = len(timm.create_model(name, features_only=True).feature_info)
    x = small_input(name, 96)
    last = timm.create_model(name, features_only=True, out_indices=(-1,))
    assert last.feature_info.channels() == [timm.create_model(name).feature_info[-1]["num_chs"]]
    pair = timm.create_model(name, features_only=True, out_indices=(1, levels - 1))
    assert len(pair(x)) == 2 and len(last(x)) == 1


@pytest.mark.parametrize("name", model_sweep(IMAGENET))
def test_output_stride_dilates_with_the_same_weights(name):
    base = timm.create_model(name, features_only=True).eval()
    x = small_input(name, 128, batch=1)
    for output_stride, reductions in ((16, [2, 4, 8, 16, 16]), (8, [2, 4, 8, 8, 8])):
        dilated = timm.create_model(name, features_only=True, output_stride=output_stride).eval()
        dilated.load_state_dict(base.state_dict())  # strict: same modules, same shapes
        assert dilated.feature_info.reduction() == reductions
        outs = dilated(x)
        assert [128 // o.shape[-1] for o in outs] == reductions
        with torch.no_grad():  # levels before the output stride is reached are untouched
            assert torch.equal(outs[0], base(x)[0])
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        timm.create_model(name, output_stride=4)


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_prune_intermediate_layers(name):
    model = timm.create_model(name).eval()
    x = small_input(name, 96)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    kept = model.prune_intermediate_layers(indices=[0, 1])
    assert kept == [0, 1] and len(model.blocks) == 2
    with torch.no_grad():
        outs = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(outs, expected, strict=True))
        assert model(x).ndim == 4  # head and pooling pruned


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_torchscript_matches_eager(name):
    """TorchScript is deprecated in torch (its warning is expected here, and silenced); timm still scripts every model
    in its own tests, and users of older deployments script them: every zoo model must still script to the same
    outputs."""
    model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = small_input(name)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_torch_export_matches_eager(name):
    model = timm.create_model(name).eval()
    x = small_input(name)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_fx_trace_equals_eager_exactly_and_backprops(name):
    """fx traces equal eager and backpropagate; the traced graph still scripts (timm's own check; TorchScript's
    deprecation warning is expected there and silenced)."""
    model = timm.create_model(name).eval()
    x = small_input(name)
    graph = create_feature_extractor(model, {"classifier": "out"})
    with torch.no_grad():
        assert torch.equal(graph(x)["out"], model(x))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
        # timm's own test: a traced graph must script (string annotations once broke the generated code)
        assert torch.allclose(torch.jit.script(graph)(x)["out"], model(x), rtol=1e-5, atol=1e-6)
    train_model = timm.create_model(name, num_classes=5).train()
    train_graph = create_feature_extractor(train_model, {"classifier": "out"})
    train_graph(x)["out"].mean().backward()
    assert all(p.grad is not None for p in train_graph.parameters())


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_meta_device_construction_and_in_chans(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    gray = timm.create_model(name, in_chans=1).eval()
    assert gray.conv_stem.in_channels == 1 and gray.in_chans == 1
    assert gray(small_input(name, 64)[:, :1]).shape[1] == gray.num_classes


REFERENCE = "mobilenetv2_100"  # timm's own model of the same family: what timm's factory arguments do to a model
FBNETV2_SE = str(FIXTURES / "specs" / "fbnetv2_f4.json")  # ir blocks with an SE gate, which no bundled spec has


class _CpuFloatElements(TorchFunctionMode):
    """Counts the elements of the floating-point tensors that torch functions return on the CPU."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.elements += sum(t.numel() for t in tree_leaves(out)
                             if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.is_floating_point())
        return out


def _kinds(tensors) -> set:
    return {(t.device.type, t.dtype) for t in tensors}


def _create(name: str, **kwargs) -> nn.Module:
    if name == FBNETV2_SE:  # a spec file, through the generic entry point
        return timm.create_model("fpnas_zoo_spec", spec=name, **kwargs)
    return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", [*model_sweep([REFERENCE, *MODELS]), pytest.param(FBNETV2_SE, id="spec:fbnetv2_f4")])
def test_device_and_dtype_factory_arguments_create_every_parameter_there(name):
    dd = dict(device="meta", dtype=torch.bfloat16)
    reference = timm.create_model(REFERENCE, **dd)
    with _CpuFloatElements() as cpu:
        model = _create(name, **dd)
    assert _kinds(model.parameters()) == _kinds(reference.parameters()) == {("meta", torch.bfloat16)}
    assert _kinds(model.buffers()) == _kinds(reference.buffers())  # BN statistics in bf16, counters int64
    # created there, not created on the CPU and then moved (which would put all of the model's weights there once)
    assert cpu.elements < 0.01 * sum(p.numel() for p in model.parameters())
    model.reset_classifier(7)  # a new head goes where the model is, as timm's own models do
    assert _kinds(model.get_classifier().parameters()) == {("meta", torch.bfloat16)}
    assert _kinds(_create(name, features_only=True, **dd).parameters()) == {("meta", torch.bfloat16)}


@pytest.mark.parametrize("name", [*model_sweep([REFERENCE, *MODELS]), pytest.param(FBNETV2_SE, id="spec:fbnetv2_f4")])
def test_a_meta_model_materialises_to_the_cpu_model_and_bfloat16_runs(name):
    torch.manual_seed(0)
    eager = _create(name).eval()
    x = torch.randn(2, 3, 64, 64)
    deferred = _create(name, device="meta")  # timm's deferred init: build on meta, allocate, load
    deferred.to_empty(device="cpu").load_state_dict(eager.state_dict())
    half = _create(name, dtype=torch.bfloat16).eval()
    assert _kinds(half.parameters()) == {("cpu", torch.bfloat16)}
    with torch.no_grad():
        assert torch.equal(deferred.eval()(x), eager(x))
        out = half(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == (2, eager.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_norm_layer_override_freezes_batchnorm(name):
    model = timm.create_model(name, norm_layer=FrozenBatchNorm2d, features_only=True)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNormAct2d))]
    assert norms and all(isinstance(m, FrozenBatchNormAct2d) for m in norms)
    assert len(model(small_input(name, 64))) == len(model.feature_info)


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_group_matcher_covers_every_parameter(name):
    from timm.models import group_parameters

    model = timm.create_model(name)
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert len(group_parameters(model, model.group_matcher(coarse=True))) < len(groups)


@pytest.mark.parametrize("name", [MODELS[0], "fpnasnet"])
def test_drop_path_is_random_in_training_and_off_in_eval(name):
    x = small_input(name, 64, batch=4)
    model = timm.create_model(name, drop_path_rate=0.8, drop_rate=0.0)  # high: some path of 4 samples drops
    assert any(type(m).__name__ == "DropPath" for m in model.modules())
    outs = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model.train()(x))
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # random paths, seeded
    plain = timm.create_model(name, drop_path_rate=0.0, drop_rate=0.0)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))  # eval: drop path is the identity
        torch.manual_seed(1)  # without drop path, training mode is deterministic: the difference above is drop path
        assert torch.equal(plain.train()(x), plain.train()(x))
