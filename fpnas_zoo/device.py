"""The `--device` of every command: a device this machine has, or one line saying why not."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None, option: str = "--device") -> torch.device:
    """`device` as a torch.device (None: cuda when available, else cpu); ValueError naming `option` for a name torch
    does not know (`tpu`) or a device this machine does not have (`cuda` without a GPU, `cuda:3` on two)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} {device}: not a device name torch knows (expected cpu, cuda, cuda:N, mps, "
                         "...)") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, torch.xpu, ...: each says what is there
    available = getattr(backend, "is_available", None)
    if available is None:  # meta, lazy, ...: torch knows them, but they hold no data to run on
        raise ValueError(f"{option} {device}: not a device this command runs on (expected cpu, cuda, cuda:N, mps, "
                         "...)")
    if not available():
        raise ValueError(f"{option} {device}: this machine has no {dev.type} device (torch.{dev.type}.is_available() "
                         f"is False); use {option} cpu")
    count = getattr(backend, "device_count", lambda: 1)()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{option} {device}: this machine has {count} {dev.type} device(s), numbered from 0")
    return dev
