"""Inference images/s of zoo models beside timm peers of similar cost: PyTorch eager, eager channels_last and ONNX
Runtime, all in one run.

    python bench/inference.py [--group fpnas|fp_nas|cifar] [--threads 2] [--rounds 5] [--batches 1 32]

Every (model, runtime, batch) is measured once per round and the rounds go over all of them in turn
(interleaved), so a machine shared with other work slows every runtime alike and the ratios stay fair; the table
gives the median over rounds. Random weights (speed does not depend on them); ONNX files come from
`fpnas_zoo.export` (the same export as `python -m fpnas_zoo export`), run on ONNX Runtime's CPU provider with
all graph optimisations and without idle spinning (its threads would otherwise busy-wait into the next
measurement). Results go into a dated page of bench/results/ by hand; nothing here is asserted in tests.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import onnxruntime as ort
import timm
import torch
from tqdm import tqdm

import fpnas_zoo
from fpnas_zoo.export import onnx_bytes, ort_session

ROOT = Path(__file__).parents[1]
# zoo model -> timm peers (or spec fixtures) of similar cost it is compared with
GROUPS = {
    "fpnas": {
        "fpnasnet": ["mobilenetv2_100", "mnasnet_100", "fbnetc_100"],
        "fpnasnet_a": ["mobilenetv2_100"],
        "fpnasnet_b": ["mobilenetv2_100"],
        "fpnasnet_c": ["mobilenetv2_100"],
    },
    "fp_nas": {
        "fp_nas_s1pp": [], "fp_nas_s2pp": [], "fp_nas_s3pp": [],
        "fp_nas_s4pp": ["tests/fixtures/specs/fbnetv2_f4.json"],
        "fp_nas_l0": ["efficientnet_b0"], "fp_nas_l1": [], "fp_nas_l2": [],
    },
    "cifar": {"fpnasnet_cifar": [], "fpnasnet_cifar_2x": []},
}
RUNTIMES = ("eager", "channels_last", "ort")


def build(name: str) -> torch.nn.Module:
    if name.endswith(".json"):
        return fpnas_zoo.create_model_from_spec(ROOT / name).eval()
    return timm.create_model(name).eval()


def label(name: str) -> str:
    return Path(name).stem if name.endswith(".json") else name


class Runner:
    """One (model, runtime): `run(batch)` does one forward pass on a fixed random input."""

    def __init__(self, model: torch.nn.Module, runtime: str, threads: int, batches: list[int]):
        self.input_size = tuple(model.pretrained_cfg["input_size"])
        self.inputs = {b: torch.randn(b, *self.input_size) for b in batches}
        self.runtime = runtime
        if runtime == "ort":
            self.session = ort_session(onnx_bytes(model)[0], threads=threads, spinning=False)
            self.inputs = {b: x.numpy() for b, x in self.inputs.items()}
        elif runtime == "channels_last":
            self.model = model.to(memory_format=torch.channels_last)
            self.inputs = {b: x.contiguous(memory_format=torch.channels_last) for b, x in self.inputs.items()}
        else:
            self.model = model

    def run(self, batch: int) -> None:
        if self.runtime == "ort":
            self.session.run(None, {"input": self.inputs[batch]})
        else:
            with torch.inference_mode():
                self.model(self.inputs[batch])

    def images_per_s(self, batch: int, min_time: float) -> float:
        """At least `min_time` seconds of back-to-back passes (at least one)."""
        count, start = 0, time.perf_counter()
        while True:
            self.run(batch)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                return count * batch / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", choices=sorted(GROUPS), default="fpnas")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads and ONNX Runtime intra-op threads")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement (at least one pass)")
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    pairs = GROUPS[args.group]
    names = list(dict.fromkeys([*pairs, *(peer for peers in pairs.values() for peer in peers)]))
    runners = {}
    for name in tqdm(names, desc="build and export", file=sys.stderr):
        for runtime in args.runtimes:
            runners[(name, runtime)] = Runner(build(name), runtime, args.threads, args.batches)
            for batch in args.batches:
                for _ in range(3):  # warm-up: allocations, oneDNN primitives, ORT's first-run planning
                    runners[(name, runtime)].run(batch)
    results: dict[tuple[str, str, int], list[float]] = {key + (b,): [] for key in runners for b in args.batches}
    for _ in tqdm(range(args.rounds), desc="rounds", file=sys.stderr):
        for (name, runtime), runner in runners.items():  # interleaved: every runtime of every model, each round
            for batch in args.batches:
                results[(name, runtime, batch)].append(runner.images_per_s(batch, args.min_time))
    med = {key: statistics.median(v) for key, v in results.items()}

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, timm {timm.__version__}, "
          f"{platform.processor() or platform.machine()}, {args.threads} threads, {args.rounds} interleaved rounds, "
          f"median images/s")
    cols = [r for r in RUNTIMES if r in args.runtimes]
    print("\n| model | input | batch | " + " | ".join(cols) + (" | ORT / eager |" if "ort" in cols else " |"))
    print("|---" * (3 + len(cols) + ("ort" in cols)) + "|")
    for name in names:
        for batch in args.batches:
            row = [f"`{label(name)}`", str(runners[(name, cols[0])].input_size[1]), str(batch)]
            row += [f"{med[(name, r, batch)]:.1f}" for r in cols]
            if "ort" in cols and "eager" in cols:
                row.append(f"{med[(name, 'ort', batch)] / med[(name, 'eager', batch)]:.2f}")
            print("| " + " | ".join(row) + " |")
    ratios = [(m, peer) for m, peers in pairs.items() for peer in peers]
    if ratios:
        print("\nZoo model / peer, images/s ratio under the same runtime (> 1: the zoo model is faster):\n")
        print("| model / peer | batch | " + " | ".join(cols) + " |")
        print("|---" * (2 + len(cols)) + "|")
        for model, peer in ratios:
            for batch in args.batches:
                cells = [f"{med[(model, r, batch)] / med[(peer, r, batch)]:.2f}" for r in cols]
                print(f"| `{model}` / `{label(peer)}` | {batch} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
