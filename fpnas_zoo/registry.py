"""timm registration: every bundled spec becomes a `timm.create_model` name with its pretrained cfgs.

timm has no plugin mechanism, so `import fpnas_zoo` runs `register_bundled_specs()`. Entry points are
registered as members of the `fpnas_zoo` module, so `timm.list_models(module='fpnas_zoo')` lists them.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .checkpoint import checkpoint_filter_fn
from .model import FpnasZooNet, num_feature_levels
from .spec import ModelSpec, SpecError, bundled_specs, load_spec

REGISTRY_MODULE = "fpnas_zoo"
_REGISTERED: dict[str, ModelSpec] = {}


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
    for tag, weights in spec.weights.items():
        cfgs[f"{spec.name}.{tag}"] = dict(
            base, url=weights["url"] or "", hf_hub_id=weights["hf_hub_id"], file=weights["file"],
            license=weights["license"], notes=(weights["notes"],),
        )
    if not cfgs:
        cfgs[f"{spec.name}.untrained"] = base
    return cfgs


def create_model_from_spec(spec: ModelSpec | str | os.PathLike, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model from a spec object or a spec file, through timm's builder (features_only etc. work)."""
    if not isinstance(spec, ModelSpec):
        spec = load_spec(spec)
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(num_feature_levels(spec))))
    if kwargs.get("pretrained_cfg") is None and spec.name not in _REGISTERED:
        # An unregistered spec (e.g. a search result) still gets a complete cfg for its preprocessing.
        kwargs["pretrained_cfg"] = next(iter(generate_default_cfgs(pretrained_cfgs(spec)).values())).default
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
