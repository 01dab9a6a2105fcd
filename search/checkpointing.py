"""Search checkpoints and the trace log: atomic writes, and refusal to resume another run's checkpoint."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fpnas_zoo.atomic import atomic_torch_save, atomic_write_text

from .distributed import DistInfo


class ResumeError(ValueError):
    """A checkpoint cannot be resumed by this run (another algorithm, space, dataset or seed)."""


def _refusal(path: Path, saved: dict, current: dict) -> str | None:
    """One line for what no resume can cross: a supernet of another layout (`search.supernet.LAYOUT_VERSION`),
    another number of processes (BatchNorm statistics and each rank's random state are per process)."""
    if saved.get("algorithm") != current.get("algorithm") and "algorithm" in current:
        shown = str(saved.get("algorithm")).replace("_", "-")  # as --algo spells it (checkpoints record fp_nas)
        return (f"{path} holds an {shown} search, and this run is --algo {str(current['algorithm']).replace('_', '-')}"
                f": resume it with --algo {shown}, or choose another --out")
    if "supernet_layout" in current and saved.get("supernet_layout") != current["supernet_layout"]:
        layout = saved.get("supernet_layout") or "from before layouts were numbered"
        return (f"{path} holds a supernet of layout {layout}, written by another version of search; this version "
                f"uses layout {current['supernet_layout']} and cannot resume it: start again in another --out")
    if "world_size" in current and saved.get("world_size") != current["world_size"]:
        if saved.get("world_size") is None:
            return (f"{path} does not record how many processes wrote it (an older version of search): it cannot be "
                    "resumed; start again in another --out")
        count = f"{saved['world_size']} process" + ("es" if saved["world_size"] != 1 else "")
        return (f"{path} was written by {count} and this run has {current['world_size']}: resume it with torchrun "
                f"--nproc_per_node {saved['world_size']} (another number of processes trains differently)")
    return None


def differences(saved: Any, current: Any, path: str = "",
                labels: tuple[str, str] = ("checkpoint has", "this run has")) -> list[str]:
    """Every field (dotted path) where two JSON-like records differ, as 'path: <labels[0]> a, <labels[1]> b'."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += differences(saved.get(key), current.get(key), f"{path}.{key}" if path else key, labels)
        return out
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))  # tuples vs lists
    return [] if saved == current else [f"{path}: {labels[0]} {saved!r}, {labels[1]} {current!r}"]


class Checkpointer:
    """One checkpoint file holding `identity` (what the run is) and a payload (where it is). `upgrade` brings the
    identity of a checkpoint written by an earlier version (and the rest of its payload) to today's names before the
    two are compared."""

    def __init__(self, path: Path, identity: dict, enabled: bool = True,
                 upgrade: Callable[[dict, dict], dict] | None = None):
        self.path, self.identity, self.enabled = Path(path), identity, enabled
        self.upgrade = upgrade or (lambda identity, payload: identity)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, payload: dict) -> None:
        if not self.enabled:
            return
        atomic_torch_save(self.path, {"identity": self.identity, **payload})

    def load(self) -> dict:
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ResumeError(f"{self.path}: not a readable search checkpoint ({e.__class__.__name__}: {e})") from None
        saved = self.upgrade(payload.get("identity"), payload)
        refusal = _refusal(self.path, saved, self.identity) if isinstance(saved, dict) else None
        if refusal:
            raise ResumeError(refusal)
        found = differences(saved, self.identity)
        if found:
            raise ResumeError(f"{self.path} belongs to another search; refusing to resume:\n  " + "\n  ".join(found))
        return payload

    def load_on_every_rank(self, dist: DistInfo) -> dict | None:
        """The checkpoint as rank 0 reads it, handed to every rank (ranks share no filesystem); None if there is
        none. A checkpoint that cannot be resumed raises ResumeError on every rank, so none waits for the others."""
        payload, error = None, None
        if dist.is_main and self.exists():
            try:
                payload = self.load()
            except ResumeError as e:
                error = e
        payload, error = dist.broadcast_object((payload, error))
        if error is not None:
            raise error
        return payload


class Trace:
    """`trace.jsonl`: one JSON object per line (epochs, candidates, decisions), readable while a run goes on."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.lines = 0
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1

    def truncate(self, lines: int) -> None:
        """Drop what an interrupted run wrote after its last checkpoint."""
        self.lines = lines
        if self.enabled and self.path.exists():
            kept = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
            atomic_write_text(self.path, "".join(kept))


def recorded_cost(record: dict) -> float:
    """A trace record's or a result's cost in the unit searched (those written before latency searches hold it as
    mult_adds)."""
    return record["cost"] if "cost" in record else record["mult_adds"]


def read_trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
