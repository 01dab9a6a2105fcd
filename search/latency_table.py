"""Latency lookup tables: a search space's blocks timed on one device, and the cost model that prices a network
from them (`LatencyCost`), so both searchers can search for latency. `python -m search.latency` builds and
validates tables (its --help describes the protocol); `search.runner` prices with them.

A network's latency is predicted as the sum of its blocks plus its ends (stem, head and classifier, per last width),
times the table's correction (`scale * sum + offset_ms`, fitted by validation; 1 and 0 until then). A table records
the space, the protocol and the device: `space_refusal` and `device_refusal` say in one line why it cannot serve.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from tqdm import tqdm

from fpnas_zoo.atomic import atomic_write_text
from fpnas_zoo.latency import Protocol, device_fingerprint, measure
from fpnas_zoo.spec import ModelSpec

from .checkpointing import differences
from .cost import BlockwiseCost, build_block, entry_key

TABLE_FORMAT = "fpnas-zoo latency table"
TABLE_VERSION = 1
SAVE_EVERY_S = 30.0  # build writes the table at least this often
WITHIN = 0.10  # the share of networks predicted within +-10% is the figure of merit (nn-Meter reports it)

Timer = Callable[[nn.Module, tuple[int, int, int]], float]  # (module, input size) -> milliseconds
log = logging.getLogger(__name__)


class TableError(ValueError):
    """A table that cannot be read, or cannot be used here; the message is one line."""


def parse_ms(text: str | float) -> float:
    """'4ms', '4 ms', '4' or 4.0 -> 4.0 (milliseconds); argparse's type for the latency limits."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms)?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive time in milliseconds such as 0.25ms, got {text!r}")
    return float(m.group(1))


def _block_text(key: tuple[int, int, tuple]) -> str:
    in_chs, res, block = key
    return json.dumps([in_chs, res, [list(item) for item in block]])


def _block_from_text(text: str) -> tuple[int, int, tuple]:
    in_chs, res, block = json.loads(text)
    return entry_key(in_chs, res, dict(block))  # the canonical form: dicts that build the same module, one key


def space_identity(base: ModelSpec, space: Any) -> dict:
    """What a table's numbers depend on besides the device: the space and the fixed ends of its networks."""
    return json.loads(json.dumps({"space": space.describe(), "input_size": list(base.input_size),
                                  "num_classes": base.num_classes, "stem": base.stem, "head": base.head}))


def first_difference(a: Any, b: Any) -> str | None:
    """The first field where a table's record `a` and this machine's or search's `b` differ (None if none)."""
    found = differences(a, b, labels=("the table has", "here is"))
    return found[0] if found else None


@dataclass
class LatencyTable:
    """Block and end latencies (ms) of one space on one device under one protocol, with their provenance."""

    meta: dict
    blocks: dict[tuple[int, int, tuple], float] = field(default_factory=dict)  # (in_chs, resolution, block_key)
    ends: dict[int, float] = field(default_factory=dict)  # last width -> stem + head + classifier

    @classmethod
    def new(cls, identity: dict, build: dict, protocol: Protocol) -> LatencyTable:
        return cls({"format": TABLE_FORMAT, "version": TABLE_VERSION, "space": identity, "build": build,
                    "protocol": protocol.as_dict(), "device": device_fingerprint(protocol.runtime),
                    "created": datetime.date.today().isoformat(),
                    "correction": {"scale": 1.0, "offset_ms": 0.0, "fitted_on": 0}, "validation": None})

    @property
    def protocol(self) -> Protocol:
        return Protocol(**self.meta["protocol"])

    @property
    def correction(self) -> tuple[float, float]:
        c = self.meta["correction"]
        return c["scale"], c["offset_ms"]

    def fingerprint(self) -> str:
        """A short hash of everything a prediction depends on (entries, correction, space, protocol, device)."""
        content = {k: self.meta[k] for k in ("space", "protocol", "device", "correction")}
        content["blocks"] = sorted((_block_text(k), v) for k, v in self.blocks.items())
        content["ends"] = sorted(self.ends.items())
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {**self.meta, "fingerprint": self.fingerprint(),
                "ends": {str(w): v for w, v in sorted(self.ends.items())},
                "blocks": {_block_text(k): v for k, v in self.blocks.items()}}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, option: str = "--latency-table") -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TableError(f"{option} {path}: no such file; build one with python -m search.latency build") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TableError(f"{option} {path}: not a readable JSON latency table ({e})") from None
        return cls.from_dict(data, path, option)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path = "<dict>", option: str = "--latency-table") -> LatencyTable:
        """The table `to_dict` gave (a file's contents), checked."""
        data = dict(data) if isinstance(data, dict) else data
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise TableError(f"{option} {path}: not a latency table (expected the field format: "
                             f"{TABLE_FORMAT!r}, written by python -m search.latency build)")
        if data.get("version") != TABLE_VERSION:
            raise TableError(f"{option} {path}: table version {data.get('version')}, this version reads "
                             f"{TABLE_VERSION}; rebuild it")
        try:
            blocks = {_block_from_text(k): float(v) for k, v in data.pop("blocks").items()}
            ends = {int(w): float(v) for w, v in data.pop("ends").items()}
            data.pop("fingerprint", None)
            Protocol(**data["protocol"])
            for key in ("space", "build", "device", "correction"):
                data[key]  # noqa: B018 - present
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"{option} {path}: a damaged latency table ({type(e).__name__}: {e})") from None
        return cls(data, blocks, ends)

    def space_refusal(self, identity: dict) -> str | None:
        """Why the table cannot price networks of `identity`'s space (None if it can)."""
        diff = first_difference(self.meta["space"], identity)
        return None if diff is None else f"the table is of another space ({diff})"

    def device_refusal(self) -> str | None:
        """Why this machine cannot add to the table's numbers (None if it can): another runtime or device."""
        runtime = self.meta["protocol"]["runtime"]
        if runtime == "cuda" and not _cuda_available():
            return "the table was measured with --runtime cuda and this machine has no CUDA device"
        diff = first_difference(self.meta["device"], device_fingerprint(runtime))
        return None if diff is None else f"the table was measured on another device ({diff})"

    def describe(self) -> str:
        p, d = self.meta["protocol"], self.meta["device"]
        where = d.get("gpu") or f"{d['cpu']} ({d['cores']} cores)"
        return (f"{len(self.blocks)} blocks, {len(self.ends)} ends; {p['runtime']}, {p['threads']} thread(s), batch "
                f"{p['batch_size']}, median of {p['repeats']} passes, on {where}, {self.meta['created']}")

    def validation_line(self) -> str:
        v = self.meta.get("validation")
        if not v:
            return "not validated (python -m search.latency validate --table FILE measures how well it predicts)"
        best = v["corrected"] or v["raw"]
        return (f"validated on {v['samples']} networks: {best['within_10pct']:.0%} within +-10%, MAPE "
                f"{best['mape']:.1%}, Spearman rho {best['spearman']:.3f} (mult-adds: rho "
                f"{v['mult_adds_spearman']:.3f})")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class LatencyCost(BlockwiseCost):
    """Predicted latency (ms) of an architecture from a `LatencyTable`: correction(ends + sum of blocks).

    `timer` times what the table lacks (and the entries are added to it); without one a missing entry is a
    `TableError`."""

    unit = "ms"

    def __init__(self, base: ModelSpec, table: LatencyTable, timer: Timer | None = None):
        super().__init__(base)
        self.table, self.timer = table, timer
        self.blocks, self.ends = table.blocks, table.ends  # measurements land in the table

    def _time(self, module: nn.Module, input_size: tuple[int, int, int], what: str) -> float:
        if self.timer is None:
            raise TableError(f"the latency table has no entry for {what}; rebuild it for this space "
                             "(python -m search.latency build)")
        return self.timer(module, input_size)

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> float:
        return self._time(build_block(in_chs, block), (in_chs, resolution, resolution),
                          f"a {block['type']} block {json.dumps(block)} on a {in_chs}x{resolution}x{resolution} input")

    def measure_network(self, spec: ModelSpec) -> float:
        from fpnas_zoo import create_model_from_spec

        return self._time(create_model_from_spec(spec).eval(), tuple(spec.input_size),
                          f"the stem and head of a network ending at width {spec.blocks[-1]['out_chs']}")

    def raw_cost(self, arch: list[dict]) -> float:
        """The sum of the table's entries for `arch`, uncorrected."""
        return super().cost(arch)

    def cost(self, arch: list[dict]) -> float:
        scale, offset = self.table.correction
        return scale * self.raw_cost(arch) + offset

    def missing(self, candidates: list[list[dict]]) -> tuple[list[tuple[int, int, dict]], dict[int, list[dict]]]:
        """The entries a network of `candidates` can meet that the table lacks: blocks, and ends by last width."""
        entries, last = self.reachable(candidates)
        return ([e for e in entries if entry_key(*e) not in self.blocks],
                {w: path for w, path in last.items() if w not in self.ends})

    def fill(self, candidates: list[list[dict]], progress: bool = True,
             save: Callable[[], None] | None = None, on_first: Callable[[float, int], None] | None = None) -> int:
        """Measure every entry of `candidates` the table lacks (blocks, then ends); `save` is called every
        `SAVE_EVERY_S` seconds and at the end, `on_first(seconds, count)` after the first. Returns the count."""
        blocks, ends = self.missing(candidates)
        total, last_save = len(blocks) + len(ends), time.perf_counter()
        bar = tqdm(total=total, desc="latency entries", disable=not progress or not total, file=sys.stderr)
        for i, (in_chs, res, block) in enumerate(blocks):
            start = time.perf_counter()
            self.block_cost(in_chs, res, block)
            if i == 0 and on_first:
                on_first(time.perf_counter() - start, total)
            bar.update()
            if save and time.perf_counter() - last_save > SAVE_EVERY_S:
                save()
                last_save = time.perf_counter()
        for path in ends.values():
            self.raw_cost(path)  # the ends: the whole network less its (known) blocks
            bar.update()
        bar.close()
        if save and total:
            save()
        return total


def protocol_timer(protocol: Protocol) -> Timer:
    return lambda module, input_size: measure(module, input_size, protocol)


def random_arch(space: Any, rng: random.Random) -> list[dict]:
    """A network of `space` drawn uniformly: every choice variable of every layer (FP-NAS spaces), else every
    position's candidate."""
    if hasattr(space, "sizes") and hasattr(space, "arch_blocks"):
        return space.arch_blocks([tuple(rng.randrange(n) for n in layer) for layer in space.sizes()])
    return [rng.choice(choices) for choices in space.candidates()]


# --- agreement of predictions with measurements ---------------------------------------------------


def agreement(predicted: list[float], measured: list[float]) -> dict:
    """Mean absolute percentage error, share within +-10%, Spearman's rho of `predicted` against `measured`."""
    from scipy.stats import spearmanr

    errors = [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]
    rho = float(spearmanr(predicted, measured).statistic) if len(set(predicted)) > 1 else float("nan")
    return {"mape": statistics.fmean(errors), "within_10pct": sum(e <= WITHIN + 1e-12 for e in errors) / len(errors),
            "spearman": rho, "max_error": max(errors)}


def fit_correction(raw: list[float], measured: list[float]) -> tuple[float, float]:
    """(scale, offset) of the least-squares line measured = scale * raw + offset."""
    import numpy as np

    scale, offset = np.polyfit(np.asarray(raw, dtype=float), np.asarray(measured, dtype=float), 1)
    return float(scale), float(offset)


def leave_one_out(raw: list[float], measured: list[float]) -> list[float]:
    """Each network's prediction by a correction fitted on the others (an honest error for a fitted correction)."""
    out = []
    for i in range(len(raw)):
        scale, offset = fit_correction(raw[:i] + raw[i + 1:], measured[:i] + measured[i + 1:])
        out.append(scale * raw[i] + offset)
    return out
