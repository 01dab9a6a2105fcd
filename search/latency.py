"""Latency lookup tables: a search space's blocks timed on this device, so both searchers can search for latency.

    python -m search.latency build --space fbnetv2-f --preset demo --runtime onnxruntime --threads 1 \\
        --batch-size 1 --out lut.json
    python -m search.latency validate --table lut.json --samples 50
    python -m search.run --algo fp-nas --preset demo --cost latency --latency-table lut.json --latency-target 0.25ms \\
        --out runs/lat

The protocol (`fpnas_zoo.latency`, the same one `python -m fpnas_zoo list --latency` uses): each block is the
zoo's own module for its (input width, input resolution, block dict), in eval mode with BatchNorm folded as a
deployment has it, timed on a seeded random input at a fixed batch size and thread count, in `--windows` windows
(each a warm-up, then at least `--repeats` passes and `--window-s` seconds; garbage collection off, one thread
pinned to one core), the latency being the 20th percentile of the window medians. Entries are timed in chunks,
each chunk in interleaved sweeps of random order with a reference block every few windows: windows timed while the
machine ran slow are timed again and left out. `--runtime onnxruntime` times what `python -m fpnas_zoo export`
deploys (each block exported through the project's exporter, about 2 s a block on a laptop CPU, once: exports are
kept in ~/.cache/fpnas_zoo/onnx, or $FPNAS_ZOO_CACHE/onnx, so a resumed or rebuilt table does not export again),
less the run overhead of one session run (an identity graph timed the same way), which a block inside a network
does not pay; `eager` times PyTorch; `cuda` times with CUDA events, synchronised. The stem, head and classifier
are timed per last width as a whole network less its blocks. Every entry keeps its windows (passes, spread, start
times) in the table's `timings`.

A network's latency is predicted as the sum of its blocks plus its ends, times the table's correction
(`scale * sum + offset_ms`). `build` counts the entries the space can meet and prints the time it expects, shows a
progress bar, writes the table atomically after every chunk and continues a table it finds at `--out`. `validate`
times `--samples` random networks of the space whole and `--calibration` other random networks, all together in
at least two interleaved sweeps. The correction is fitted (Theil-Sen) on the calibration networks only; predicted
against measured is reported on the validation networks, raw and corrected (mean absolute percentage error, share
within +-10%, Spearman rho, and the rho of mult-adds against measured latency), beside the machine's test-retest
of one window: how well each validation network's window in the second sweep agrees with its window in the first.
The latency kept, a quantile over all of a network's windows, repeats better than one window does, so a predictor
can beat that figure; it says how noisy a single window is on this machine. All of it, each network's
architecture and windows included, is stored in the table and plotted beside it (lut.json -> lut.png).

The table records the space, the protocol and the device (processor, cores, torch / ONNX Runtime versions, GPU):
a search refuses a table of another space or device in one line, and measures an entry the table lacks (on the
device it was built on) and adds it.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from fpnas_zoo.atomic import check_out_file
from fpnas_zoo.command_line import ArgumentParser
from fpnas_zoo.latency import add_protocol_arguments, protocol_from_args

from . import latency_table
from .algorithms import SPACE_OPTIONS, space_from_options
from .cli_common import error
from .cost import MultAddsCost
from .latency_table import (
    LatencyCost,
    LatencyTable,
    TableError,
    agreement,
    first_difference,
    fit_correction,
    parse_ms,  # noqa: F401 - the latency limits' type, known here by its old home
    random_arch,
    retest_agreement,
    space_identity,
)

# --- the commands ---------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    protocol = protocol_from_args(args)
    check_out_file(args.out, "--out")  # before any block is timed
    options = {name: getattr(args, name) for name in SPACE_OPTIONS}
    space, base = space_from_options(options)
    identity, out = space_identity(base, space), Path(args.out)
    if out.exists():
        table = LatencyTable.load(out, "--out")
        why = table.space_refusal(identity) or table.device_refusal()
        if not why and table.protocol != protocol:
            diff = first_difference(table.protocol.as_dict(), protocol.as_dict())
            why = f"the table was measured with another protocol ({diff})"
        if why:
            raise TableError(f"--out {out} holds a table it cannot continue: {why}; choose another --out")
        print(f"continuing {out}: {len(table.blocks)} blocks and {len(table.ends)} ends there")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        table = LatencyTable.new(identity, options, protocol)
    cost = LatencyCost(base, table, protocol)
    entries, last = cost.reachable(space.candidates())
    blocks, ends = cost.missing(space.candidates())
    print(f"{args.space} ({args.preset} preset): {len(entries)} block entries and {len(last)} ends "
          f"(last widths {sorted(last)}); {len(blocks) + len(ends)} to measure: {protocol.describe()}")

    def estimate(seconds: float, total: int) -> None:
        print(f"the first chunk took {seconds:.2f} s an entry: about {seconds * total / 60:.1f} min for {total}",
              flush=True)

    cost.fill(space.candidates(), progress=not args.no_progress, save=lambda: table.save(out), on_first=estimate)
    table.save(out)
    print(f"wrote {out}: {table.describe()}")
    print(f"check it: python -m search.latency validate --table {out} --samples 50")
    return 0


def _draw(space, rng: random.Random, count: int, taken: set[str]) -> list[list[dict]]:
    """`count` random networks of `space`, none of them in `taken` (their JSON), each added to it."""
    archs, tries = [], 0
    while len(archs) < count and tries < 100 * count:
        arch, tries = random_arch(space, rng), tries + 1
        text = json.dumps(arch, sort_keys=True)
        if text not in taken:
            taken.add(text)
            archs.append(arch)
    return archs


def cmd_validate(args: argparse.Namespace) -> int:
    if args.samples < 3:
        raise ValueError(f"--samples must be at least 3, got {args.samples}")
    if args.calibration != 0 and args.calibration < 3:
        raise ValueError(f"--calibration must be 0 (no correction) or at least 3 networks, got {args.calibration}")
    table = LatencyTable.load(args.table, "--table")
    check_out_file(args.table, "--table")  # updated in place, with its plot beside it
    why = table.device_refusal()
    if why:
        raise TableError(f"--table {args.table}: {why}; validate it on the device it was built on")
    protocol = table.protocol
    space, base = space_from_options(table.meta["build"])
    why = table.space_refusal(space_identity(base, space))
    if why:
        raise TableError(f"--table {args.table}: its recorded build options give another space ({why})")
    rng, taken = random.Random(args.seed), set()
    archs = _draw(space, rng, args.samples, taken)
    calibration = _draw(space, rng, args.calibration, taken)  # disjoint from the validation networks
    reference = _draw(space, rng, 1, taken)
    cost, flops = LatencyCost(base, table, protocol), MultAddsCost(base)
    before = len(table.blocks) + len(table.ends)
    raw = [cost.raw_cost(arch) for arch in archs]
    raw_calibration = [cost.raw_cost(arch) for arch in calibration]
    added = len(table.blocks) + len(table.ends) - before

    def network(arch: list[dict]) -> tuple:
        return cost.network_module(cost.spec(arch))

    sweeps = dataclasses.replace(protocol, windows=max(2, protocol.windows))  # a retest for every network
    nets = {("validation", i): network(a) for i, a in enumerate(archs)}
    nets.update({("calibration", i): network(a) for i, a in enumerate(calibration)})
    bar = tqdm(total=len(nets) * sweeps.windows, desc="whole networks (windows)", disable=args.no_progress,
               file=sys.stderr)
    timings = latency_table.time_modules(nets, sweeps, seed=args.seed,  # one place to time (the tests' fake)
                           reference=network(reference[0]) if reference else None, progress=bar.update)
    bar.close()
    measured = [timings[("validation", i)].ms for i in range(len(archs))]
    measured_calibration = [timings[("calibration", i)].ms for i in range(len(calibration))]
    mult_adds = [flops.cost(arch) for arch in archs]
    plain = agreement(raw, measured)
    fitted = len(calibration) >= 3 and not args.no_fit  # a small space may hold fewer networks than asked for
    scale, offset = fit_correction(raw_calibration, measured_calibration) if fitted else (1.0, 0.0)
    corrected = agreement([scale * r + offset for r in raw], measured) if fitted else None
    retest = retest_agreement([timings[("validation", i)] for i in range(len(archs))])
    table.meta["correction"] = ({"scale": scale, "offset_ms": offset, "fitted_on": len(calibration),
                                 "fit": "Theil-Sen on calibration networks"} if fitted else
                                {"scale": 1.0, "offset_ms": 0.0, "fitted_on": 0})
    table.meta["validation"] = {
        "samples": len(archs), "calibration": len(calibration), "seed": args.seed,
        "date": datetime.date.today().isoformat(), "protocol": sweeps.as_dict(), "raw": plain,
        "corrected": corrected, "retest": retest,
        "mult_adds_spearman": agreement(mult_adds, measured)["spearman"],
        "measured_ms": {"min": min(measured), "median": statistics.median(measured), "max": max(measured)},
        "networks": [{"arch": arch, "predicted_sum_ms": r, "measured_ms": m, "mult_adds": f,
                      "timing": timings[("validation", i)].as_dict()}
                     for i, (arch, r, m, f) in enumerate(zip(archs, raw, measured, mult_adds, strict=True))],
        "calibration_networks": [{"arch": arch, "predicted_sum_ms": r, "measured_ms": m,
                                  "timing": timings[("calibration", i)].as_dict()}
                                 for i, (arch, r, m) in enumerate(zip(calibration, raw_calibration,
                                                                      measured_calibration, strict=True))],
    }
    table.save(args.table)
    from .plots import write_latency_validation_plot

    plot = write_latency_validation_plot(table.meta["validation"], table.meta["correction"],
                                         f"{args.table}: {table.describe()}", Path(args.table).with_suffix(".png"))
    print(f"{args.table}: {len(archs)} random networks of {table.meta['build']['space']} (and {len(calibration)} "
          f"calibration networks), measured {min(measured):.3f}..{max(measured):.3f} ms ({sweeps.describe()})"
          f"{f'; {added} missing entries measured and added' if added else ''}")
    print(f"  sum of blocks:      MAPE {plain['mape']:.1%}, {plain['within_10pct']:.0%} within +-10%, "
          f"Spearman rho {plain['spearman']:.3f}, worst {plain['max_error']:.0%}")
    if corrected:
        print(f"  corrected ({scale:.3f} x sum {offset:+.3f} ms, fitted on the calibration networks): MAPE "
              f"{corrected['mape']:.1%}, {corrected['within_10pct']:.0%} within +-10%, Spearman rho "
              f"{corrected['spearman']:.3f}; stored in the table, searches use it")
    else:
        print("  no correction fitted (--calibration 0 or --no-fit): searches use the sum")
    if retest:
        print(f"  test-retest of one window (each network's second sweep against its first; the latency kept, over "
              f"all windows, repeats better): {retest['within_10pct']:.0%} within +-10%, Spearman rho "
              f"{retest['spearman']:.3f}, MAPE {retest['mape']:.1%}")
    print(f"  mult-adds against measured latency: Spearman rho {table.meta['validation']['mult_adds_spearman']:.3f}")
    print(f"  plot: {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m search.latency", description=__doc__)
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
    add_protocol_arguments(b)
    b.add_argument("--out", required=True, help="the table (JSON); an existing table of the same space, protocol "
                   "and device is continued")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(fn=cmd_build)
    v = sub.add_parser("validate", help="predicted against measured latency of random whole networks")
    v.add_argument("--table", required=True, help="a table written by build (it is updated: validation, correction)")
    v.add_argument("--samples", type=int, default=50, help="random networks predicted and measured (default 50)")
    v.add_argument("--calibration", type=int, default=20, help="other random networks, disjoint from those, that the "
                   "correction is fitted on (default 20; 0: no correction)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-fit", action="store_true", help="store no correction (the calibration networks are still "
                   "timed and stored)")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(fn=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        return error(e)


if __name__ == "__main__":
    sys.exit(main())

