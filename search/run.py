"""`python -m search.run`: run a searcher; its output is a zoo spec.

Two algorithms of two papers with similar names:
  --algo fpnas    Cui et al., "Fast and Practical Neural Architecture Search" (ICCV 2019): block-wise coordinate
                  descent over the FPNASNet skeleton, hard mult-adds budget (--mult-adds-budget).
  --algo fp-nas   Yan et al., "FP-NAS: Fast Probabilistic Neural Architecture Search" (CVPR 2021): a probability
                  distribution over FBNetV2-style spaces (--space), adaptive sampling, coarse-to-fine
                  distributions, soft mult-adds target (--mult-adds-target).

    python -m search.run --algo fpnas --preset demo --out runs/demo             # CPU, embedded data, minutes
    python -m search.run --algo fpnas --dataset cifar10 --data-dir ~/data --preset paper --mult-adds-budget 300e6 \\
        --out runs/c10
    python -m search.run --algo fp-nas --preset demo --out runs/demo-fp-nas     # CPU, embedded data, minutes
    python -m search.run --algo fp-nas --space fbnetv2-f++ --preset paper --dataset imagefolder \\
        --data-dir ~/imagenet100 --mult-adds-target 238e6 --out runs/s4
    torchrun --nproc_per_node 8 -m search.run --algo fpnas ...                  # many GPUs, same command
    python -m search.run ... --resume                                            # continue an interrupted search
    torchrun --max-restarts 3 --nproc_per_node 8 -m search.run ... --resume     # restarted and resumed on a crash

Hardware-aware: search for latency measured on this device instead of mult-adds, from a table of the space's
blocks timed here (`python -m search.latency --help` explains the protocol):
    python -m search.latency build --space fbnetv2-f --preset demo --runtime onnxruntime --out lut.json
    python -m search.run --algo fp-nas --preset demo --cost latency --latency-table lut.json --latency-target 0.25ms \\
        --out runs/lat
A limit must lie inside the range of the space's networks on the device: 0.25 ms does for this space under ONNX
Runtime on a 2-core x86-64 CPU (2026-11-29, bench/results/2026-11-29-latency-tables.md); elsewhere a limit outside
the range is refused in one line that gives the range.

`--out` receives spec.json (provenance 'searched'), weights.pth (the supernet's weights of the network found),
trace.jsonl, plots/*.png and checkpoint.pt. `python -m hub.export --checkpoint OUT --out EXPORT` exports the network
found with those weights, in the layout timm loads.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# latency_limit, own_options and settings_from_args: scripts and tests import them from here too
from fpnas_zoo.command_line import ArgumentParser

from .algorithms import ALGORITHMS, latency_limit, limit_stated_at, own_options, settings_from_args  # noqa: F401
from .checkpointing import ResumeError
from .cli_common import (
    add_device_argument,
    add_dist_timeout_argument,
    add_resume_argument,
    add_threads_argument,
    add_workers_argument,
    as_typed,
    check_before_work,
    error,
)
from .data import DATASETS, OFFLINE_DATASETS
from .distributed import cleanup, init_distributed
from .engine import cpu_threads
from .latency_table import parse_ms
from .runner import COSTS, SearchRunner, SearchSettings
from .selection import BAND, FIRST_EPOCHS, SELECTS, SHARE, SHORTLIST


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m search.run", description=__doc__)
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default="fpnas",
                   help="; ".join(f"{name}: {cls.summary}" for name, cls in ALGORITHMS.items()) + ". Default: fpnas")
    presets = sorted({name for cls in ALGORITHMS.values() for name in cls.presets})
    p.add_argument("--preset", choices=presets,
                   help="paper: the paper's settings; demo: CPU minutes on embedded data; smoke: seconds. Default: "
                        "paper when --dataset names a real dataset (cifar10, cifar100, imagefolder), else demo. A "
                        "preset's mult-adds limit is stated for its own dataset's resolution: on another it is moved "
                        "to the same point of the space's cost range there")
    p.add_argument("--out", required=True, help="output folder (spec.json, trace.jsonl, plots/, checkpoint.pt)")
    p.add_argument("--dataset", choices=DATASETS,
                   help="default: the preset's (digits: scikit-learn's embedded 8x8 digits; cluttered-digits: a "
                        "harder task made from them, with a test split no search sees; both offline)")
    p.add_argument("--data-dir", help="where the dataset lives (downloaded there when online, for CIFAR)")
    p.add_argument("--mult-adds-budget", "--flops-budget", type=float, dest="mult_adds_budget",
                   help="--algo fpnas: mult-adds budget b: candidates at or over it get reward -1 under the default "
                        "--reward paper (--flops-budget is its older name)")
    g = p.add_argument_group("hardware-aware search (latency measured on this device, python -m search.latency)")
    g.add_argument("--cost", choices=COSTS, help="what the budget / target limits: mult-adds (default), or latency "
                   "predicted by --latency-table (the search refuses a table of another space or device)")
    g.add_argument("--latency-table", help="--cost latency: the table python -m search.latency build wrote")
    g.add_argument("--table-of-another-device", action="store_true", default=None,
                   help="--cost latency: search with a --latency-table measured on another device (a phone's table "
                        "on a server), priced as it is: it must hold every entry of the space, and the result's "
                        "latency is not measured here")
    g.add_argument("--latency-budget", type=parse_ms, metavar="MS",
                   help="--algo fpnas with --cost latency: the hard budget in milliseconds (e.g. 0.35ms), inside the "
                        "range of the space's networks on this device")
    g.add_argument("--latency-target", type=parse_ms, metavar="MS",
                   help="--algo fp-nas with --cost latency: the soft target of the cost term in milliseconds")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--stem-stride", type=int, choices=(1, 2),
                   help="the stem's stride, over the space's (2 searches a 32-px task at half resolution)")
    p.add_argument("--width-mult", type=float, help="scale every width of the space (default the preset's)")
    for cls in ALGORITHMS.values():
        cls.add_arguments(p)
    g = p.add_argument_group("select: after the search (docs/search.md, search/selection.py)")
    g.add_argument("--select", choices=SELECTS,
                   help=f"none: the network the searcher ends with (the papers'; default). halving: choose again, as "
                        f"SPOS and Once-for-All do after their supernets: networks costing [{BAND[0]:g}, {BAND[1]:g}] "
                        f"x the limit (the searcher's first) scored on the supernet, the best --select-shortlist of "
                        f"them trained alone in successive halving (--select-epochs, then twice and 4 times as many, "
                        f"...; the better half goes on); the best by validation is the result. An option to measure, "
                        f"not the papers'")
    g.add_argument("--select-share", type=float, metavar="F",
                   help=f"--select halving: its fraction of the whole search's wall time, in (0, 1): the stage gets "
                        f"F / (1 - F) x the time the search took and starts no training it predicts will end past "
                        f"that (default {SHARE:g})")
    g.add_argument("--select-shortlist", type=int, metavar="M",
                   help=f"--select halving: networks handed from the supernet's scores to successive halving "
                        f"(twice as many are scored; default {SHORTLIST})")
    g.add_argument("--select-epochs", type=int, metavar="E",
                   help=f"--select halving: epochs of each network's training alone in the first round; round r "
                        f"trains E x 2^r (default {FIRST_EPOCHS}). More when --limit-train leaves few steps per epoch")
    p.add_argument("--batch-size", type=int,
                   help="images per training step (under torchrun, stage 1 shares each batch out over the processes)")
    p.add_argument("--limit-train", type=int, help="use only this many training images (smoke runs)")
    p.add_argument("--limit-val", type=int, help="use only this many validation images")
    add_device_argument(p)
    add_workers_argument(p)
    add_threads_argument(p)
    add_dist_timeout_argument(p)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="--algo fpnas: torch.compile each stage-2 candidate (stage 1's supernet runs eager); refused "
                        "by --algo fp-nas, whose every step is new graphs. On a 2-core CPU a compile takes about a "
                        "minute per network and training is no faster (bench/results/2026-11-29-compile-cost.md)")
    add_resume_argument(p, "search")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p


# The mult-adds limits' older names, still accepted (an error names an option as the command line gave it).
OLD_NAMES = {"--mult-adds-budget": "--flops-budget", "--mult-adds-target": "--flops-target"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        settings = settings_from_args(args)
        check_before_work(args)
    except ValueError as e:
        return error(as_typed(str(e), argv, OLD_NAMES))
    with cpu_threads(args.threads, small_workload=settings.dataset in OFFLINE_DATASETS):
        return _search(args, settings, argv)


def _top1(value: float | None) -> str:
    """The supernet's validation top-1 of the network found, as the summary line prints it."""
    return "no validation top-1" if value is None else f"val top-1 {value:.2f}%"


def _search(args: argparse.Namespace, settings: SearchSettings, argv: list[str]) -> int:
    out = Path(args.out)
    # Under torchrun only rank 0 writes OUT (no filesystem shared between ranks is assumed): it answers for all.
    dist = init_distributed(args.device, args.dist_timeout)
    if not args.resume and dist.broadcast_object((out / "checkpoint.pt").exists()):
        return error(f"{out} already holds a search (checkpoint.pt); pass --resume to continue it or choose another "
                     "--out")
    try:
        search = SearchRunner(ALGORITHMS[args.algo], settings, out, data_dir=args.data_dir, device=args.device,
                              workers=args.workers, progress=not args.no_progress,
                              recipe_overrides=dict(amp=not args.no_amp, channels_last=args.channels_last,
                                                    compile=args.compile),
                              limit_stated_at=limit_stated_at(args))
        spec = search.run(resume=args.resume)
    except (ResumeError, ValueError, FileNotFoundError) as e:
        return error(as_typed(str(e), argv, OLD_NAMES))
    if dist.is_main:
        measured = spec.search["measured"]
        cost = spec.search["cost"]
        here = ("not measured here (a table of another device)" if cost.get("measured_ms") is None
                else f"{cost['measured_ms']:.3f} ms measured")
        latency = (f", latency {cost['predicted_ms']:.3f} ms predicted, {here} ({cost['protocol']['runtime']})"
                   if cost["unit"] == "ms" else "")
        print(f"searched {spec.name}: {measured['params'] / 1e6:.3f}M params, {measured['mult_adds'] / 1e6:.2f}M "
              f"mult-adds{latency}, {_top1(spec.search['val_top1'])}; wrote {out / 'spec.json'}")
        print(f"inspect: python -m fpnas_zoo info {out / 'spec.json'}")
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
