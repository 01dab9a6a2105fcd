"""Does a ground-truth recipe rank architectures the same way twice? Test-retest of the search-efficacy yardstick.

    python bench/yardstick_repeatability.py [--space fp-nas] [--networks 10] [--seeds 0 1 2] [--epochs 3 8]
                                            [--jobs 2] [--work runs/yardstick] [--out FILE.json]
                                            [--dataset crowded-digits] [--ema-decay 0.995]
                                            [--search-args "--width-mult 0.5 --mult-adds-target 2.7e6"]

Draws `--networks` architectures uniformly from one study space (bench/search_efficacy.py's `STUDY`), keeping only
those whose mult-adds lie in [0.85, 1.0] x the search's limit, so that cost cannot explain their ranking. Trains each
alone with the study's `cluttered-digits` recipe on `--dataset` (default the study's task) at every `--epochs`
setting for every seed (resumable: finished trainings are kept in `--work`). `--search-args` changes the space
(e.g. its width and limit) and `--ema-decay` scores an average of the weights instead of the last ones.
Then reports per setting, over the in-band networks:
- Kendall tau between every two seeds of test top-1 (and their mean);
- the correlation between two seeds of the cost-adjusted residuals (test top-1 minus a least-squares fit on
  log mult-adds);
- the pooled seed standard deviation and the architecture standard deviation beyond it;
- the intraclass correlation ICC(1) = var_arch / (var_arch + var_seed): the test-retest ceiling of a one-seed
  ranking. Its Spearman-Brown step-up k * ICC / (1 + (k - 1) * ICC) is the ceiling for the mean of k seeds.
Writes every training and statistic to `--out` (atomically) and prints a markdown table for bench/results/.
The seed-pair statistics come from at most a dozen networks, so their own spread is wide (a Kendall tau over 10 items
moves by about 0.2 between samples): the script measures whether a recipe clears a bar, not which recipe is best.
"""
from __future__ import annotations

import argparse
import datetime
import random
import shlex
import statistics
import sys
from pathlib import Path

# bench/ is the script's folder; the statistics are efficacy_stats.py's, shared with the study
from efficacy_stats import BAND, kendall_tau, pearson, repeatability, residuals  # noqa: F401 (re-exported)
from search_efficacy import DATASET, DATASETS, ROOT, draw_in_limit, make_runner, run_jobs

from fpnas_zoo import save_spec
from fpnas_zoo.atomic import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="fp-nas", choices=("fpnas", "fp-nas"), help="the study space (default fp-nas)")
    p.add_argument("--networks", type=int, default=10, help="in-band networks (default 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 8], help="recipe lengths to compare (default 3 8)")
    p.add_argument("--dataset", default=DATASET, choices=DATASETS,
                   help=f"the task every network is trained on (default {DATASET}, the study's)")
    p.add_argument("--search-args", default="", help="options appended to the space's search command, e.g. "
                   "\"--width-mult 0.5 --mult-adds-target 3.2e6\" (a wider space and its limit)")
    p.add_argument("--ema-decay", type=float, help="evaluate an exponential moving average of the weights with this "
                   "decay (timm's ModelEmaV3), instead of the recipe's last weights")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time, one thread each (default 2)")
    p.add_argument("--limit-train", type=int, help="train on the first N images (plumbing checks)")
    p.add_argument("--limit-val", type=int, help="validate and test on the first N images (plumbing checks)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "yardstick", help="specs and trainings")
    p.add_argument("--out", type=Path, help="default bench/yardstick/<space>[-<dataset>][-ema<decay>][-<search "
                   "args>].json (the committed results; each setting its own file)")
    args = p.parse_args(argv)
    if args.networks < 3 or len(args.seeds) < 2:
        p.error("--networks must be at least 3 and --seeds at least two values")
    runner = make_runner(args.space, False, 0, args.work / "space" / args.space, args.dataset,
                         shlex.split(args.search_args))
    rng = random.Random(f"yardstick-{args.space}")
    drawn = [draw_in_limit(runner, rng, band=True) for _ in range(args.networks)]
    cfg = {"epochs": None, "limit_train": args.limit_train, "limit_val": args.limit_val, "dataset": args.dataset,
           "ema_decay": args.ema_decay}
    tag = args.space if args.dataset == DATASET else f"{args.space}-{args.dataset}"
    if args.ema_decay:
        tag += f"-ema{args.ema_decay:g}"
    if args.search_args:
        tag += "-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in args.search_args.replace("--", ""))
    nets, jobs = [], []
    for i, (blocks, cost) in enumerate(drawn):
        spec_path = args.work / tag / f"net{i:02d}.json"
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        save_spec(runner.spec_of(blocks, name=f"yardstick_{args.space.replace('-', '_')}_{i:02d}"), spec_path)
        nets.append({"name": f"net{i:02d}", "mult_adds": cost, "blocks": blocks, "runs": {}})
        for epochs in args.epochs:
            for seed in args.seeds:
                out = args.work / tag / f"net{i:02d}_e{epochs}_s{seed}"
                jobs.append(((i, epochs, seed), str(spec_path), str(out), seed, dict(cfg, epochs=epochs),
                             1 if args.jobs > 1 else None))

    def done(key, result):
        i, epochs, seed = key
        nets[i]["runs"][f"e{epochs}_s{seed}"] = result

    run_jobs(jobs, args.jobs, f"yardstick {tag}", done)
    cost = [n["mult_adds"] for n in nets]
    stats = {}
    for epochs in args.epochs:
        acc = [[n["runs"][f"e{epochs}_s{s}"]["test_top1"] for s in args.seeds] for n in nets]
        stats[str(epochs)] = repeatability(acc, cost)
        stats[str(epochs)]["seconds_per_training"] = statistics.fmean(
            n["runs"][f"e{epochs}_s{s}"]["seconds"] for n in nets for s in args.seeds)
    result = {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
              "space": args.space, "dataset": args.dataset, "search_args": args.search_args,
              "ema_decay": args.ema_decay, "limit": runner.limit(), "band": BAND, "seeds": args.seeds,
              "networks": nets, "stats": stats}
    out = args.out or ROOT / "bench" / "yardstick" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"\n{args.space} space, {len(nets)} networks in {BAND} x the limit ({runner.limit():.3g} mult-adds), "
          f"seeds {args.seeds}\n")
    print("| epochs | mean test top-1 | Kendall tau, seed pairs | residual r, seed pairs | seed sd (pp) "
          "| arch sd (pp) | ICC one seed | ICC mean of seeds | s per training |")
    print("|---|---|---|---|---|---|---|---|---|")
    for epochs, s in stats.items():
        print(f"| {epochs} | {s['mean_top1']:.1f} | {s['kendall_tau']:.2f} "
              f"({', '.join(f'{t:.2f}' for t in s['kendall_tau_pairs'])}) | {s['residual_r']:.2f} "
              f"({', '.join(f'{r:.2f}' for r in s['residual_r_pairs'])}) | {s['seed_sd']:.2f} | {s['arch_sd']:.2f} "
              f"| {s['icc1']:.2f} | {s['icc_mean_of_seeds']:.2f} | {s['seconds_per_training']:.0f} |")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
