"""Latency of the zoo beside timm's peers, measured with the zoo's one timing protocol (`fpnas_zoo.latency`): ms at
batch 1 and images/s at batch 32, PyTorch eager and ONNX Runtime on the CPU, 1 thread by default.

    python bench/zoo_latency.py [--threads 1] [--rounds 5] [--repeats 10] [--warmup 2] [--cpu 0] [--grouped]
                                [--models NAME ...] [--out bench/zoo_latency.json]

Each (model, runtime, batch) is made ready once (BatchNorm folded for eager; for ONNX Runtime exported once
through `fpnas_zoo.export`, the file `python -m fpnas_zoo export` writes, whose batch axis is dynamic). Then
`fpnas_zoo.latency.measure_interleaved` times them in `--rounds` sweeps, each in a new random order, one window of
each a sweep (the protocol's warm-up, then at least `--repeats` passes and its window seconds), so a machine shared
with other work slows all of them alike; a window gives the median of its timed passes, the table a low quantile
over rounds (`--quantile`, default 0.2, interpolated), since a shared machine only ever adds time. One thread is
pinned to one core (`--cpu N`: that one). `--grouped` also times every zoo
model with split attention on the block's grouped (training-time) path, `NAME@grouped`, the way the block ran in
inference before it had a path of its own: before and after from one interleaved run. Random weights (speed does not
depend on them). Prints a markdown table for bench/results/ (with mult-adds per second at batch 32 and the ratio to
`mobilenetv2_100`) and writes every number, the protocol and the device to `--out` (atomically). Nothing here is
asserted in tests but that it runs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import timm
from tqdm import tqdm

import fpnas_zoo
from fpnas_zoo.atomic import atomic_write_json
from fpnas_zoo.blocks import SplitAttnDw
from fpnas_zoo.counting import count_model
from fpnas_zoo.export import onnx_bytes
from fpnas_zoo.latency import Protocol, device_fingerprint, measure_interleaved, prepare

ROOT = Path(__file__).parents[1]
PEERS = ("mobilenetv2_100", "mnasnet_100", "fbnetc_100", "efficientnet_b0",  # timm models of the zoo's cost
         "mobilenetv3_large_100")
GROUPED = "@grouped"  # suffix of a zoo model timed with split attention on its grouped (training-time) path


def build(name: str):
    """The model `name` in eval mode; `NAME@grouped` with every SplitAttnDw on its grouped path."""
    model = timm.create_model(name.removesuffix(GROUPED)).eval()
    if name.endswith(GROUPED):
        for m in model.modules():
            if isinstance(m, SplitAttnDw):
                m.split_in_eval = False
    return model


def has_split_attention(name: str) -> bool:
    return any(isinstance(m, SplitAttnDw) for m in timm.create_model(name).modules())


RUNTIMES = ("eager", "onnxruntime")
LATENCY_BATCH, THROUGHPUT_BATCH = 1, 32


def main(argv: list[str] | None = None) -> int:
    zoo = list(fpnas_zoo.registered_specs())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[*zoo, *PEERS], metavar="NAME",
                   help="zoo or timm models (default: the whole zoo and " + ", ".join(PEERS) + ")")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--quantile", type=float, default=0.2,
                   help="the quantile of the round medians the table gives (default 0.2; 0 is the fastest round)")
    p.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU core (default: not pinned)")
    p.add_argument("--grouped", action="store_true",
                   help="also time each zoo model with split attention on its grouped path (NAME@grouped)")
    p.add_argument("--repeats", type=int, default=10, help="timed passes per measurement (their median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before each measurement")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo_latency.json", help="the JSON written")
    args = p.parse_args(argv)
    for name in args.models:
        if name not in zoo and not timm.is_model(name):
            p.error(f"--models {name}: expected a zoo model (python -m fpnas_zoo list) or a timm model name")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if not 0 <= args.quantile <= 1:
        p.error(f"--quantile must be in [0, 1], got {args.quantile}")
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (OSError, ValueError) as e:
            p.error(f"--cpu {args.cpu}: cannot pin to that core ({e})")
    if args.grouped:
        args.models += [n + GROUPED for n in args.models if n in zoo and has_split_attention(n)]
    protocols = {(runtime, batch): Protocol(runtime=runtime, threads=args.threads, batch_size=batch,
                                            warmup=args.warmup, repeats=args.repeats, windows=args.rounds,
                                            quantile=args.quantile)
                 for runtime in RUNTIMES for batch in (LATENCY_BATCH, THROUGHPUT_BATCH)}
    try:
        for protocol in protocols.values():
            protocol.check()
    except ValueError as e:
        p.error(str(e))

    models, timers = {}, {}
    for name in tqdm(args.models, desc="build, fold and export", file=sys.stderr):
        model = build(name)
        input_size = tuple(model.pretrained_cfg["input_size"])
        models[name] = {"input_size": list(input_size), "mult_adds": count_model(model, input_size).mult_adds}
        exported = onnx_bytes(model)[0]  # one export serves every batch size (its batch axis is dynamic)
        for key, protocol in protocols.items():
            timers[(name, *key)] = prepare(model, input_size, protocol,
                                           exported if protocol.runtime == "onnxruntime" else None)
    bar = tqdm(total=len(timers) * args.rounds, desc="windows", file=sys.stderr)
    timings, _ = measure_interleaved(timers, next(iter(protocols.values())), progress=bar.update)
    bar.close()
    rounds = {key: [w["median_ms"] for w in timing.windows] for key, timing in timings.items()}
    ms = {key: timing.ms for key, timing in timings.items()}

    device = device_fingerprint("onnxruntime")
    result = {
        "command": " ".join(["python bench/zoo_latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "device": device,
        "protocol": {**next(iter(protocols.values())).as_dict(), "runtime": list(RUNTIMES),
                     "batch_size": [LATENCY_BATCH, THROUGHPUT_BATCH], "cpu": args.cpu,
                     "statistic": f"median of the timed passes in a window, quantile {args.quantile} over rounds"},
        "models": [{
            "name": name, "zoo": name.removesuffix(GROUPED) in zoo, **info,
            "ms": {runtime: {str(b): ms[(name, runtime, b)] for b in (LATENCY_BATCH, THROUGHPUT_BATCH)}
                   for runtime in RUNTIMES},
            "images_per_s": {runtime: {str(b): b * 1e3 / ms[(name, runtime, b)]
                                       for b in (LATENCY_BATCH, THROUGHPUT_BATCH)} for runtime in RUNTIMES},
            "rounds_ms": {f"{runtime}@{b}": rounds[(name, runtime, b)] for runtime in RUNTIMES
                          for b in (LATENCY_BATCH, THROUGHPUT_BATCH)},
        } for name, info in models.items()],
    }
    atomic_write_json(args.out, result)

    print(f"{device['cpu']}, {device['cores']} cores, torch {device['torch']}, onnxruntime {device['onnxruntime']}; "
          f"fpnas_zoo.latency, BatchNorm folded: {next(iter(protocols.values())).describe()}, "
          f"in interleaved rounds{'; CPU ' + str(args.cpu) if args.cpu is not None else ''}; random weights")
    lat, ips = str(LATENCY_BATCH), str(THROUGHPUT_BATCH)
    base = next((row for row in result["models"] if row["name"] == "mobilenetv2_100"), None)
    print(f"\n| model | input | mult-adds M | eager ms @{LATENCY_BATCH} | ORT ms @{LATENCY_BATCH} "
          f"| eager img/s @{THROUGHPUT_BATCH} | ORT img/s @{THROUGHPUT_BATCH} | ORT G mult-adds/s @{THROUGHPUT_BATCH} "
          f"| ORT speed vs `mobilenetv2_100` @{LATENCY_BATCH} / @{THROUGHPUT_BATCH} |")
    print("|---" * 9 + "|")
    for row in result["models"]:
        ort_ips = row["images_per_s"]["onnxruntime"][ips]
        ratio = "" if base is None else (f"{base['ms']['onnxruntime'][lat] / row['ms']['onnxruntime'][lat]:.2f} / "
                                          f"{ort_ips / base['images_per_s']['onnxruntime'][ips]:.2f}")
        print(f"| `{row['name']}`{'' if row['zoo'] else ' (timm)'} | {row['input_size'][1]} "
              f"| {row['mult_adds'] / 1e6:.0f} | {row['ms']['eager'][lat]:.2f} | {row['ms']['onnxruntime'][lat]:.2f} "
              f"| {row['images_per_s']['eager'][ips]:.1f} | {ort_ips:.1f} | {ort_ips * row['mult_adds'] / 1e9:.1f} "
              f"| {ratio} |")
    print(f"\n-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
