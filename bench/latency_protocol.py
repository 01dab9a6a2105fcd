"""Does a latency measurement repeat? The earlier timing protocol against the present one, on whole networks.

    python bench/latency_protocol.py --space fpnas --preset demo --networks 30 --runtimes onnxruntime eager \
        --out bench/latency/protocol_repeatability.json

Random networks of a search space (`search.latency`'s spaces and presets) are timed twice by each protocol, the two
protocols' runs alternating (earlier A, present A, earlier B, present B) so that the machine's slow stretches fall on
both alike:

- earlier: the settings of the tables in bench/latency/ before the protocol changed: one window of 10 warm-up and
  50 timed passes, its median, each network in turn, not pinned (on today's runner: inputs bound outside the timed
  pass, garbage collection off inside a window);
- present: `fpnas_zoo.latency.Protocol()`'s defaults: windows of at least 20 passes and 0.2 s, three interleaved
  sweeps with a reference network checking for slow stretches, the 20th percentile of the window medians, pinned.

For each protocol and runtime it reports the test-retest agreement of run B against run A (share of networks within
+-10%, mean absolute percentage error, Spearman's rho): the ceiling any latency predictor is held to on this
machine. Writes every timing to `--out` (atomically) and prints a markdown table. Nothing here is asserted in tests
but what it computes from given times.
"""
from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from fpnas_zoo import create_model_from_spec  # noqa: E402
from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from fpnas_zoo.latency import Protocol, cached_onnx, device_fingerprint, measure_interleaved, prepare  # noqa: E402
from search.algorithms import space_from_options  # noqa: E402
from search.cost import BlockwiseCost  # noqa: E402
from search.latency_table import agreement, random_arch  # noqa: E402

EARLIER = dict(warmup=10, repeats=50, warmup_s=0.0, window_s=0.0, windows=1, quantile=0.5, pin=False)


def protocols(runtime: str) -> dict[str, Protocol]:
    return {"earlier": Protocol(runtime=runtime, **EARLIER).check(), "present": Protocol(runtime=runtime).check()}


def one_run(name: str, protocol: Protocol, models: dict, onnx: dict, seed: int, bar) -> dict[int, float]:
    """Every network's latency (ms) under `protocol`: the earlier one times each network alone, in turn; the present
    one times them all in interleaved sweeps with the first network as the reference."""
    ready = {i: prepare(model, size, protocol, onnx.get(i)) for i, (model, size) in models.items()}
    if name == "earlier":
        found = {}
        for i, p in ready.items():
            found[i] = measure_interleaved({i: p}, protocol)[0][i].ms
            bar.update()
        return found
    reference = prepare(*models[0], protocol, onnx.get(0))

    def window() -> None:  # a window timed again after a slow stretch is one more than planned
        bar.total = max(bar.total, bar.n + 1)
        bar.update()

    timings, _ = measure_interleaved(ready, protocol, seed=seed, reference=reference, progress=window)
    return {i: t.ms for i, t in timings.items()}


def summarise(runs: dict[str, list[dict[int, float]]]) -> dict[str, dict]:
    """Per protocol: run B against run A (`agreement`), over the networks both timed."""
    out = {}
    for name, (a, b) in runs.items():
        keys = sorted(a)
        out[name] = agreement([b[k] for k in keys], [a[k] for k in keys])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="fpnas", help="a space of python -m search.latency build (default fpnas)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--networks", type=int, default=30)
    p.add_argument("--runtimes", nargs="+", default=["onnxruntime", "eager"], choices=("onnxruntime", "eager"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "latency" / "protocol_repeatability.json")
    args = p.parse_args(argv)
    if args.networks < 3:
        p.error(f"--networks must be at least 3, got {args.networks}")
    space, base = space_from_options({"space": args.space, "preset": args.preset})
    cost, rng = BlockwiseCost(base), random.Random(args.seed)
    archs = [random_arch(space, rng) for _ in range(args.networks)]
    specs = [cost.spec(arch) for arch in archs]
    models = {i: (create_model_from_spec(spec).eval(), tuple(spec.input_size)) for i, spec in enumerate(specs)}
    result = {"command": " ".join(["python bench/latency_protocol.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.date.today().isoformat(), "space": args.space, "preset": args.preset,
              "archs": archs, "runtimes": {}}
    for runtime in args.runtimes:
        onnx = {}
        if runtime == "onnxruntime":
            for i, (model, size) in tqdm(models.items(), desc="export", file=sys.stderr):
                onnx[i] = cached_onnx(model, size, f"{args.space}/{args.preset} network {archs[i]}")
        chosen = protocols(runtime)
        runs: dict[str, list[dict[int, float]]] = {name: [] for name in chosen}
        started = time.time()
        windows = sum(proto.windows for proto in chosen.values()) * len(models) * 2
        with tqdm(total=windows, desc=f"{runtime} windows", file=sys.stderr) as bar:
            for run in range(2):
                for name, protocol in chosen.items():
                    runs[name].append(one_run(name, protocol, models, onnx, args.seed + run, bar))
        result["runtimes"][runtime] = {
            "device": device_fingerprint(runtime), "seconds": time.time() - started,
            "protocols": {name: proto.as_dict() for name, proto in chosen.items()},
            "runs_ms": {name: [[r[i] for i in sorted(r)] for r in rs] for name, rs in runs.items()},
            "retest": summarise(runs)}
    atomic_write_json(args.out, result)
    device = next(iter(result["runtimes"].values()))["device"]
    print(f"{device['cpu']}, {device['cores']} cores; {args.networks} random networks of {args.space} "
          f"({args.preset}); run B against run A of the same protocol\n")
    print("| runtime | protocol | measured ms (median) | within +-10% | MAPE | Spearman rho | seconds (both runs "
          "of both) |")
    print("|---" * 7 + "|")
    for runtime, r in result["runtimes"].items():
        for name, a in r["retest"].items():
            first = sorted(r["runs_ms"][name][0])
            print(f"| {runtime} | {name} | {first[len(first) // 2]:.3f} | {a['within_10pct']:.0%} | {a['mape']:.1%} "
                  f"| {a['spearman']:.3f} | {r['seconds']:.0f} |")
    print(f"\n-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
