"""Exporting a checkpoint to the folder layout timm loads (`python -m hub.export` is its command line): reading
checkpoints without running code (`read_checkpoint_file`, `load_model`), the model card's dataset and tag, and the
atomic `export`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn
from timm.models import save_for_hf

from fpnas_zoo import CheckpointError, checkpoint_filter_fn, count_model, create_model_from_spec, resolve_spec
from fpnas_zoo.atomic import check_out_file, make_temp_dir, new_file_mode
from fpnas_zoo.checkpoint import checkpoint_spec, load_checkpoint_file, unwrap_state_dict
from fpnas_zoo.command_line import naming
from fpnas_zoo.export import ExportError, export_onnx
from fpnas_zoo.registry import GENERIC_ENTRYPOINT, checkpoint_mismatch
from fpnas_zoo.spec import ModelSpec, SpecError

from .card import DATASETS, model_card


class HubError(ValueError):
    """An export, push or conversion that cannot go on; the message says what and why."""


def read_checkpoint_file(path: str | Path, trust_pickle: bool = False) -> dict:
    """A checkpoint file as saved (safetensors, or torch.load that never unpickles code unless `trust_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(str(path))
        return load_checkpoint_file(path, trust_pickle)
    except CheckpointError as e:
        raise HubError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or not a checkpoint at all: one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {first[:200]})") from None


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (raw, `search.train`, EMA, DDP-prefixed, or safetensors), never unpickling code."""
    checkpoint = read_checkpoint_file(path, trust_pickle)
    try:
        return unwrap_state_dict(checkpoint)
    except CheckpointError as e:
        raise HubError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or not a checkpoint at all: one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {first[:200]})") from None


def searched_network(model: str | None, checkpoint: str | Path,
                     trust_pickle: bool = False) -> tuple[str | None, Path]:
    """(model, checkpoint) to export. What a search left (`python -m search.run --out DIR`) stands for the network it
    found: DIR itself, DIR/checkpoint.pt (the supernet and the search's state, which no single network loads) and
    DIR/weights.pth without `model` all give (DIR/spec.json, DIR/weights.pth). Anything else comes back as given."""
    path = Path(checkpoint)
    folder = None
    if path.is_dir():
        folder = path
    elif model is None and path.name == "weights.pth" and (path.parent / "spec.json").is_file():
        folder = path.parent
    elif path.is_file() and (path.parent / "spec.json").is_file() and path.suffix != ".safetensors":
        raw = read_checkpoint_file(path, trust_pickle)
        if isinstance(raw, dict) and "supernet" in raw and isinstance(raw.get("identity"), dict):
            folder = path.parent
    if folder is None:
        return model, path
    spec, weights = folder / "spec.json", folder / "weights.pth"
    if not spec.is_file():
        raise HubError(f"--checkpoint {checkpoint}: a folder without spec.json; expected a checkpoint file or the "
                       "folder of a finished search (python -m search.run --out)")
    if not weights.is_file():
        raise HubError(f"--checkpoint {checkpoint}: the search left no weights.pth (searches write it when they "
                       f"finish); retrain its network and export that: python -m search.train --spec {spec} "
                       "--out RUN, then python -m hub.export --checkpoint RUN/checkpoint.pt")
    if model is not None and Path(model) != spec:
        raise HubError(f"--model {model}: --checkpoint {checkpoint} is a search, which exports the network it found "
                       f"({spec}); leave out --model")
    return str(spec), weights


def load_model(model: str | None, checkpoint: str | Path, num_classes: int | None = None,
               trust_pickle: bool = False) -> tuple[nn.Module, ModelSpec]:
    """The zoo model of `model` (name or spec file; None: the spec a `search.train` checkpoint records) holding the
    checkpoint's weights, in eval mode."""
    raw = read_checkpoint_file(checkpoint, trust_pickle)
    try:
        spec = resolve_spec(model) if model is not None else checkpoint_spec(raw)
    except SpecError as e:
        raise HubError(naming("--model", model, e) if model is not None else str(e)) from None
    if spec is None:
        raise HubError(f"{checkpoint}: records no spec (not a search.train checkpoint); pass --model NAME|SPEC.json")
    try:
        state_dict = unwrap_state_dict(raw)
    except CheckpointError as e:
        raise HubError(f"{checkpoint}: {e}") from None
    if mismatch := checkpoint_mismatch(raw, spec, str(checkpoint)):  # another network: say which, not its keys
        raise HubError(mismatch + (" or leave out --model (hub.export reads the spec it records)"
                                   if checkpoint_spec(raw) is not None else ""))
    if num_classes is None:  # search.train records the dataset's class count
        num_classes = raw.get("num_classes", spec.num_classes) if isinstance(raw, dict) else spec.num_classes
    net = create_model_from_spec(spec, num_classes=num_classes)
    try:
        state_dict = checkpoint_filter_fn(state_dict, net)
    except CheckpointError as e:
        raise HubError(f"{checkpoint}: {e}") from None
    head = state_dict.get("classifier.weight")
    if head is not None and head.shape[0] != num_classes:
        raise HubError(f"{checkpoint}: the classifier has {head.shape[0]} outputs but {spec.name} is exported with "
                       f"num_classes={num_classes}; pass --num-classes {head.shape[0]} if that is the model's head")
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise HubError(f"{checkpoint}: does not fit {spec.name} ({detail})") from None
    return net.eval(), spec


def trained_on(path: str | Path, trust_pickle: bool = False) -> str | None:
    """The dataset a `search.train` checkpoint records having trained on (None for any other checkpoint)."""
    raw = read_checkpoint_file(path, trust_pickle)
    identity = raw.get("identity") if isinstance(raw, dict) else None
    dataset = identity.get("dataset") if isinstance(identity, dict) else None
    return dataset if isinstance(dataset, str) else None


def dataset_and_tag(dataset: str | None, num_classes: int) -> tuple[str, str]:
    """The model card's dataset and the default weights tag, both named for the data the weights were trained on
    (weights trained on digits are tagged `digits`, not `cifar10`). Without a dataset (a raw state_dict) both are
    guessed from the number of classes as the registry names weights (1000 ImageNet, 10 / 100 CIFAR, else custom);
    an ImageFolder is taken for ImageNet at 1000 classes, else custom."""
    if dataset is None:
        dataset = DATASETS.get(num_classes, "custom")
    elif dataset == "imagefolder":
        dataset = "imagenet-1k" if num_classes == 1000 else "custom"
    return dataset, {"imagenet-1k": "in1k"}.get(dataset, dataset)


def read_metrics(path: str | Path | None) -> dict | None:
    """top-1 / top-5 from `search.train`'s metrics.json or `fpnas_zoo validate`'s result JSON."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f"{path}: not a readable metrics JSON ({e.__class__.__name__})") from None
    top1 = data.get("top1", data.get("val_top1"))
    if not isinstance(top1, (int, float)):
        raise HubError(f"{path}: expected a 'top1' or 'val_top1' number")
    return {"top1": float(top1), "top5": data.get("top5", data.get("val_top5")),
            "dataset": data.get("dataset"), "images": data.get("images")}


def export(model: str | None, checkpoint: str | Path, out: str | Path, tag: str | None = None,
           metrics: str | Path | None = None, num_classes: int | None = None, dataset: str | None = None,
           repo_id: str | None = None, overwrite: bool = False, trust_pickle: bool = False,
           onnx: bool = False) -> Path:
    """Write the export folder atomically; returns its path.

    config.json names the generic entry point `fpnas_zoo_spec` as architecture and carries the spec in
    `model_args`, so `timm.create_model('local-dir:OUT', pretrained=True)` rebuilds this exact network after
    `import fpnas_zoo`, registered name or not. With `onnx`, model.onnx is written too, checked against ONNX
    Runtime first.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise HubError(f"{out} already exists; choose another --out or pass --overwrite")
    try:  # before the checkpoint is read: a folder that can be written beside
        check_out_file(out, "--out", folder_ok=True)
    except ValueError as e:
        raise HubError(str(e)) from None
    model, checkpoint = searched_network(model, checkpoint, trust_pickle)
    net, spec = load_model(model, checkpoint, num_classes, trust_pickle)
    scores = read_metrics(metrics)
    dataset, dataset_tag = dataset_and_tag(dataset or (scores or {}).get("dataset") or
                                           trained_on(checkpoint, trust_pickle) or (spec.search or {}).get("dataset"),
                                           net.num_classes)
    tag = tag or dataset_tag
    tmp = make_temp_dir(out)
    try:
        save_for_hf(net, tmp, safe_serialization=True,
                    model_config={"pretrained_cfg": {"architecture": GENERIC_ENTRYPOINT, "tag": tag}},
                    model_args={"spec": spec.to_dict(), "num_classes": net.num_classes})
        if onnx:  # checked against ONNX Runtime before it is written; a failure stops the whole export
            try:
                export_onnx(net, tmp / "model.onnx", name=spec.name)
            except ExportError as e:
                raise HubError(str(e)) from None
        card = model_card(spec, count_model(net, spec.input_size), repo_id or f"{spec.name}.{tag}", tag,
                          net.num_classes, scores, dataset, onnx=onnx)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        mode = new_file_mode(out.parent)  # safetensors writes its file 0600; shared as open() would
        for path in tmp.iterdir():
            path.chmod(mode)
        if out.exists():  # --overwrite: swap, so a failure leaves the old folder in place
            old = out.with_name(f".{out.name}.old")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
