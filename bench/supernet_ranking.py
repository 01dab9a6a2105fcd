"""Does a supernet rank the networks of its space? Kendall tau against the search-efficacy ground truth, per rule.

    python bench/supernet_ranking.py [--space fp-nas] [--rules uniform sandwich] [--seeds 0 1] [--passes 4]
                                     [--jobs 2] [--work runs/supernet_ranking] [--out FILE.json]
                                     [--table GROUND_TRUTH.json] [--limit-train N] [--limit-val N]

For each rule of `search.supernet_rules` and each seed: the supernet of the study's space (bench/search_efficacy.py's
`STUDY` command: its space, data and --limit-train) trained on the whole training split with the weight-sharing
baseline's optimiser (SGD, lr 0.05 fixed, weight decay 5e-4), for `--passes` epochs' worth of network passes: a
uniform step runs one network, a sandwich step 2 + 2, so `uniform` trains `--passes` epochs and `sandwich` a quarter
of them (equal compute, whole epochs, at least one). Then every ground-truth network is scored on the trained
supernet as the study scores one (BatchNorm recalibrated, validation top-1), and the scores are ranked against the
ground truth's test top-1: Kendall tau over all networks and over the in-band ones, beside mult-adds alone.
The ranking is measured in work (epochs), not seconds, so a slow or shared machine changes its time, not its result.
Writes `--out` (atomically after each run, which is kept when the command is run again; default
bench/supernet_ranking/<dataset>/<space>.json) and prints a markdown table. `--table` takes another ground truth
of the space and `--limit-train` / `--limit-val` fewer images (the tests' toy size).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from search_efficacy import (  # noqa: E402
    DATASET,
    _eval_arch,
    make_runner,
    ranking,
    run_jobs,
    sample_arch,
)

from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from search.engine import Recipe, make_optimizer, train_epochs  # noqa: E402
from search.seeding import seed_everything  # noqa: E402
from search.supernet_rules import RULES, SupernetTask, passes_per_step  # noqa: E402

RECIPE = dict(lr=0.05, weight_decay=5e-4, schedule="fixed")  # the weight-sharing baseline's


def rule_epochs(rule: str, passes: int) -> int:
    """Epochs of `rule` for `passes` epochs' worth of network passes (whole epochs, at least one)."""
    return max(1, round(passes / passes_per_step(rule)))


def train_and_score(job: tuple) -> tuple:
    """One (rule, seed): the supernet trained, then every ground-truth network scored on it."""
    space, rule, seed, passes, work, table_path, threads, extra = job
    if threads:
        torch.set_num_threads(threads)
    table = json.loads(Path(table_path).read_text())
    started = time.perf_counter()
    runner = make_runner(space, False, 1000 + seed, Path(work) / f"{space}_{rule}_s{seed}", table["dataset"],
                         extra)
    seed_everything(1000 + seed)
    recipe = Recipe(**RECIPE, epochs=10 ** 6)
    low, high = runner.extreme_blocks()
    task = SupernetTask(runner.supernet, rule, lambda rng: sample_arch(runner, rng), random.Random(f"rule-{seed}"),
                        largest=high, smallest=low)
    optimizer = make_optimizer(runner.supernet, recipe)
    epochs = rule_epochs(rule, passes)
    history = [m for _, m in train_epochs(runner.supernet, runner.full_data.train, optimizer, None, recipe,
                                          runner.dist, start=0, stop=epochs, seed=1000 + seed,
                                          desc=f"{rule} s{seed}", progress=False, task=task)]
    trained_s = time.perf_counter() - started
    scores = [_eval_arch(runner, n["blocks"], recipe) for n in table["networks"]]
    return (rule, seed), {"epochs": epochs, "passes_per_step": task.passes_per_step,
                          "train_images": runner.full_data.train.num_samples, "train_acc": history[-1]["acc"],
                          "trained_s": trained_s, "seconds": time.perf_counter() - started,
                          "supernet_val_top1": scores, **ranking(table, scores)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="fp-nas", choices=("fpnas", "fp-nas"))
    p.add_argument("--dataset", default=DATASET, help="the ground truth's task (a folder of bench/search_efficacy)")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--passes", type=int, default=4, help="epochs' worth of network passes per rule (default 4)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time, one thread each when more than one")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "supernet_ranking")
    p.add_argument("--out", type=Path)
    p.add_argument("--table", type=Path, help="the ground truth (default the study's, bench/search_efficacy/"
                   "<dataset>/ground_truth_<space>.json)")
    p.add_argument("--limit-train", type=int, help="train the supernet on this many images (default the study's)")
    p.add_argument("--limit-val", type=int, help="score on this many validation images (default all)")
    args = p.parse_args(argv)
    if args.passes < 1 or args.jobs < 1:
        print("error: --passes and --jobs must be at least 1", file=sys.stderr)
        return 2
    table_path = args.table or ROOT / "bench" / "search_efficacy" / args.dataset / f"ground_truth_{args.space}.json"
    if not table_path.exists():
        print(f"error: --space {args.space} --dataset {args.dataset}: no ground truth at {table_path}", file=sys.stderr)
        return 2
    extra = [*(["--limit-train", str(args.limit_train)] if args.limit_train else []),
             *(["--limit-val", str(args.limit_val)] if args.limit_val else [])]
    out = args.out or ROOT / "bench" / "supernet_ranking" / args.dataset / f"{args.space}.json"
    record = json.loads(out.read_text()) if out.exists() else {"space": args.space, "dataset": args.dataset,
                                                                "recipe": RECIPE, "runs": {}}
    threads = 1 if args.jobs > 1 else None
    jobs = [(args.space, r, s, args.passes, str(args.work), str(table_path), threads, extra) for r in args.rules
            for s in args.seeds if f"{r}_s{s}_p{args.passes}" not in record["runs"]]

    def done(key, result):
        rule, seed = key
        record["runs"][f"{rule}_s{seed}_p{args.passes}"] = {"rule": rule, "seed": seed, "passes": args.passes,
                                                           **result}
        record["command"] = " ".join(["python", "bench/supernet_ranking.py", *(argv or sys.argv[1:])])
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, record)
        print(f"{rule} seed {seed}: tau {result['kendall_tau']:.2f} all, {result['kendall_tau_band']:.2f} in band "
              f"({result['epochs']} epochs, {result['seconds']:.0f} s)", flush=True)

    run_jobs(jobs, args.jobs, "supernet ranking", done, work=train_and_score)
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    """Per rule and passes: the seeds' Kendall tau (mean ± sd, and each), beside mult-adds'."""
    groups: dict[tuple, list[dict]] = {}
    for r in record["runs"].values():
        groups.setdefault((r["rule"], r["passes"]), []).append(r)
    lines = ["| rule | passes (epochs) | seeds | Kendall τ all: mean ± sd (each) | in band | mult-adds τ all / band |",
             "|---|---|---|---|---|---|"]

    def ms(xs: list[float]) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        return f"{statistics.mean(xs):.2f} ± {sd:.2f} ({', '.join(f'{x:.2f}' for x in xs)})"

    for (rule, passes), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        lines.append(f"| {rule} | {passes} ({runs[0]['epochs']}) | {len(runs)} | "
                     f"{ms([r['kendall_tau'] for r in runs])} | {ms([r['kendall_tau_band'] for r in runs])} | "
                     f"{runs[0]['mult_adds_kendall_tau']:.2f} / {runs[0]['mult_adds_kendall_tau_band']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
