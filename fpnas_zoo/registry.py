"""timm registration: every bundled spec becomes a `timm.create_model` name with its pretrained cfgs.

timm has no plugin mechanism, so `import fpnas_zoo` runs `register_bundled_specs()`. Entry points are
registered as members of the `fpnas_zoo` module, so `timm.list_models(module='fpnas_zoo')` lists them.

Any other spec (a search result, a custom network) goes through the one generic entry point `fpnas_zoo_spec`, which
takes the spec itself as a model argument: an export's config.json names it as `architecture` with the spec in
`model_args`, timm's own mechanism, so `timm.create_model('local-dir:DIR' | 'hf-hub:ORG/REPO', pretrained=True)`
rebuilds exactly the exported network after `import fpnas_zoo`. Like every name in `timm.list_models()`, it also
builds by name alone: `timm.create_model('fpnas_zoo_spec')` is the FPNAS network (`GENERIC_DEFAULT_SPEC`) with
random weights, under a cfg of its own (tag `untrained`, no weights: the generic entry point's weights are those of
the export it loads).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import re
import sys
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

from .checkpoint import CheckpointError, checkpoint_filter_fn, checkpoint_spec, not_a_checkpoint, read_failure
from .model import FpnasZooNet, num_feature_levels
from .spec import ModelSpec, SpecError, bundled_specs, load_spec, spec_from_dict

REGISTRY_MODULE = "fpnas_zoo"
GENERIC_ENTRYPOINT = "fpnas_zoo_spec"  # timm name of the entry point that builds the spec given as a model argument
GENERIC_DEFAULT_SPEC = "fpnasnet"  # what the generic entry point builds without a spec (untrained)
HUB_ORG_ENV = "FPNAS_ZOO_HUB_ORG"  # point every model's weights at <org>/<model>.<tag> on the Hugging Face Hub
_REGISTERED: dict[str, ModelSpec] = {}


class PretrainedWeightsError(RuntimeError):
    """`pretrained=True` cannot be served: no weights, or nothing reachable or cached."""


def default_tag(spec: ModelSpec) -> str:
    """The tag of a model's own weights when its spec lists none (what `hub.export` names them by default)."""
    return {1000: "in1k", 10: "cifar10", 100: "cifar100"}.get(spec.num_classes, "custom")


# timm's cfgs name papers by arXiv id; FPNAS (ICCV 2019) is named by its CVF open-access page, as we could not
# confirm its arXiv id offline.
PAPER_IDS = {
    "Yan et al.": "arXiv:2011.10949",
    "Cui et al.": "https://openaccess.thecvf.com/content_ICCV_2019/html/"
                  "Cui_Fast_and_Practical_Neural_Architecture_Search_ICCV_2019_paper.html",
}
PROVENANCE_NOTES = {
    "official": "official architecture: block for block the authors' released model definition",
    "reconstructed": "reconstructed architecture: the paper publishes its size and accuracy, not its structure; "
                     "this spec is our reconstruction (see the spec's source.notes)",
    "searched": "searched architecture: found by this project's searcher, `python -m search.run`; its settings are in "
                "the spec's search field",
}


def paper_ids(spec: ModelSpec) -> str:
    return next((pid for author, pid in PAPER_IDS.items() if spec.source["paper"].startswith(author)),
                spec.source["paper"])


def provenance_note(spec: ModelSpec) -> str:
    if spec.provenance == "searched" and spec.search:
        search = spec.search
        algo = search["algorithm"].replace("_", "-")  # as --algo spells it (specs record fp_nas)
        return (f"searched architecture: found by this project's searcher, `python -m search.run --algo {algo}` on "
                f"{search['dataset']} with seed {search['seed']}; its settings are in the spec's search field")
    return PROVENANCE_NOTES.get(spec.provenance, spec.provenance)


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
        paper_ids=paper_ids(spec),
        origin_url=spec.source["repository"],
        license="apache-2.0",
        notes=(provenance_note(spec),),
    )
    cfgs = {}
    org = os.environ.get(HUB_ORG_ENV)
    for tag, weights in spec.weights.items():
        hub_id = f"{org}/{spec.name}.{tag}" if org else weights["hf_hub_id"]
        cfgs[f"{spec.name}.{tag}"] = dict(
            base, url=weights["url"] or "", hf_hub_id=hub_id, file=weights["file"],
            license=weights["license"], notes=(provenance_note(spec), weights["notes"]),
        )
    if not cfgs and org:
        tag = default_tag(spec)
        cfgs[f"{spec.name}.{tag}"] = dict(base, hf_hub_id=f"{org}/{spec.name}.{tag}")
    elif not cfgs:
        cfgs[f"{spec.name}.untrained"] = base
    return cfgs


def current_cfg(spec: ModelSpec, tag: str | None = None):
    """The spec's pretrained cfg of `tag` (None: its default), from `pretrained_cfgs` as the environment is now. A
    tag the spec does not list stays a tag, for timm to resolve (and warn about) as it does."""
    cfgs = generate_default_cfgs(pretrained_cfgs(spec))[spec.name]
    tag = cfgs.tags[0] if tag is None else tag
    if tag not in cfgs.cfgs:
        return tag
    return dataclasses.replace(cfgs.cfgs[tag], architecture=spec.name, tag=tag)  # as timm's register_model does


def check_pretrained_available(spec: ModelSpec, cfg) -> None:
    """Fail in seconds, with what to do, where timm would fail late or after a minute of retries."""
    org = os.environ.get(HUB_ORG_ENV)
    hub = (f"check that {HUB_ORG_ENV}={org} names an organisation that has pushed it" if org else
           f"set {HUB_ORG_ENV} to an organisation that has pushed it")
    how = (f"Train one (`python -m search.train --spec {spec.name} ...`) and push it (`python -m hub.push`), {hub}, "
           "or load a local file with `pretrained_cfg_overlay=dict(file='path/to/weights')`.")
    if cfg.file:
        if not os.path.exists(cfg.file):  # a file, or a `local-dir:` folder
            raise PretrainedWeightsError(f"{spec.name}: weights file {cfg.file} does not exist")
        if os.path.isfile(cfg.file) and (message := not_a_checkpoint(cfg.file)):
            raise CheckpointError(message)
        return
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str)
                     for f in ("model.safetensors", "pytorch_model.bin"))
        if not cached and constants.HF_HUB_OFFLINE:
            raise PretrainedWeightsError(f"{spec.name}: offline (HF_HUB_OFFLINE) and nothing cached for Hub repo "
                                         f"{cfg.hf_hub_id} under {constants.HF_HUB_CACHE}. {how}")
        if cached:
            return
        from huggingface_hub import get_token

        token = get_token()
        answer = _probe(f"{constants.ENDPOINT}/api/models/{cfg.hf_hub_id}", token)
        if answer == "ok":
            return
        if answer in ("401", "403"):  # the Hub answered: the repo is private or gated for this caller
            raise PretrainedWeightsError(
                f"{spec.name}: Hub repo {cfg.hf_hub_id} refused access (HTTP {answer}): it is private or gated; "
                + ("the token in use has no access to it" if token else
                   "log in (`hf auth login`) or set HF_TOKEN to a token with access"))
        raise PretrainedWeightsError(f"{spec.name}: Hub repo {cfg.hf_hub_id} is not cached under "
                                     f"{constants.HF_HUB_CACHE} and the Hub cannot be reached. {how}")
    if cfg.url:
        import torch.hub

        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path))
        if os.path.isfile(cached) or _probe(cfg.url) in ("ok", "401", "403"):
            return
        raise PretrainedWeightsError(f"{spec.name}: {cfg.url} is not cached at {cached} and cannot be reached. "
                                     f"Download it elsewhere and put it there, or {how[0].lower()}{how[1:]}")
    raise PretrainedWeightsError(f"{spec.name} has no published weights (tag {cfg.tag}). {how}")


def _probe(url: str, token: str | None = None, timeout: float = 5.0) -> str:
    """A HEAD request with a short timeout (seconds, not timm's minute of retries): 'ok', the HTTP status that
    refused it, or 'unreachable'. A token, when there is one, goes with it, so private repos answer 'ok'."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers), timeout=timeout).close()
        return "ok"
    except urllib.error.HTTPError as e:
        return "unreachable" if e.code >= 500 else ("ok" if e.code < 400 else str(e.code))
    except (OSError, ValueError):
        return "unreachable"


def create_model_from_spec(spec: ModelSpec | str | os.PathLike, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model from a spec object or a spec file, through timm's builder (features_only etc. work)."""
    if not isinstance(spec, ModelSpec):
        spec = load_spec(spec)
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(num_feature_levels(spec))))
    if kwargs.get("pretrained_cfg") is None or isinstance(kwargs["pretrained_cfg"], str):
        # The cfg is made now, not taken from what import registered, so FPNAS_ZOO_HUB_ORG set after `import
        # fpnas_zoo` counts. An unregistered spec (e.g. a search result), or one that only shares a registered
        # model's name, gets a complete cfg of its own: never the preprocessing or the weights of another network.
        kwargs["pretrained_cfg"] = current_cfg(spec, kwargs.get("pretrained_cfg"))
    if pretrained and not isinstance((kwargs.get("pretrained_cfg_overlay") or {}).get("state_dict"), dict):
        cfg = resolve_pretrained_cfg(spec.name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        check_pretrained_available(spec, cfg)
    try:
        return build_model_with_cfg(
            FpnasZooNet,
            spec.name,
            pretrained,
            spec=spec,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=feature_cfg,
            **kwargs,
        )
    except (pickle.UnpicklingError, RuntimeError) as e:  # timm reads weights with weights_only=True
        if not re.search(r"Unsupported global|weights_only=True blocked", str(e)):
            raise
        cfg = resolve_pretrained_cfg(spec.name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        raise PretrainedWeightsError(f"{spec.name}: {read_failure(cfg.file or cfg.url, e, spec.name)}") from None


def _body_shapes(state_dict: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor but the classifier's (a head adapted to another class count is no other
    architecture)."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if not k.startswith("classifier.")}


def _meta_model(spec: ModelSpec) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init
        return FpnasZooNet(spec)


def checkpoint_mismatch(checkpoint: Any, spec: ModelSpec, source: str) -> str | None:
    """None when `checkpoint` (as read from its file: any wrapping, the zoo's or the official layout) holds the
    network of `spec`, its classifier aside; else one line naming the network it holds (the spec a `search.train`
    checkpoint records, or the registered model whose tensors it has) and the one asked for with --model."""
    model = _meta_model(spec)
    try:
        state_dict = checkpoint_filter_fn(checkpoint, model)
    except CheckpointError as e:
        return f"{source}: {e}"
    body, wanted = _body_shapes(state_dict), _body_shapes(model.state_dict())
    if body == wanted:
        return None
    head = state_dict.get("classifier.weight")
    head = f" (with a {head.shape[0]}-class head)" if head is not None and head.ndim == 2 else ""
    recorded = checkpoint_spec(checkpoint)
    if recorded is not None and recorded != spec:
        held, hint = f"the network of the spec it records ({recorded.name})", (
            f"pass --model {recorded.name}" if _REGISTERED.get(recorded.name) == recorded
            else "pass --model with that spec's file (e.g. the search run's spec.json)")
    else:
        name = next((n for n, s in _REGISTERED.items() if _body_shapes(_meta_model(s).state_dict()) == body), None)
        if name is not None:
            held, hint = f"{name}'s network", f"pass --model {name}"
        else:
            key = next(k for k in sorted(body.keys() | wanted.keys()) if body.get(k) != wanted.get(k))
            held = "a network that is none of the registered zoo models"
            hint = (f"pass --model with the spec it was trained from (first difference: {key} is "
                    f"{body.get(key, 'absent')} in the checkpoint, {wanted.get(key, 'absent')} in {spec.name})")
    return f"{source}: holds {held}{head}, not the {spec.name} network that --model asks for; {hint}"


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


def fpnas_zoo_spec(pretrained: bool = False, spec: dict | str | None = None, **kwargs) -> nn.Module:
    """Any spec, given as its JSON dict (or a spec file path): what an export's config.json names as architecture.

    Without a spec, the FPNAS network (`GENERIC_DEFAULT_SPEC`) under this entry point's own cfg: random weights, as
    `timm.create_model('fpnas_zoo_spec')` gives any timm user; its published weights are `fpnasnet`'s."""
    if spec is None:
        kwargs["pretrained_cfg"] = own = resolve_pretrained_cfg(GENERIC_ENTRYPOINT, kwargs.get("pretrained_cfg"))
        cfg = resolve_pretrained_cfg(GENERIC_ENTRYPOINT, own, kwargs.get("pretrained_cfg_overlay"))  # as loaded
        if pretrained and not (cfg.file or cfg.url or cfg.hf_hub_id or isinstance(cfg.state_dict, dict)):
            raise PretrainedWeightsError(
                f"{GENERIC_ENTRYPOINT} without a spec is an untrained {GENERIC_DEFAULT_SPEC}; for its weights use "
                f"timm.create_model('{GENERIC_DEFAULT_SPEC}', pretrained=True), for an exported network "
                "timm.create_model('local-dir:DIR' or 'hf-hub:ORG/REPO', pretrained=True)")
        return create_model_from_spec(_REGISTERED[GENERIC_DEFAULT_SPEC], pretrained=pretrained, **kwargs)
    resolved = spec_from_dict(spec, file="model_args.spec") if isinstance(spec, dict) else load_spec(spec)
    return create_model_from_spec(resolved, pretrained=pretrained, **kwargs)


def generic_cfgs(default: ModelSpec) -> dict:
    """The generic entry point's cfg: the default spec's input and preprocessing, no weights of its own."""
    cfg = dict(next(iter(pretrained_cfgs(default).values())), license="apache-2.0", notes=(
        f"without a spec: {GENERIC_DEFAULT_SPEC} with random weights ({provenance_note(default)}); with a spec or "
        "from an export (`local-dir:` / `hf-hub:`): that network and its weights",))
    for weight_source in ("url", "hf_hub_id", "file"):
        cfg.pop(weight_source, None)
    return generate_default_cfgs({f"{GENERIC_ENTRYPOINT}.untrained": cfg})


def register_bundled_specs() -> None:
    for spec in bundled_specs().values():
        register_spec(spec)
    # Registered from this module (timm module name 'registry'): `list_models(module='fpnas_zoo')` stays the zoo.
    # Its cfg first, where timm looks for it (this module's `default_cfgs`), so it builds by name like any model.
    global default_cfgs
    default_cfgs = generic_cfgs(_REGISTERED[GENERIC_DEFAULT_SPEC])
    register_model(fpnas_zoo_spec)


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
                    "a registered zoo model (see `python -m fpnas_zoo list`) or a spec file path",
                    reason="no zoo model of that name, and no such file")
