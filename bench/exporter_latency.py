"""Does the exporter change what ONNX Runtime runs? Blocks and whole networks exported by dynamo and by TorchScript,
timed side by side.

    python bench/exporter_latency.py --space fbnetv2-f++ --preset paper --dataset imagefolder --image-size 224 \
        --blocks 48 --networks 4 --out bench/latency/exporter_comparison.json

A latency table of a paper-size space holds thousands of blocks; exporting each through torch.export and the dynamo
exporter (`python -m fpnas_zoo export`'s path) takes seconds, through the TorchScript exporter a tenth of a second
(`search.latency build --exporter torchscript`). This draws `--blocks` block entries of the space (spread over its
input sizes and block types) and `--networks` random whole networks, exports each both ways (timing the exports),
and times all of them together under ONNX Runtime in interleaved sweeps (`fpnas_zoo.latency.measure_interleaved`:
`--windows` windows of `--window-s` seconds, the 20th percentile of the window medians). It reports, per kind, the
ratio TorchScript / dynamo: its median, the share within +-5% and +-10%, and Spearman's rho between the two, and the
export seconds of each. Writes every number to `--out` (atomically) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from fpnas_zoo import create_model_from_spec  # noqa: E402
from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from fpnas_zoo.export import EXPORTERS  # noqa: E402
from fpnas_zoo.latency import Protocol, cached_onnx, device_fingerprint, measure_interleaved, prepare  # noqa: E402
from search.algorithms import space_from_options  # noqa: E402
from search.cost import BlockwiseCost, build_block  # noqa: E402
from search.latency_table import agreement, random_arch  # noqa: E402


def spread_sample(entries: list, count: int, rng: random.Random) -> list:
    """`count` entries drawn evenly over (input resolution, block type) groups, then at random within each."""
    groups: dict[tuple, list] = {}
    for entry in entries:
        groups.setdefault((entry[1], entry[2]["type"]), []).append(entry)
    for members in groups.values():
        rng.shuffle(members)
    picked, order = [], sorted(groups)
    while len(picked) < min(count, len(entries)):
        for key in order:
            if groups[key] and len(picked) < count:
                picked.append(groups[key].pop())
    return picked


def summary(pairs: list[tuple[float, float]]) -> dict:
    """TorchScript against dynamo over (dynamo ms, torchscript ms) pairs."""
    ratios = [t / d for d, t in pairs]
    found = agreement([t for _, t in pairs], [d for d, _ in pairs])
    return {"count": len(pairs), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
            "max_ratio": max(ratios), "within_5pct": sum(abs(r - 1) <= 0.05 for r in ratios) / len(ratios),
            "within_10pct": found["within_10pct"], "spearman": found["spearman"],
            "sum_ratio": sum(t for _, t in pairs) / sum(d for d, _ in pairs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="fbnetv2-f++")
    p.add_argument("--preset", default="paper")
    p.add_argument("--dataset", help="default: the preset's")
    p.add_argument("--image-size", type=int, help="imagefolder: the resolution")
    p.add_argument("--blocks", type=int, default=48)
    p.add_argument("--networks", type=int, default=4)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-s", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "latency" / "exporter_comparison.json")
    args = p.parse_args(argv)
    if args.blocks + args.networks < 3:
        p.error("--blocks and --networks: at least 3 modules in all")
    options = {"space": args.space, "preset": args.preset,
               **{k: v for k, v in (("dataset", args.dataset), ("image_size", args.image_size)) if v is not None}}
    space, base = space_from_options(options)
    cost, rng = BlockwiseCost(base), random.Random(args.seed)
    entries = spread_sample(cost.reachable(space.candidates())[0], args.blocks, rng)
    modules = {("block", i): (build_block(chs, block).eval(), (chs, res, res), f"block {chs} {res} {block}")
               for i, (chs, res, block) in enumerate(entries)}
    archs = [random_arch(space, rng) for _ in range(args.networks)]
    for i, arch in enumerate(archs):
        spec = cost.spec(arch)
        modules[("network", i)] = (create_model_from_spec(spec).eval(), tuple(spec.input_size), f"network {arch}")
    protocol = Protocol(windows=args.windows, window_s=args.window_s).check()
    ready, export_s = {}, {name: {"block": [], "network": []} for name in EXPORTERS}
    for key, (module, size, text) in tqdm(modules.items(), desc="export both ways", file=sys.stderr):
        for exporter in EXPORTERS:
            started = time.perf_counter()
            onnx = cached_onnx(module, size, f"exporter bench {text}", exporter)
            export_s[exporter][key[0]].append(time.perf_counter() - started)
            ready[(*key, exporter)] = prepare(module, size, protocol, onnx)
    with tqdm(total=len(ready) * protocol.windows, desc="onnxruntime windows", file=sys.stderr) as bar:
        timings, _ = measure_interleaved(ready, protocol, seed=args.seed, reference=ready[("block", 0, "dynamo")],
                                         progress=bar.update)
    rows = {kind: [(timings[(kind, i, "dynamo")].ms, timings[(kind, i, "torchscript")].ms)
                   for i in range(len(entries) if kind == "block" else len(archs))] for kind in ("block", "network")}
    result = {"command": " ".join(["python bench/exporter_latency.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.date.today().isoformat(), "options": options, "protocol": protocol.as_dict(),
              "device": device_fingerprint("onnxruntime"),
              "blocks": [{"in_chs": c, "resolution": r, "block": b, "dynamo_ms": d, "torchscript_ms": t}
                         for (c, r, b), (d, t) in zip(entries, rows["block"], strict=True)],
              "networks": [{"arch": a, "dynamo_ms": d, "torchscript_ms": t}
                           for a, (d, t) in zip(archs, rows["network"], strict=True)],
              "export_s": export_s,
              "summary": {kind: summary(pairs) for kind, pairs in rows.items() if pairs}}
    atomic_write_json(args.out, result)
    d = result["device"]
    print(f"{d['cpu']}, {d['cores']} cores; onnxruntime {d.get('onnxruntime')}, torch {d['torch']}; "
          f"{protocol.describe()}\n")
    print("| modules | count | TorchScript / dynamo, median (range) | within +-5% | within +-10% | Spearman | "
          "sum ratio | export s, dynamo | export s, TorchScript |")
    print("|---" * 9 + "|")
    for kind, s in result["summary"].items():
        dyn, ts = (statistics.median(export_s[e][kind]) if export_s[e][kind] else float("nan") for e in EXPORTERS)
        print(f"| {kind}s | {s['count']} | {s['median_ratio']:.3f} ({s['min_ratio']:.2f}-{s['max_ratio']:.2f}) | "
              f"{s['within_5pct']:.0%} | {s['within_10pct']:.0%} | {s['spearman']:.3f} | {s['sum_ratio']:.3f} | "
              f"{dyn:.2f} | {ts:.2f} |")
    print(f"\n-> {args.out} (export seconds: medians; a cached export reads in milliseconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
