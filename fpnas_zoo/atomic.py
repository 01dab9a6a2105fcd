"""Atomic file writes: a temp file in the target folder, then a rename, so readers never see half a file."""
from __future__ import annotations

import copy
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any


def check_out_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """ValueError naming `option` when `path` cannot be the folder a command writes into: it, or the nearest of its
    parents that exists, is a file, or it cannot be made or written into.

    Checked by doing it, as the command would (permissions alone do not tell: root may write anywhere but /proc):
    the folders missing are made, a probe file is written into the last, and all of it is removed again, so the
    check leaves nothing behind. A command calls it before any work: no epoch is lost to a typo in `--out`."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise ValueError(f"{option} {path}: {where}; expected a folder (new or existing) to write into")
    _probe_folder(path, option, path)


def check_out_file(path: str | os.PathLike, option: str = "--out", folder_ok: bool = False) -> None:
    """ValueError naming `option` when `path` cannot be written as a new file (or, with `folder_ok`, a folder renamed
    into place) beside its siblings: it is a folder (without `folder_ok`), or its folder cannot be made or written
    into (`check_out_folder`'s probe, which leaves nothing behind)."""
    path = Path(path)
    if path.is_dir() and not folder_ok:
        raise ValueError(f"{option} {path}: is a folder; expected the path of a file to write")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{option} {path}: is inside {existing}, which is a file; expected a path in a folder")
    _probe_folder(path.parent, option, path)


def _probe_folder(folder: Path, option: str, shown: Path) -> None:
    """Make `folder` (and the parents it lacks), write and delete a probe file in it, then remove the folders made;
    ValueError naming `option` and the user's path `shown` when any of it fails."""
    made: list[Path] = []
    try:
        for _ in range(3):  # another process (a torchrun rank) may remove a folder it made between our steps
            missing = [p for p in (folder, *folder.parents) if not p.exists()]
            for p in reversed(missing):
                try:
                    p.mkdir()
                    made.append(p)
                except FileExistsError:
                    pass
                except OSError as e:
                    where = "the folder" if p == shown else f"the folder {p}"
                    raise ValueError(f"{option} {shown}: cannot create {where} ({e.strerror or e})") from None
            try:
                fd, probe = _open_temp(folder / "write-probe")
            except OSError as e:
                if isinstance(e, FileNotFoundError) and not folder.is_dir():
                    continue
                where = "the folder" if folder == shown else f"the folder {folder}"
                raise ValueError(f"{option} {shown}: cannot write into {where} ({e.strerror or e})") from None
            os.close(fd)
            probe.unlink()
            return
        raise ValueError(f"{option} {shown}: cannot write into {folder} (it keeps disappearing)")
    finally:
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:  # another writer put something there meanwhile: theirs now
                pass


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def make_temp_dir(path: str | os.PathLike) -> Path:
    """A new, empty folder beside `path` (same parent, a hidden temp name) to fill and then rename onto `path`.

    Made with `os.mkdir`, so it has the mode the user's umask gives, as any folder a command makes;
    `tempfile.mkdtemp` would make it 0700 and the renamed result readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_name(path)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:  # another writer's temp name: draw again
            continue


def new_file_mode(folder: str | os.PathLike) -> int:
    """The mode `open()` gives a new file in `folder` (0666 less the umask), read off a probe file: for files that
    a writer outside the project (safetensors' `save_file`) leaves private. (Reading the umask itself means
    setting it, which races with other threads.)"""
    fd, probe = _open_temp(Path(folder) / "mode-probe")
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink()


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path`, opened for writing, with the mode `open(path, "wb")` would give it: the mode
    of the file it replaces, else 0666 less the umask (`tempfile.mkstemp`'s 0600 would make every result private)."""
    while True:
        tmp = _temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:  # another writer's temp name: draw again
            continue
        try:
            os.chmod(fd if os.chmod in os.supports_fd else tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:  # a new file: the umask's mode, which os.open applied
            pass
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cpu_tensors(obj: Any) -> Any:
    """`obj` with every tensor inside its dicts, lists and tuples moved to the CPU; the rest as it is.

    `torch.load` puts a tensor back on the device it was saved from, so a file of CUDA tensors does not load on a
    machine without CUDA unless every reader passes `map_location`. Dicts are copied with their attributes (a
    `state_dict`'s `_metadata` stays)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        out = copy.copy(obj)
        for key, value in obj.items():
            out[key] = cpu_tensors(value)
        return out
    if isinstance(obj, list):
        return [cpu_tensors(v) for v in obj]
    if isinstance(obj, tuple):
        values = [cpu_tensors(v) for v in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else type(obj)(values)  # namedtuples take fields
    return obj


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """`torch.save(obj, path)` of CPU tensors (`cpu_tensors`), atomically (serialised in memory first, so a failure
    leaves no file). Every tensor file of the zoo and the searchers is written here, so every one loads on a CPU."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(cpu_tensors(obj), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
