"""Top-1 / top-5 of a zoo model on an ImageFolder directory, with the model's own preprocessing.

`python -m fpnas_zoo validate --model fpnasnet --data-dir imagenet/val --pretrained` is how the official
FPNASNet weights are checked against their 73.34%. Class indices follow ImageFolder's sorted folder names
(ImageNet's synset folders sort into the usual 1000-class order).
"""
from __future__ import annotations

import time
from pathlib import Path

import timm
import torch
from timm.data import create_transform, resolve_data_config
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint_file, not_a_checkpoint
from .device import resolve_device
from .registry import checkpoint_mismatch, create_model_from_spec, resolve_spec


def build_eval_model(model: str, pretrained: bool = False, checkpoint: str | None = None,
                     num_classes: int | None = None) -> torch.nn.Module:
    """A registered name, a spec path, or an export (`local-dir:DIR`, `hf-hub:ORG/REPO`, always with its weights);
    weights from its registry cfg, or from a checkpoint file (any accepted layout, through the zoo's checkpoint
    filter) whose classifier has `num_classes` outputs (default: the spec's)."""
    if model.startswith(("local-dir:", "hf-hub:")):
        if checkpoint is not None:
            raise ValueError(f"--checkpoint: {model} carries its own weights; pass one or the other")
        return timm.create_model(model, pretrained=True)
    spec = resolve_spec(model)
    kwargs = {}
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
        if message := not_a_checkpoint(checkpoint, label=f"--checkpoint {checkpoint}"):
            raise CheckpointError(message)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint))
        if num_classes is not None:  # the weights' head: timm keeps a classifier whose size its cfg states
            kwargs["num_classes"] = kwargs["pretrained_cfg_overlay"]["num_classes"] = num_classes
        pretrained = True
    try:
        if model == spec.name:
            return timm.create_model(model, pretrained=pretrained, **kwargs)
        return create_model_from_spec(spec, pretrained=pretrained, **kwargs)
    except RuntimeError as e:  # weights that do not fit: say which network they are, not which keys they lack
        if checkpoint is None or "Error(s) in loading state_dict" not in str(e):
            raise
        if mismatch := checkpoint_mismatch(load_checkpoint_file(checkpoint), spec, f"--checkpoint {checkpoint}"):
            raise CheckpointError(mismatch) from None
        raise


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    data_dir: str,
    batch_size: int = 64,
    workers: int = 2,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate `model` on an ImageFolder tree; returns counts, top-1 and top-5 in percent."""
    device = resolve_device(device)
    data_config = resolve_data_config(model=model)
    dataset = ImageFolder(data_dir, transform=create_transform(**data_config, is_training=False))
    num_classes = model.num_classes
    if len(dataset.classes) > num_classes:
        raise ValueError(f"{data_dir}: {len(dataset.classes)} class folders, but the model has {num_classes} classes")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    correct1 = correct5 = seen = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"validate {model.pretrained_cfg.get('architecture')}", unit="batch", disable=not progress)
    for images, labels in bar:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        top5 = model(images).topk(min(5, num_classes), dim=1).indices
        hits = top5 == labels[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        seen += labels.numel()
        bar.set_postfix(top1=f"{100 * correct1 / seen:.2f}", top5=f"{100 * correct5 / seen:.2f}")
    return {
        "images": seen,
        "classes": len(dataset.classes),
        "top1": 100.0 * correct1 / max(seen, 1),
        "top5": 100.0 * correct5 / max(seen, 1),
        "seconds": round(time.perf_counter() - start, 3),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
    }
