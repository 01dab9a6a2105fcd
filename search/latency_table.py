"""Latency lookup tables: a search space's blocks timed on one device, and the cost model that prices a network
from them (`LatencyCost`), so both searchers can search for latency. `python -m search.latency` builds and
validates tables (its --help describes the protocol); `search.runner` prices with them.

A network's latency is predicted as the sum of its blocks plus its ends (stem, head and classifier, per last width),
times the table's correction (`scale * sum + offset_ms`, fitted by validation on calibration networks; 1 and 0 until
then). Entries are timed by `time_modules`: in chunks, each chunk in interleaved sweeps with a reference block
checking for a slow stretch of the machine (`fpnas_zoo.latency.measure_interleaved`); each entry keeps its windows
(passes, spread, start times) in `timings`. Under ONNX Runtime every isolated block pays one session run that a block
inside a network does not: that run overhead (an identity graph, timed the same way) is taken off every block
entry, so a network's one run is counted once, in its ends. A table records the space, the protocol and the device:
`space_refusal` and `device_refusal` say in one line why it cannot serve.
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
from fpnas_zoo.latency import Prepared, Protocol, Timing, cached_onnx, device_fingerprint, measure_interleaved
from fpnas_zoo.spec import ModelSpec

from .checkpointing import differences
from .cost import BlockwiseCost, build_block, entry_key

TABLE_FORMAT = "fpnas-zoo latency table"
TABLE_VERSION = 2  # 2: timings and the run overhead recorded; version 1 tables are read
READS = (1, 2)
CHUNK = 48  # entries prepared and timed together (ONNX Runtime: one session each in memory)
REFERENCE_EVERY = 8  # module windows between two windows of the reference
DRIFT = 0.15  # a reference window this much slower than its fastest marks a slow stretch
WITHIN = 0.10  # the share of networks predicted within +-10% is the figure of merit (nn-Meter reports it)

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
    timings: dict[str, dict] = field(default_factory=dict)  # entry text ('block ...', 'end W') -> its Timing's dict

    @classmethod
    def new(cls, identity: dict, build: dict, protocol: Protocol) -> LatencyTable:
        return cls({"format": TABLE_FORMAT, "version": TABLE_VERSION, "space": identity, "build": build,
                    "protocol": protocol.as_dict(), "device": device_fingerprint(protocol.runtime),
                    "created": datetime.date.today().isoformat(),
                    "correction": {"scale": 1.0, "offset_ms": 0.0, "fitted_on": 0}, "validation": None,
                    "run_overhead": None})

    @property
    def protocol(self) -> Protocol:
        return Protocol.from_dict(self.meta["protocol"])

    @property
    def run_overhead_ms(self) -> float:
        """What an isolated block's entry had taken off (ONNX Runtime's run overhead; 0 for other runtimes)."""
        return (self.meta.get("run_overhead") or {}).get("ms", 0.0)

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
        return {**self.meta, "version": TABLE_VERSION, "fingerprint": self.fingerprint(),
                "ends": {str(w): v for w, v in sorted(self.ends.items())},
                "blocks": {_block_text(k): v for k, v in self.blocks.items()}, "timings": self.timings}

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
        if data.get("version") not in READS:
            raise TableError(f"{option} {path}: table version {data.get('version')}, this version reads "
                             f"{' and '.join(map(str, READS))}; rebuild it")
        try:
            blocks = {_block_from_text(k): float(v) for k, v in data.pop("blocks").items()}
            ends = {int(w): float(v) for w, v in data.pop("ends").items()}
            timings = dict(data.pop("timings", {}))
            data.pop("fingerprint", None)
            Protocol.from_dict(data["protocol"])
            for key in ("space", "build", "device", "correction"):
                data[key]  # noqa: B018 - present
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"{option} {path}: a damaged latency table ({type(e).__name__}: {e})") from None
        return cls(data, blocks, ends, timings)

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
        d = self.meta["device"]
        where = d.get("gpu") or f"{d['cpu']} ({d['cores']} cores)"
        return (f"{len(self.blocks)} blocks, {len(self.ends)} ends; {self.protocol.describe()}; on {where}, "
                f"{self.meta['created']}")

    def validation_line(self) -> str:
        v = self.meta.get("validation")
        if not v:
            return "not validated (python -m search.latency validate --table FILE measures how well it predicts)"
        best = v["corrected"] or v["raw"]
        ceiling = v.get("retest")
        return (f"validated on {v['samples']} networks: {best['within_10pct']:.0%} within +-10%, MAPE "
                f"{best['mape']:.1%}, Spearman rho {best['spearman']:.3f} (mult-adds: rho "
                f"{v['mult_adds_spearman']:.3f}" + (f"; the machine's test-retest of one window: "
                f"{ceiling['within_10pct']:.0%} within +-10%, rho {ceiling['spearman']:.3f})" if ceiling else ")"))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class LatencyCost(BlockwiseCost):
    """Predicted latency (ms) of an architecture from a `LatencyTable`: correction(ends + sum of blocks).

    With a `protocol`, what the table lacks is timed with it (and the entries are added to the table); without one a
    missing entry is a `TableError`."""

    unit = "ms"

    def __init__(self, base: ModelSpec, table: LatencyTable, protocol: Protocol | None = None):
        super().__init__(base)
        self.table, self.protocol = table, protocol
        self.blocks, self.ends = table.blocks, table.ends  # measurements land in the table

    def _refuse(self, what: str) -> None:
        if self.protocol is None:
            raise TableError(f"the latency table has no entry for {what}; rebuild it for this space "
                             "(python -m search.latency build)")

    def _block_module(self, in_chs: int, resolution: int, block: dict) -> tuple[nn.Module, tuple[int, int, int], str]:
        return build_block(in_chs, block), (in_chs, resolution, resolution), _block_text(entry_key(in_chs, resolution,
                                                                                                  block))

    def _overhead(self) -> float:
        """ONNX Runtime's run overhead, timed once per table (when its first block is)."""
        if self.protocol.runtime != "onnxruntime":
            return 0.0
        if not self.table.meta.get("run_overhead"):
            timing = time_modules({"overhead": (nn.Identity(), (8, 8, 8), None)}, self.protocol)["overhead"]
            self.table.meta["run_overhead"] = timing.as_dict()
        return self.table.run_overhead_ms

    def _store_blocks(self, timings: dict[str, Timing], keys: dict[str, tuple]) -> None:
        overhead = self.table.run_overhead_ms
        for text, timing in timings.items():
            self.blocks[keys[text]] = max(0.0, timing.ms - overhead)
            self.table.timings[f"block {text}"] = timing.as_dict()

    def measure_block(self, in_chs: int, resolution: int, block: dict) -> float:
        self._refuse(f"a {block['type']} block {json.dumps(block)} on a {in_chs}x{resolution}x{resolution} input")
        self._overhead()
        module, size, text = self._block_module(in_chs, resolution, block)
        self._store_blocks(time_modules({text: (module, size, text)}, self.protocol),
                           {text: entry_key(in_chs, resolution, block)})
        return self.blocks[entry_key(in_chs, resolution, block)]

    @staticmethod
    def network_module(spec: ModelSpec) -> tuple[nn.Module, tuple[int, int, int], None]:
        """A whole network as `time_modules` takes it (not exported through the cache: whole networks are not
        entries)."""
        from fpnas_zoo import create_model_from_spec

        return create_model_from_spec(spec).eval(), tuple(spec.input_size), None

    def measure_network(self, spec: ModelSpec) -> float:
        width = spec.blocks[-1]["out_chs"]
        self._refuse(f"the stem and head of a network ending at width {width}")
        timing = time_modules({0: self.network_module(spec)}, self.protocol)[0]
        self.table.timings[f"end {width}"] = timing.as_dict()
        return timing.ms

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
        """Time every entry of `candidates` the table lacks, in chunks of `CHUNK` blocks timed together with a
        reference block, then the ends (whole networks, timed together, less their blocks); `save` is called after
        each chunk and at the end, `on_first(seconds, count)` after the first chunk with the seconds per entry.
        Returns the count."""
        blocks, ends = self.missing(candidates)
        total = len(blocks) + len(ends)
        if not total:
            return 0
        self._refuse("the entries this space needs")
        bar = tqdm(total=total * self.protocol.windows, desc="latency windows", disable=not progress, file=sys.stderr)
        self._overhead()
        pick = sorted(blocks or self.reachable(candidates)[0], key=lambda e: e[0] * e[1] ** 2)
        reference = self._block_module(*pick[len(pick) // 2])
        checks: list[dict] = []
        for start in range(0, len(blocks), CHUNK):
            began = time.perf_counter()
            chunk = {}
            for in_chs, res, block in blocks[start:start + CHUNK]:
                module, size, text = self._block_module(in_chs, res, block)
                chunk[text] = (module, size, text, entry_key(in_chs, res, block))
            timings = time_modules({t: c[:3] for t, c in chunk.items()}, self.protocol, seed=start,
                                   reference=reference, checks=checks, progress=bar.update)
            self._store_blocks(timings, {t: c[3] for t, c in chunk.items()})
            if start == 0 and on_first:
                on_first((time.perf_counter() - began) / len(chunk), total)
            if save:
                save()
        if ends:
            nets = {w: self.network_module(self.spec(path)) for w, path in ends.items()}
            timings = time_modules(nets, self.protocol, seed=len(blocks), progress=bar.update)
            for w, path in ends.items():
                self.ends[w] = timings[w].ms - sum(self.block_costs(path))
                self.table.timings[f"end {w}"] = timings[w].as_dict()
        bar.close()
        if save:
            save()
        return total


def time_modules(modules: dict[Any, tuple[nn.Module, tuple[int, int, int], str | None]], protocol: Protocol,
                 seed: int = 0, reference: tuple[nn.Module, tuple[int, int, int], str | None] | None = None,
                 checks: list[dict] | None = None, progress: Callable[[], None] | None = None) -> dict[Any, Timing]:
    """Each (module, input size, export cache key or None) of `modules` timed under `protocol` in interleaved
    sweeps (`measure_interleaved`), with `reference` checking for slow stretches: the one place a table's entries
    and validation networks are timed (the tests replace it by a fake clock)."""

    def ready(module: nn.Module, size: tuple[int, int, int], key: str | None) -> Prepared:
        exported = cached_onnx(module, size, key, protocol.exporter) if key and protocol.runtime == "onnxruntime" \
            else None
        return Prepared(module, size, protocol, exported)

    prepared = {name: ready(*spec) for name, spec in modules.items()}
    timings, _ = measure_interleaved(prepared, protocol, seed=seed, reference=reference and ready(*reference),
                                     reference_every=REFERENCE_EVERY, drift=DRIFT, progress=progress, checks=checks)
    return timings


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
    """(scale, offset) of the line measured = scale * raw + offset by Theil-Sen (the median of the pairwise slopes,
    then the median of measured - slope * raw): a few networks timed in a slow stretch do not tilt it, as they would
    a least-squares line."""
    from scipy.stats import theilslopes

    slope, intercept, *_ = theilslopes(measured, raw, method="joint")
    return float(slope), float(intercept)


def retest_agreement(timings: list[Timing]) -> dict | None:
    """The machine's test-retest ceiling over networks each timed in at least two sweeps: `agreement` of every
    network's window in the second sweep with its window in the first (steady windows first; None with fewer than
    3 networks timed twice). A predictor cannot agree with the measurements better than they agree with themselves."""
    pairs = []
    for timing in timings:
        by_sweep: dict[int, dict] = {}
        for w in sorted(timing.windows, key=lambda w: bool(w.get("drifted"))):
            by_sweep.setdefault(w.get("sweep", 0), w)
        if len(by_sweep) >= 2:
            first, second = (by_sweep[s]["median_ms"] for s in sorted(by_sweep)[:2])
            pairs.append((second, first))
    if len(pairs) < 3:
        return None
    return {**agreement([a for a, _ in pairs], [b for _, b in pairs]), "networks": len(pairs)}
