"""FP-NAS's two speed-ups at small scale (run by hand): adaptive vs fixed K, coarse-to-fine vs joint-only.

    python bench/fp_nas_ablation.py --seeds 0 1 2 --out runs/ablation          # embedded digits, CPU
    python bench/fp_nas_ablation.py --seeds 0 --epochs 6 --retrain-epochs 2    # quicker, noisier

Four searches per seed, each `python -m search.run --algo fp-nas --preset demo` with the same seed, space, target and
epochs (so the same data and the same starting supernet), differing only in:
  adaptive + c2f   the paper's FP-NAS: K = max(K_min, ceil(lambda H)), factorized then joint
  fixed K + c2f    K fixed at the adaptive run's first K (the paper compares with PARSEC's fixed K = 14)
  adaptive, joint  --no-coarse-to-fine
  fixed K, joint   PARSEC: both off
Each search's spec is then retrained with the same short recipe (`python -m search.train --recipe demo`), and the
table reports: architectures sampled, search wall time, distribution parameters, steps and seconds until the entropy
first falls to half its starting value, the final mult-adds against the target, and the retrained top-1.
Configurations of one seed run back to back, so load on the machine affects them alike; mean and spread over seeds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fpnas_zoo import load_spec
from search.checkpointing import read_trace

CONFIGS = {
    "adaptive + c2f (FP-NAS)": [],
    "fixed K + c2f": ["--samples", "{k0}"],
    "adaptive, joint only": ["--no-coarse-to-fine"],
    "fixed K, joint only (PARSEC)": ["--samples", "{k0}", "--no-coarse-to-fine"],
}


def run(argv: list[str], log: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    log.write_text(f"$ python {' '.join(argv)}\n{done.stdout}\n--- stderr ---\n{done.stderr}", encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): python {' '.join(argv)}; see {log}")
    return time.perf_counter() - started


def summarise(out: Path) -> dict:
    trace = read_trace(out / "trace.jsonl")
    steps = [r for r in trace if r["event"] == "step"]
    spec = load_spec(out / "spec.json").to_dict()  # a spec of an earlier version reads under today's names
    h0 = steps[0]["entropy"]
    half = next((i for i, r in enumerate(steps) if r["entropy"] <= h0 / 2), None)
    epochs = [r for r in trace if r["event"] == "epoch"]
    return {
        "samples": sum(r["K"] for r in steps), "k0": steps[0]["K"], "k_last": steps[-1]["K"],
        "search_s": spec["search"]["wall_time_s"],
        "parameters": epochs[0]["parameters"],  # while the distribution was as it started (factorized or joint)
        "steps_to_half_entropy": None if half is None else half + 1,
        "seconds_to_half_entropy": None if half is None else steps[half]["wall_time_s"],
        "final_entropy": spec["search"]["distribution"]["entropy_nats"], "h0": h0,
        "mult_adds": spec["search"]["measured"]["mult_adds"], "target": spec["search"]["target_mult_adds"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="search epochs (default: the demo preset's)")
    p.add_argument("--retrain-epochs", type=int, default=3)
    p.add_argument("--out", default="runs/fp_nas_ablation")
    p.add_argument("--report-only", action="store_true", help="tabulate the runs already in --out")
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for seed in args.seeds:
        k0 = None
        for name, extra in CONFIGS.items():
            out = root / f"seed{seed}" / name.split()[0].replace(",", "") / ("c2f" if "c2f" in name else "joint")
            train = out / "retrain"
            if args.report_only:
                result = summarise(out) | {"retrained_top1": json.loads((train / "metrics.json").read_text())[
                    "val_top1"]}
                k0 = k0 or result["k0"]
                rows[name].append(result)
                continue
            if out.exists():
                shutil.rmtree(out)
            extra = [a.format(k0=k0) for a in extra]
            search = ["-m", "search.run", "--algo", "fp-nas", "--preset", "demo", "--seed", str(seed), "--out",
                      str(out), "--no-progress", *extra]
            if args.epochs:
                search += ["--epochs", str(args.epochs)]
            run(search, out.parent / f"{out.name}_search.log")
            result = summarise(out)
            k0 = k0 or result["k0"]
            run(["-m", "search.train", "--spec", str(out / "spec.json"), "--dataset", "digits", "--recipe", "demo",
                 "--epochs", str(args.retrain_epochs), "--seed", str(seed), "--out", str(train), "--no-progress"],
                out.parent / f"{out.name}_train.log")
            result["retrained_top1"] = json.loads((train / "metrics.json").read_text())["val_top1"]
            rows[name].append(result)
            print(f"seed {seed} {name}: {json.dumps(result)}", flush=True)
    (root / "results.json").write_text(json.dumps(rows, indent=1))

    def stat(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "never"
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.4g} ± {spread:.2g}" if spread else f"{mean:.4g}"

    print(f"\n{len(args.seeds)} seed(s) ({', '.join(map(str, args.seeds))}); mean ± standard deviation\n")
    print("| configuration | architectures sampled | search s | distribution parameters at the start | steps to H0/2 | "
          "s to H0/2 | final H (nats) | mult-adds (M) / target | retrained top-1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, results in rows.items():
        print(f"| {name} | {stat([r['samples'] for r in results])} | {stat([r['search_s'] for r in results])} | "
              f"{stat([r['parameters'] for r in results])} | {stat([r['steps_to_half_entropy'] for r in results])} | "
              f"{stat([r['seconds_to_half_entropy'] for r in results])} | "
              f"{stat([r['final_entropy'] for r in results])} | "
              f"{stat([r['mult_adds'] / 1e6 for r in results])} / {results[0]['target'] / 1e6:.2f} | "
              f"{stat([r['retrained_top1'] for r in results])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
