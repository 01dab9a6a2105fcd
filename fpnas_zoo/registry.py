"""timm registration: every bundled spec becomes a `timm.create_model` name with its pretrained cfgs.

timm has no plugin mechanism, so `import fpnas_zoo` runs `register_bundled_specs()`. Entry points are
registered as members of the `fpnas_zoo` module, so `timm.list_models(module='fpnas_zoo')` lists them.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any
from urllib.parse import urlparse

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

from .checkpoint import checkpoint_filter_fn
from .model import FpnasZooNet, num_feature_levels
from .spec import ModelSpec, SpecError, bundled_specs, load_spec

REGISTRY_MODULE = "fpnas_zoo"
HUB_ORG_ENV = "FPNAS_ZOO_HUB_ORG"  # point every model's weights at <org>/<model>.<tag> on the Hugging Face Hub
_REGISTERED: dict[str, ModelSpec] = {}


class PretrainedWeightsError(RuntimeError):
    """`pretrained=True` cannot be served: no weights, or nothing reachable or cached."""


def default_tag(spec: ModelSpec) -> str:
    """The tag of a model's own weights when its spec lists none (what `hub.export` names them by default)."""
    return {1000: "in1k", 10: "cifar10", 100: "cifar100"}.get(spec.num_classes, "custom")


def pretrained_cfgs(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """timm cfg dicts, keyed `name.tag`, one per weights entry (or `name.untrained`)."""
    _, height, width = spec.input_size
    stride = spec.total_stride
    base = dict(
        num_classes=spec.num_classes,
        input_size=tuple(spec.input_size),
        pool_size=(math.ceil(height / stride), math.ceil(width / stride)),
        crop_pct=spec.preprocessing["crop_pct"],
        interpolation=spec.preprocessing["interpolation"],
        mean=tuple(spec.preprocessing["mean"]),
        std=tuple(spec.preprocessing["std"]),
        first_conv="conv_stem",
        classifier="classifier",
        paper_name=spec.source["paper"],
        paper_ids=spec.source["paper"],
        origin_url=spec.source["repository"],
        license="apache-2.0",
    )
    cfgs = {}
    org = os.environ.get(HUB_ORG_ENV)
    for tag, weights in spec.weights.items():
        hub_id = f"{org}/{spec.name}.{tag}" if org else weights["hf_hub_id"]
        cfgs[f"{spec.name}.{tag}"] = dict(
            base, url=weights["url"] or "", hf_hub_id=hub_id, file=weights["file"],
            license=weights["license"], notes=(weights["notes"],),
        )
    if not cfgs and org:
        tag = default_tag(spec)
        cfgs[f"{spec.name}.{tag}"] = dict(base, hf_hub_id=f"{org}/{spec.name}.{tag}")
    elif not cfgs:
        cfgs[f"{spec.name}.untrained"] = base
    return cfgs


def check_pretrained_available(spec: ModelSpec, cfg) -> None:
    """Fail in seconds, with what to do, where timm would fail late or after a minute of retries."""
    how = (f"Train one (`python -m search.train --spec {spec.name} ...`) and push it (`python -m hub.push`), set "
           f"{HUB_ORG_ENV} to an organisation that has pushed it, or load a local file with "
           "`pretrained_cfg_overlay=dict(file='path/to/weights')`.")
    if cfg.file:
        if not os.path.exists(cfg.file):  # a file, or a `local-dir:` folder
            raise PretrainedWeightsError(f"{spec.name}: weights file {cfg.file} does not exist")
        return
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str)
                     for f in ("model.safetensors", "pytorch_model.bin"))
        if not cached and constants.HF_HUB_OFFLINE:
            raise PretrainedWeightsError(f"{spec.name}: offline (HF_HUB_OFFLINE) and nothing cached for Hub repo "
                                         f"{cfg.hf_hub_id} under {constants.HF_HUB_CACHE}. {how}")
        if cached or _reachable(f"{constants.ENDPOINT}/api/models/{cfg.hf_hub_id}"):
            return
        raise PretrainedWeightsError(f"{spec.name}: Hub repo {cfg.hf_hub_id} is not cached under "
                                     f"{constants.HF_HUB_CACHE} and the Hub cannot be reached. {how}")
    if cfg.url:
        import torch.hub

        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path))
        if os.path.isfile(cached) or _reachable(cfg.url):
            return
        raise PretrainedWeightsError(f"{spec.name}: {cfg.url} is not cached at {cached} and cannot be reached. "
                                     f"Download it elsewhere and put it there, or {how[0].lower()}{how[1:]}")
    raise PretrainedWeightsError(f"{spec.name} has no published weights (tag {cfg.tag}). {how}")


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """A HEAD request with a short timeout: seconds, not timm's minute of retries."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError as e:
        return e.code < 500 and e.code not in (401, 403, 404)  # e.g. a redirect answered: the host is there
    except (OSError, ValueError):
        return False


def create_model_from_spec(spec: ModelSpec | str | os.PathLike, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model from a spec object or a spec file, through timm's builder (features_only etc. work)."""
    if not isinstance(spec, ModelSpec):
        spec = load_spec(spec)
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(num_feature_levels(spec))))
    if kwargs.get("pretrained_cfg") is None and spec.name not in _REGISTERED:
        # An unregistered spec (e.g. a search result) still gets a complete cfg for its preprocessing.
        kwargs["pretrained_cfg"] = next(iter(generate_default_cfgs(pretrained_cfgs(spec)).values())).default
    if pretrained and not isinstance((kwargs.get("pretrained_cfg_overlay") or {}).get("state_dict"), dict):
        cfg = resolve_pretrained_cfg(spec.name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        check_pretrained_available(spec, cfg)
    return build_model_with_cfg(
        FpnasZooNet,
        spec.name,
        pretrained,
        spec=spec,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=feature_cfg,
        **kwargs,
    )


def _entrypoint(spec: ModelSpec):
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return create_model_from_spec(spec, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = spec.name
    entrypoint.__module__ = REGISTRY_MODULE
    entrypoint.__doc__ = f"{spec.name} ({spec.provenance}) from {spec.path}. {spec.source['paper']}"
    return entrypoint


def register_spec(spec: ModelSpec) -> None:
    """Register one spec with timm (its cfgs first: timm reads them when the entry point registers)."""
    module = sys.modules[REGISTRY_MODULE]
    if not hasattr(module, "default_cfgs"):
        module.default_cfgs = {}
    module.default_cfgs.update(generate_default_cfgs(pretrained_cfgs(spec)))
    entrypoint = _entrypoint(spec)
    setattr(module, spec.name, entrypoint)  # `fpnas_zoo.fpnasnet()` works, like timm's model modules
    register_model(entrypoint)
    _REGISTERED[spec.name] = spec


def register_bundled_specs() -> None:
    for spec in bundled_specs().values():
        register_spec(spec)


def registered_specs() -> dict[str, ModelSpec]:
    """name -> spec of every zoo model registered with timm."""
    return dict(_REGISTERED)


def resolve_spec(name_or_path: str | os.PathLike) -> ModelSpec:
    """A registered model name, or a path to a spec file."""
    if str(name_or_path) in _REGISTERED:
        return _REGISTERED[str(name_or_path)]
    if os.path.exists(name_or_path) or str(name_or_path).endswith(".json"):
        return load_spec(name_or_path)
    raise SpecError(str(name_or_path), "", str(name_or_path),
                    "a registered zoo model (see `python -m fpnas_zoo list`) or a spec file path")
