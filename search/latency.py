"""Latency lookup tables: a search space's blocks timed on this device, so both searchers can search for latency.

    python -m search.latency build --space fbnetv2-f --preset demo --runtime onnxruntime --threads 1 \\
        --batch-size 1 --out lut.json
    python -m search.latency validate --table lut.json --samples 50
    python -m search.run --algo fp-nas --preset demo --cost latency --latency-table lut.json --latency-target 4ms \\
        --out runs/lat

The protocol (`fpnas_zoo.latency`, the same one `python -m fpnas_zoo list --latency` uses): each block is the
zoo's own module for its (input width, input resolution, block dict), in eval mode with BatchNorm folded as a
deployment has it, timed on a seeded random input at a fixed batch size and thread count: `--warmup` passes
dropped, then the median of `--repeats` passes, in milliseconds. `--runtime onnxruntime` times what
`python -m fpnas_zoo export` deploys (each block exported through the project's exporter, about 2 s a block on a
laptop CPU); `eager` times PyTorch; `cuda` times with CUDA events, synchronised. The stem, head and classifier
are timed per last width as a whole network less its blocks.

A network's latency is predicted as the sum of its blocks plus its ends, times the table's correction
(`scale * sum + offset_ms`, fitted by `validate` when the sum misses whole networks systematically; 1 and 0
until then). `build` counts the entries the space can meet and prints the time it expects, shows a progress
bar, writes the table atomically every few entries and continues a table it finds at `--out`. `validate` times N
random networks of the space whole and prints predicted against measured (mean absolute percentage error, share
within +-10%, Spearman rho, and the rho of mult-adds against measured latency), stores that in the table and
plots it beside the table (lut.json -> lut.png).

The table records the space, the protocol and the device (processor, cores, torch / ONNX Runtime versions, GPU):
a search refuses a table of another space or device in one line, and measures an entry the table lacks (on the
device it was built on) and adds it.
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
from fpnas_zoo.latency import RUNTIMES, Protocol, device_fingerprint, measure
from fpnas_zoo.spec import ModelSpec

from .checkpointing import differences
from .cost import BlockwiseCost, MultAddsCost, build_block, entry_key

TABLE_FORMAT = "fpnas-zoo latency table"
TABLE_VERSION = 1
SAVE_EVERY_S = 30.0  # build writes the table at least this often
WITHIN = 0.10  # the share of networks predicted within +-10% is the figure of merit (nn-Meter reports it)
CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "cluttered-digits": 10}  # imagefolder: --num-classes

Timer = Callable[[nn.Module, tuple[int, int, int]], float]  # (module, input size) -> milliseconds
log = logging.getLogger(__name__)


class TableError(ValueError):
    """A table that cannot be read, or cannot be used here; the message is one line."""


def parse_ms(text: str | float) -> float:
    """'4ms', '4 ms', '4' or 4.0 -> 4.0 (milliseconds); argparse's type for the latency limits."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms)?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive time in milliseconds such as 4ms, got {text!r}")
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


def _first_difference(a: Any, b: Any) -> str | None:
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
        diff = _first_difference(self.meta["space"], identity)
        return None if diff is None else f"the table is of another space ({diff})"

    def device_refusal(self) -> str | None:
        """Why this machine cannot add to the table's numbers (None if it can): another runtime or device."""
        runtime = self.meta["protocol"]["runtime"]
        if runtime == "cuda" and not _cuda_available():
            return "the table was measured with --runtime cuda and this machine has no CUDA device"
        diff = _first_difference(self.meta["device"], device_fingerprint(runtime))
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


# --- the space a table is built for ---------------------------------------------------------------

SPACE_OPTIONS = ("space", "preset", "dataset", "image_size", "width_mult", "stem_stride", "num_classes")


def space_from_options(options: dict) -> tuple[Any, ModelSpec]:
    """(space, base spec) of `--space` under `--preset` with the other `SPACE_OPTIONS`, as `search.run` builds it
    for the same options (without loading the data: the image size and class count are the dataset's)."""
    from fpnas_zoo import spec_from_dict

    from .cost import _METADATA
    from .data import DataSpec, input_resolution
    from .run import ALGORITHMS, build_parser, settings_from_args

    algo = "fpnas" if options["space"] == "fpnas" else "fp-nas"
    argv = ["--algo", algo, "--preset", options["preset"], "--out", "-"]
    if algo == "fp-nas":
        argv += ["--space", options["space"]]
    for name in ("dataset", "image_size", "width_mult", "stem_stride"):
        if options.get(name) is not None:
            if name in ("image_size", "width_mult") and algo == "fpnas":
                raise ValueError(f"--{name.replace('_', '-')} is an option of the FP-NAS spaces, not of --space fpnas")
            argv += [f"--{name.replace('_', '-')}", str(options[name])]
    with _argparse_errors():
        settings = settings_from_args(build_parser().parse_args(argv))
    classes = CLASSES.get(settings.dataset) or options.get("num_classes") or 1000
    res = input_resolution(settings.dataset, getattr(settings, "image_size", None))
    data = DataSpec(settings.dataset, classes, (3, res, res), (0.5,) * 3, (0.5,) * 3)
    space = ALGORITHMS[algo].make_space(settings, data)
    base = spec_from_dict(space.spec_dict(space.default_blocks(), "probe", data.mean, data.std, dict(_METADATA)))
    return space, base


class _argparse_errors:
    """search.run's parser exits on a bad value; here that becomes a ValueError with its message."""

    def __enter__(self):
        import contextlib
        import io

        self._stderr = contextlib.redirect_stderr(io.StringIO())
        self._buffer = self._stderr.__enter__()

    def __exit__(self, kind, error, tb):
        self._stderr.__exit__(kind, error, tb)
        if kind is SystemExit and error.code:
            lines = [line for line in self._buffer.getvalue().splitlines() if "error:" in line]
            raise ValueError(lines[-1].split("error:", 1)[1].strip() if lines else "bad option") from None
        return False


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


# --- the commands ---------------------------------------------------------------------------------


def _protocol(args: argparse.Namespace) -> Protocol:
    return Protocol(runtime=args.runtime, threads=args.threads, batch_size=args.batch_size, warmup=args.warmup,
                    repeats=args.repeats, channels_last=args.channels_last).check()


def cmd_build(args: argparse.Namespace) -> int:
    protocol = _protocol(args)
    options = {name: getattr(args, name) for name in SPACE_OPTIONS}
    space, base = space_from_options(options)
    identity, out = space_identity(base, space), Path(args.out)
    if out.exists():
        table = LatencyTable.load(out, "--out")
        why = table.space_refusal(identity) or table.device_refusal()
        if not why and table.meta["protocol"] != protocol.as_dict():
            why = ("the table was measured with another protocol "
                   f"({_first_difference(table.meta['protocol'], protocol.as_dict())})")
        if why:
            raise TableError(f"--out {out} holds a table it cannot continue: {why}; choose another --out")
        print(f"continuing {out}: {len(table.blocks)} blocks and {len(table.ends)} ends there")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        table = LatencyTable.new(identity, options, protocol)
    cost = LatencyCost(base, table, protocol_timer(protocol))
    entries, last = cost.reachable(space.candidates())
    blocks, ends = cost.missing(space.candidates())
    print(f"{args.space} ({args.preset} preset): {len(entries)} block entries and {len(last)} ends "
          f"(last widths {sorted(last)}); {len(blocks) + len(ends)} to measure with {protocol.runtime}, "
          f"{protocol.threads} thread(s), batch {protocol.batch_size}, {protocol.warmup} + {protocol.repeats} passes "
          "each")

    def estimate(seconds: float, total: int) -> None:
        print(f"the first entry took {seconds:.2f} s: about {seconds * total / 60:.1f} min for {total}", flush=True)

    cost.fill(space.candidates(), progress=not args.no_progress, save=lambda: table.save(out), on_first=estimate)
    table.save(out)
    print(f"wrote {out}: {table.describe()}")
    print(f"check it: python -m search.latency validate --table {out} --samples 50")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    if args.samples < 3:
        raise ValueError(f"--samples must be at least 3 (a correction is fitted on the others), got {args.samples}")
    table = LatencyTable.load(args.table, "--table")
    why = table.device_refusal()
    if why:
        raise TableError(f"--table {args.table}: {why}; validate it on the device it was built on")
    protocol = table.protocol
    space, base = space_from_options(table.meta["build"])
    why = table.space_refusal(space_identity(base, space))
    if why:
        raise TableError(f"--table {args.table}: its recorded build options give another space ({why})")
    rng = random.Random(args.seed)
    archs = [random_arch(space, rng) for _ in range(args.samples)]
    cost, flops = LatencyCost(base, table, protocol_timer(protocol)), MultAddsCost(base)
    from fpnas_zoo import create_model_from_spec

    raw, measured, mult_adds, added = [], [], [], 0
    for arch in tqdm(archs, desc="whole networks", disable=args.no_progress, file=sys.stderr):
        before = len(table.blocks) + len(table.ends)
        raw.append(cost.raw_cost(arch))
        added += len(table.blocks) + len(table.ends) - before
        spec = cost.spec(arch)
        measured.append(measure(create_model_from_spec(spec).eval(), tuple(spec.input_size), protocol))
        mult_adds.append(flops.cost(arch))
    plain = agreement(raw, measured)
    scale, offset = fit_correction(raw, measured)
    held_out = agreement(leave_one_out(raw, measured), measured)
    use_fit = not args.no_fit and held_out["mape"] < plain["mape"]
    table.meta["correction"] = ({"scale": scale, "offset_ms": offset, "fitted_on": len(raw)} if use_fit else
                                {"scale": 1.0, "offset_ms": 0.0, "fitted_on": 0})
    table.meta["validation"] = {
        "samples": len(raw), "seed": args.seed, "date": datetime.date.today().isoformat(), "raw": plain,
        "corrected": held_out if use_fit else None, "mult_adds_spearman": agreement(mult_adds, measured)["spearman"],
        "measured_ms": {"min": min(measured), "median": statistics.median(measured), "max": max(measured)},
        "networks": [{"predicted_sum_ms": r, "measured_ms": m, "mult_adds": f}
                     for r, m, f in zip(raw, measured, mult_adds, strict=True)],
    }
    table.save(args.table)
    from .plots import write_latency_validation_plot

    plot = write_latency_validation_plot(table.meta["validation"], table.meta["correction"],
                                         f"{args.table}: {table.describe()}", Path(args.table).with_suffix(".png"))
    print(f"{args.table}: {args.samples} random networks of {table.meta['build']['space']}, measured "
          f"{min(measured):.3f}..{max(measured):.3f} ms ({protocol.runtime}, {protocol.threads} thread(s), batch "
          f"{protocol.batch_size}){f'; {added} missing entries measured and added' if added else ''}")
    print(f"  sum of blocks:      MAPE {plain['mape']:.1%}, {plain['within_10pct']:.0%} within +-10%, "
          f"Spearman rho {plain['spearman']:.3f}, worst {plain['max_error']:.0%}")
    if use_fit:
        print(f"  corrected ({scale:.3f} x sum {offset:+.3f} ms, leave-one-out): MAPE {held_out['mape']:.1%}, "
              f"{held_out['within_10pct']:.0%} within +-10%, Spearman rho {held_out['spearman']:.3f}; stored in the "
              "table, searches use it")
    else:
        print(f"  a fitted correction would not help (leave-one-out MAPE {held_out['mape']:.1%}): none stored")
    print(f"  mult-adds against measured latency: Spearman rho {table.meta['validation']['mult_adds_spearman']:.3f}")
    print(f"  plot: {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="time every block a search space can meet on this device")
    b.add_argument("--space", required=True, help="fpnas (the FPNASNet skeleton of --algo fpnas) or an FP-NAS "
                   "space of --algo fp-nas (fbnetv2-f, fbnetv2-f++, ...)")
    b.add_argument("--preset", default="demo", help="the search.run preset whose space (and dataset) to use "
                   "(default demo)")
    b.add_argument("--dataset", help="the dataset whose image size and class count the space is built for (default: "
                   "the preset's)")
    b.add_argument("--image-size", type=int, help="FP-NAS spaces on imagefolder: the resolution")
    b.add_argument("--width-mult", type=float, help="FP-NAS spaces: the width multiplier")
    b.add_argument("--stem-stride", type=int, choices=(1, 2), help="the stem's stride, over the space's")
    b.add_argument("--num-classes", type=int, help="imagefolder: the class count (default 1000)")
    b.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES,
                   help="onnxruntime (what fpnas_zoo export deploys), eager (PyTorch) or cuda (default onnxruntime)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    b.add_argument("--batch-size", type=int, default=1, help="default 1")
    b.add_argument("--warmup", type=int, default=10, help="passes run before timing (default 10)")
    b.add_argument("--repeats", type=int, default=50, help="timed passes; the median is kept (default 50)")
    b.add_argument("--channels-last", action="store_true", help="eager and cuda: channels_last")
    b.add_argument("--out", required=True, help="the table (JSON); an existing table of the same space, protocol "
                   "and device is continued")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(fn=cmd_build)
    v = sub.add_parser("validate", help="predicted against measured latency of random whole networks")
    v.add_argument("--table", required=True, help="a table written by build (it is updated: validation, correction)")
    v.add_argument("--samples", type=int, default=50, help="random networks (default 50)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-fit", action="store_true", help="store no correction, whatever the fit gives")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(fn=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

