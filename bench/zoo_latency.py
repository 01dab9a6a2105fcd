"""Latency of the zoo beside timm's peers, measured with the zoo's one timing protocol (`fpnas_zoo.latency`): ms at
batch 1 and images/s at batch 32, PyTorch eager and ONNX Runtime on the CPU, 1 thread by default.

    python bench/zoo_latency.py [--threads 1] [--rounds 3] [--repeats 10] [--warmup 2] [--models NAME ...]
                                [--out bench/zoo_latency.json]

Each (model, runtime, batch) is made ready once (BatchNorm folded for eager; for ONNX Runtime exported once
through `fpnas_zoo.export`, the file `python -m fpnas_zoo export` writes, whose batch axis is dynamic). Then every
round times each of them in turn (interleaved, as bench/inference.py does), `--warmup` passes and `--repeats`
timed passes a time, so a machine shared with other work slows all of them alike; a round gives the median of its
timed passes, the table the median over rounds. Random weights (speed does not depend on them). Prints a markdown
table for bench/results/ and writes every number, the protocol and the device to `--out` (atomically). Nothing
here is asserted in tests but that it runs.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import timm
from tqdm import tqdm

import fpnas_zoo
from fpnas_zoo.atomic import atomic_write_json
from fpnas_zoo.counting import count_model
from fpnas_zoo.export import onnx_bytes
from fpnas_zoo.latency import Protocol, device_fingerprint, prepare

ROOT = Path(__file__).parents[1]
PEERS = ("mobilenetv2_100", "mnasnet_100", "fbnetc_100", "efficientnet_b0")  # timm models of the zoo's cost
RUNTIMES = ("eager", "onnxruntime")
LATENCY_BATCH, THROUGHPUT_BATCH = 1, 32


def main(argv: list[str] | None = None) -> int:
    zoo = list(fpnas_zoo.registered_specs())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[*zoo, *PEERS], metavar="NAME",
                   help="zoo or timm models (default: the whole zoo and " + ", ".join(PEERS) + ")")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table gives their median")
    p.add_argument("--repeats", type=int, default=10, help="timed passes per measurement (their median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before each measurement")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo_latency.json", help="the JSON written")
    args = p.parse_args(argv)
    for name in args.models:
        if name not in zoo and not timm.is_model(name):
            p.error(f"--models {name}: expected a zoo model (python -m fpnas_zoo list) or a timm model name")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    protocols = {(runtime, batch): Protocol(runtime=runtime, threads=args.threads, batch_size=batch,
                                                   warmup=args.warmup, repeats=args.repeats)
                 for runtime in RUNTIMES for batch in (LATENCY_BATCH, THROUGHPUT_BATCH)}
    try:
        for protocol in protocols.values():
            protocol.check()
    except ValueError as e:
        p.error(str(e))

    models, timers = {}, {}
    for name in tqdm(args.models, desc="build, fold and export", file=sys.stderr):
        model = timm.create_model(name).eval()
        input_size = tuple(model.pretrained_cfg["input_size"])
        models[name] = {"input_size": list(input_size), "mult_adds": count_model(model, input_size).mult_adds}
        exported = onnx_bytes(model)[0]  # one export serves every batch size (its batch axis is dynamic)
        for key, protocol in protocols.items():
            timers[(name, *key)] = prepare(model, input_size, protocol,
                                           exported if protocol.runtime == "onnxruntime" else None)
    rounds: dict[tuple[str, str, int], list[float]] = {key: [] for key in timers}
    for _ in tqdm(range(args.rounds), desc="rounds", file=sys.stderr):
        for key, runs in timers.items():  # interleaved: every model, runtime and batch once a round
            rounds[key].append(statistics.median(runs()))
    ms = {key: statistics.median(values) for key, values in rounds.items()}

    device = device_fingerprint("onnxruntime")
    result = {
        "command": " ".join(["python bench/zoo_latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "device": device,
        "protocol": {"threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds,
                     "statistic": "median of the timed passes in a round, median over rounds"},
        "models": [{
            "name": name, "zoo": name in zoo, **info,
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
          f"{args.threads} thread{'s' if args.threads != 1 else ''}; fpnas_zoo.latency: BatchNorm folded, "
          f"{args.warmup} warm-up + median of {args.repeats} passes, median over {args.rounds} interleaved rounds; "
          f"random weights")
    print(f"\n| model | input | mult-adds M | eager ms @{LATENCY_BATCH} | ORT ms @{LATENCY_BATCH} "
          f"| eager img/s @{THROUGHPUT_BATCH} | ORT img/s @{THROUGHPUT_BATCH} |")
    print("|---" * 7 + "|")
    for row in result["models"]:
        lat, ips = str(LATENCY_BATCH), str(THROUGHPUT_BATCH)
        print(f"| `{row['name']}`{'' if row['zoo'] else ' (timm)'} | {row['input_size'][1]} "
              f"| {row['mult_adds'] / 1e6:.0f} | {row['ms']['eager'][lat]:.2f} | {row['ms']['onnxruntime'][lat]:.2f} "
              f"| {row['images_per_s']['eager'][ips]:.1f} | {row['images_per_s']['onnxruntime'][ips]:.1f} |")
    print(f"\n-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
