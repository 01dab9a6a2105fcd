"""Latency lookup tables: a search space's blocks timed on this device, so both searchers can search for latency.

    python -m search.latency build --space fbnetv2-f --preset demo --runtime onnxruntime --threads 1 \\
        --batch-size 1 --out lut.json
    python -m search.latency validate --table lut.json --samples 50
    python -m search.run --algo fp-nas --preset demo --cost latency --latency-table lut.json --latency-target 0.25ms \\
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
import random
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from fpnas_zoo.atomic import check_out_file
from fpnas_zoo.command_line import ArgumentParser
from fpnas_zoo.latency import RUNTIMES, Protocol

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
    leave_one_out,
    parse_ms,  # noqa: F401 - the latency limits' type, known here by its old home
    protocol_timer,
    random_arch,
    space_identity,
)

# --- the commands ---------------------------------------------------------------------------------


def _protocol(args: argparse.Namespace) -> Protocol:
    return Protocol(runtime=args.runtime, threads=args.threads, batch_size=args.batch_size, warmup=args.warmup,
                    repeats=args.repeats, channels_last=args.channels_last).check()


def cmd_build(args: argparse.Namespace) -> int:
    protocol = _protocol(args)
    check_out_file(args.out, "--out")  # before any block is timed
    options = {name: getattr(args, name) for name in SPACE_OPTIONS}
    space, base = space_from_options(options)
    identity, out = space_identity(base, space), Path(args.out)
    if out.exists():
        table = LatencyTable.load(out, "--out")
        why = table.space_refusal(identity) or table.device_refusal()
        if not why and table.meta["protocol"] != protocol.as_dict():
            why = ("the table was measured with another protocol "
                   f"({first_difference(table.meta['protocol'], protocol.as_dict())})")
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
    check_out_file(args.table, "--table")  # updated in place, with its plot beside it
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
    timer = protocol_timer(protocol)  # blocks and whole networks timed alike
    cost, flops = LatencyCost(base, table, timer), MultAddsCost(base)
    from fpnas_zoo import create_model_from_spec

    raw, measured, mult_adds, added = [], [], [], 0
    for arch in tqdm(archs, desc="whole networks", disable=args.no_progress, file=sys.stderr):
        before = len(table.blocks) + len(table.ends)
        raw.append(cost.raw_cost(arch))
        added += len(table.blocks) + len(table.ends) - before
        spec = cost.spec(arch)
        measured.append(timer(create_model_from_spec(spec).eval(), tuple(spec.input_size)))
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
        return error(e)


if __name__ == "__main__":
    sys.exit(main())

