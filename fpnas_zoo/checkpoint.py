"""Checkpoint filter: maps the state_dict layouts we accept onto the zoo's module names.

Accepted: the zoo's own layout, and the official FPNASNet layout (`features.N...`,
jiequancui/FPNASNet), either raw or wrapped in `state_dict` / `model` / EMA keys, with or
without `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Any

import torch
import torch.nn as nn

from .spec import ModelSpec, spec_from_dict

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")

# Official sub-module names -> ours, per block type (the layers of an nn.Sequential in FPNASNet.py).
_OFFICIAL_BLOCK_KEYS = {
    "ds": {"0": "conv_dw", "1": "bn1", "3": "conv_pw", "4": "bn2"},
    "fpnas": {
        "conv.0": "conv_pw", "conv.1": "bn1", "conv.3": "conv_dw", "conv.4": "bn2", "conv.6": "conv_pwl",
        "conv.7": "bn3", "shortcutSeq.0": "shortcut.conv", "shortcutSeq.1": "shortcut.bn",
        "splitSeq.0": "split_branch.conv_dw", "splitSeq.1": "split_branch.bn1",
        "splitSeq.3": "split_branch.conv_pw", "splitSeq.4": "split_branch.bn2",
    },
}
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def checkpoint_format(path: str | os.PathLike) -> str | None:
    """What a file's first bytes say it is: 'zip' (torch.save), 'pickle' (torch.save's legacy format), 'tar'
    (torch.save's oldest), 'safetensors', or None: no checkpoint format at all (an image, a text, an empty file)."""
    with open(path, "rb") as f:
        head = f.read(264)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle protocol 2-5
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    if len(head) > 9 and int.from_bytes(head[:8], "little") > 0 and head[8:9] == b"{":  # JSON header length
        return "safetensors"
    return None


def not_a_checkpoint(path: str | os.PathLike, label: str | None = None) -> str | None:
    """One line when the file at `path` is no checkpoint at all (named `label`, e.g. the option that gave it),
    else None."""
    if checkpoint_format(path) is not None:
        return None
    with open(path, "rb") as f:
        head = f.read(8)
    what = f"it starts with the bytes {head!r}" if head else "it is empty"
    return (f"{label or path}: not a checkpoint: expected a file written by torch.save (or a .safetensors file), "
            f"but {what}")


def read_failure(path: str | os.PathLike, error: BaseException, model: str | None = None) -> str:
    """The one line for a checkpoint file that `torch.load` (or timm's loader around it) could not read: no
    checkpoint at all, a pickle that `weights_only=True` refuses (and how to convert it deliberately), or a
    damaged one."""
    if os.path.isfile(path) and (message := not_a_checkpoint(path)):
        return message
    cause = error.__cause__ or error
    if "Unsupported global" in f"{error} {cause}":
        return pickle_refusal(path, error, model)
    text = str(cause).strip()
    detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text else ""
    return f"{path}: not a readable checkpoint ({cause.__class__.__name__}{': ' + detail if detail else ''})"


def pickle_refusal(path: str | os.PathLike, error: BaseException, model: str | None = None) -> str:
    """What a file that `torch.load(weights_only=True)` refuses holds, and how to convert it deliberately."""
    text = f"{error} {error.__cause__ or ''}"
    listed = re.search(r"Unsupported globals: (.*?)\.(?:\s|$)", text)  # timm lists every one it found
    names = listed.group(1).split(", ") if listed else re.findall(r"Unsupported global: GLOBAL ([\w.]+)", text)
    names = [n for n in names if n != "argparse.Namespace"] or names  # allowed by timm and by us
    what = f"pickled Python objects ({', '.join(names)})" if names else "pickled Python objects"
    if model in (None, "fpnasnet"):
        command = f"python -m hub.convert --official-fpnasnet {path} --trust-pickle --out DIR"
    else:
        command = f"python -m hub.export --model {model} --checkpoint {path} --trust-pickle --out DIR"
    return (f"{path}: holds {what}, not only tensors; weights_only=True refuses to unpickle it because unpickling can "
            f"run code. If you trust its source, convert it once, deliberately: `{command}` (classes it pickles must "
            "be importable), then load DIR with `local-dir:DIR`")


def load_checkpoint_file(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """`torch.load` of a checkpoint on the CPU; with `trust_pickle=False` (the default) it never runs code."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # as timm: training args are plain data
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - no checkpoint, refused, damaged: one line that says which
        raise CheckpointError(read_failure(path, e)) from None


def checkpoint_spec(checkpoint: Any) -> ModelSpec | None:
    """The spec a `search.train` checkpoint was trained from (it records it under `identity`), else None."""
    identity = checkpoint.get("identity") if isinstance(checkpoint, dict) else None
    spec = identity.get("spec") if isinstance(identity, dict) else None
    return spec_from_dict(spec, file="checkpoint identity.spec") if isinstance(spec, dict) else None


def unwrap_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Take the tensors out of a training checkpoint and strip wrapper prefixes from their keys."""
    state_dict = checkpoint
    if isinstance(state_dict, nn.Module):  # a whole pickled model (read with trust_pickle=True)
        state_dict = state_dict.state_dict()
    for key in WRAPPER_KEYS:
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"expected a state_dict (a dict of tensors), got {type(state_dict).__name__}")
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"expected a state_dict (a dict of tensors), but key {key!r} holds a {type(value).__name__}"
            )
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def is_official_fpnasnet(state_dict: dict) -> bool:
    return any(k.startswith("features.") for k in state_dict) and not any(k.startswith("blocks.") for k in state_dict)


def convert_official_fpnasnet(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename official FPNASNet keys (`features.0` stem, `features.1..N` blocks, `features.N+1` head)."""
    block_names = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    block_types = [b["type"] for b in model.spec.blocks]
    head_index = len(block_names) + 1
    official_head = max(int(k.split(".")[1]) for k in state_dict if k.startswith("features."))
    if official_head != head_index:
        raise CheckpointError(
            f"official FPNASNet checkpoint has {official_head - 1} blocks after the stem, "
            f"model {model.spec.name} has {len(block_names)}"
        )
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"features\.(\d+)\.(.+)\." + _PARAM, key)
        if m:
            index, inner, param = int(m.group(1)), m.group(2), m.group(3)
            if index == 0:
                mapped = {"0": "conv_stem", "1": "bn1"}.get(inner)
            elif index == head_index:
                mapped = {"0": "conv_head", "1": "bn2"}.get(inner)
            else:
                inner_name = _OFFICIAL_BLOCK_KEYS.get(block_types[index - 1], {}).get(inner)
                mapped = inner_name and f"{block_names[index - 1]}.{inner_name}"
            if mapped is None:
                raise CheckpointError(f"official FPNASNet key {key!r} has no counterpart in {model.spec.name}")
            out[f"{mapped}.{param}"] = value
        elif key.startswith("classifier.1."):
            out["classifier." + key[len("classifier.1."):]] = value
        else:
            raise CheckpointError(f"unexpected key {key!r} in an official FPNASNet checkpoint")
    return out


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """timm `pretrained_filter_fn`: any accepted layout -> the zoo's keys."""
    state_dict = unwrap_state_dict(state_dict)
    if is_official_fpnasnet(state_dict):
        return convert_official_fpnasnet(state_dict, model)
    return state_dict
