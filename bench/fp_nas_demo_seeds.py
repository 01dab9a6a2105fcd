"""The FP-NAS demo over several seeds: what it finds (run by hand).

    python bench/fp_nas_demo_seeds.py --seeds 0 1 2 --out runs/fp_nas_demo_seeds      # runs, then tabulates
    python bench/fp_nas_demo_seeds.py --report runs/old/demo0 runs/old/demo1           # tabulates finished runs

Per run: the result's mult-adds against the target, the supernet's validation top-1 of the result (BN recalibrated,
the 180 held-out digits), how many of its layers are `skip`, how many layers took a width other than the published
×1, the architectures sampled and the wall time (from the trace; it depends on what else runs on the machine).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from search.checkpointing import read_trace


def summary(run: Path) -> dict:
    spec = json.loads((run / "spec.json").read_text())
    search = spec["search"]
    target = search.get("target_mult_adds", search.get("budget_mult_adds"))
    blocks = spec["blocks"]
    trace = read_trace(run / "trace.jsonl")
    epochs = [r for r in trace if r["event"] == "epoch"]
    return {"mult_adds": epochs[-1]["mult_adds"], "target": target, "top1": epochs[-1]["accuracy"],
            "skips": sum(b["type"] == "skip" for b in blocks), "layers": len(blocks),
            "labels": search.get("distribution", {}).get("mode"),
            "samples": epochs[-1]["samples_drawn"], "seconds": epochs[-1]["wall_time_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/fp_nas_demo_seeds")
    p.add_argument("--report", nargs="+", type=Path, help="only tabulate these finished run folders")
    args = p.parse_args()
    runs = args.report
    if runs is None:
        runs = []
        for seed in args.seeds:
            out = Path(args.out) / f"seed{seed}"
            if not (out / "spec.json").is_file():
                subprocess.run([sys.executable, "-m", "search.run", "--algo", "fp-nas", "--preset", "demo", "--seed",
                                str(seed), "--out", str(out), "--no-progress"], check=True)
            runs.append(out)
    rows = [summary(r) for r in runs]
    print("| run | mult-adds (M) / target | supernet val top-1 | skip layers | architectures sampled | s |")
    print("|---|---|---|---|---|---|")
    for run, r in zip(runs, rows, strict=True):
        print(f"| {run} | {r['mult_adds'] / 1e6:.3f} / {r['target'] / 1e6:.2f} | {r['top1']:.1f} | "
              f"{r['skips']} of {r['layers']} | {r['samples']} | {r['seconds']:.0f} |")
    for key in ("mult_adds", "top1", "skips"):
        values = [r[key] for r in rows]
        print(f"{key}: {statistics.fmean(values):.4g} ± {statistics.pstdev(values):.2g}")
    for run, r in zip(runs, rows, strict=True):
        print(run, " ".join(r["labels"] or []))


if __name__ == "__main__":
    main()
