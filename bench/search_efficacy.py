"""Do the searchers find better networks than chance? Ground truth, random-search baselines and supernet ranking.

One script of about 540 lines on purpose: the study's stages (ground truth, searches, baselines, tables, plot) share
its settings and resume from one work folder, and it is run by hand as one command.

    python bench/search_efficacy.py                    # the whole study (resumable: run it again to continue)
    python bench/search_efficacy.py --smoke --work /tmp/se --results /tmp/se/results   # plumbing, about 3 minutes
    python bench/search_efficacy.py --stages search --tag before --code ../before --algos fp-nas

On `cluttered-digits` (search/data/cluttered.py: a digit at a random place and scale among fragments of other digits and
noise, 24x24, fixed train/val/test splits from disjoint source digits), for two spaces, each exactly the space of
one search command (`STUDY`):

1. ground truth (stage `gt`): 30 architectures drawn uniformly (every search variable of every position uniform),
   plus the space's smallest and largest, each trained alone by `search.train`'s `train` with the `cluttered-digits`
   recipe for 2 seeds; test top-1 and mult-adds in RESULTS/ground_truth_<space>.json. `--jobs 2` trains two at
   a time, one thread each (throughput only; no time is compared in this stage).
2. searches (stage `search`): `python -m search.run` of each searcher for 3 seeds; each found network trained alone
   exactly as the ground truth. Wall time recorded: it is the baselines' budget.
3. baselines (stage `baselines`), per searcher and seed, with that search's wall time, one at a time on the machine:
   random search (ground-truth architectures under the search's limit, in a seeded random order, each trained alone
   for 1 epoch until the time is used; the best by validation kept) and random search with weight sharing (the
   space's supernet trained with a uniformly drawn architecture per step, then the ground-truth architectures under
   the limit ranked by validation top-1 after BatchNorm recalibration; the best kept). Both choose among the
   ground-truth networks (themselves uniform draws), so their choice's standalone test top-1 is in the table.
   The uniform supernet also ranks all ground-truth networks: Kendall tau and Spearman rho against standalone test.
4. report (stage `report`): RESULTS/results.json, RESULTS/search_efficacy.png and a Markdown summary on stdout.

Each unit of work (one training, one search, one baseline) writes its result when done and is skipped when run
again, so a killed study continues where it stopped (an interrupted search or training resumes from its checkpoint).
`--tag before --code DIR` runs the searches with the code in DIR (another checkout, e.g. before a fix) and files
them under that tag; the ground truth and baselines are shared.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fpnas_zoo import count_spec, load_spec, save_spec  # noqa: E402
from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from search.algorithms import ALGORITHMS, settings_from_args  # noqa: E402
from search.engine import (  # noqa: E402
    Recipe,
    evaluate,
    make_optimizer,
    recalibrate_bn,
    train_epochs,
)
from search.run import build_parser  # noqa: E402
from search.runner import SearchRunner  # noqa: E402
from search.seeding import seed_everything  # noqa: E402
from search.supernet import FixedArch  # noqa: E402

DATASET = "cluttered-digits"
RECIPE = "cluttered-digits"  # search.train's recipe for every network trained alone
# The search command of each space (seed and output added per run); the ground truth is drawn from its space.
STUDY = {
    "fpnas": ["--algo", "fpnas", "--preset", "demo", "--dataset", DATASET, "--width-mult", "0.5", "--stem-stride",
              "2", "--mult-adds-budget", "1.2e6", "--limit-train", "5000"],
    "fp-nas": ["--algo", "fp-nas", "--preset", "demo", "--dataset", DATASET, "--mult-adds-target", "0.8e6", "--epochs",
               "10", "--warmup-epochs", "2", "--coarse-to-fine-epochs", "5"],
}
FULL = dict(archs=30, train_seeds=(0, 1), search_seeds=(0, 1, 2), epochs=None, rs_epochs=1, limit_train=None,
            limit_val=None)
# --smoke: the plumbing only (numbers meaningless): few networks, one epoch on a few hundred images, tiny searches.
SMOKE = dict(archs=2, train_seeds=(0, 1), search_seeds=(0,), epochs=1, rs_epochs=1, limit_train=256, limit_val=128)
SMOKE_SEARCH = {
    "fpnas": ["--block-optimisations", "1", "--limit-train", "128", "--limit-val", "64"],
    "fp-nas": ["--epochs", "2", "--warmup-epochs", "1", "--coarse-to-fine-epochs", "1", "--limit-train", "128",
               "--limit-val", "64"],
}


# ----------------------------------------------------------------------------- spaces


def study_limit(algo: str) -> float:
    """The mult-adds limit of the search command of `algo` (FPNAS's budget, FP-NAS's target)."""
    argv = STUDY[algo]
    return float(next(argv[i + 1] for i, a in enumerate(argv) if a in ("--mult-adds-budget", "--mult-adds-target")))


def search_argv(algo: str, smoke: bool) -> list[str]:
    return STUDY[algo] + (SMOKE_SEARCH[algo] if smoke else [])


def make_runner(algo: str, smoke: bool, seed: int, out: Path, dataset: str = DATASET) -> SearchRunner:
    """The wiring of the search command of `algo` (its space, data, cost and supernet), without running it;
    `dataset` replaces the study's."""
    argv = search_argv(algo, smoke)
    argv[argv.index("--dataset") + 1] = dataset
    args = build_parser().parse_args(argv + ["--seed", str(seed), "--out", str(out)])
    settings = settings_from_args(args)
    return SearchRunner(ALGORITHMS[args.algo], settings, out, progress=False)


def sample_arch(runner: SearchRunner, rng: random.Random) -> list[dict]:
    """One architecture with every search variable of every position uniform."""
    space = runner.space
    if hasattr(space, "sizes"):  # FP-NAS: a tuple of variables per layer
        return space.arch_blocks([[rng.randrange(n) for n in layer] for layer in space.sizes()])
    return [rng.choice(choices) for choices in space.candidates()]  # FPNAS: one categorical per position


def limit_ok(runner: SearchRunner, cost: int) -> bool:
    """Within the search's limit: under FPNAS's hard budget, at or under FP-NAS's target."""
    limit = runner.limit()
    return limit is None or (cost < limit if runner.algorithm_class.cost_limit.hard else cost <= limit)


# ----------------------------------------------------------------------------- training alone


def train_alone(spec_path: Path, out: Path, seed: int, cfg: dict, epochs: int | None = None,
                threads: int | None = None) -> dict:
    """`search.train`'s train() with the study's recipe; resumes an interrupted run; metrics.json when done."""
    from search.training import TrainOptions, train

    if threads:
        torch.set_num_threads(threads)
    done = out / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    result = train(TrainOptions(spec=str(spec_path), dataset=cfg.get("dataset", DATASET), out=out, recipe=RECIPE,
                                epochs=epochs or cfg["epochs"], seed=seed, resume=(out / "checkpoint.pt").exists(),
                                limit_train=cfg["limit_train"], limit_val=cfg["limit_val"], progress=False))
    return {k: result[k] for k in ("val_top1", "test_top1", "seconds")}


def _train_job(job: tuple) -> tuple:
    key, spec_path, out, seed, cfg, threads = job
    return key, train_alone(Path(spec_path), Path(out), seed, cfg, threads=threads)


def run_jobs(jobs: list[tuple], workers: int, desc: str, on_done) -> None:
    """Train (key, spec, out, seed, cfg, threads) jobs, `workers` at a time, calling on_done(key, result) in order
    of completion."""
    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc=desc)
    if workers <= 1:
        for job in jobs:
            on_done(*_train_job(job))
            bar.update()
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for key, result in pool.imap_unordered(_train_job, jobs):
                on_done(key, result)
                bar.update()
    bar.close()


# ----------------------------------------------------------------------------- stage 1: ground truth


def ground_truth(algo: str, cfg: dict, work: Path, results: Path, jobs: int, smoke: bool) -> dict:
    path = results / f"ground_truth_{algo}.json"
    table = json.loads(path.read_text()) if path.exists() else None
    runner = make_runner(algo, smoke, 0, work / "spaces" / algo)
    if table is None:  # draw the architectures once; the table is the record of what to train
        rng = random.Random(f"ground-truth-{algo}")
        archs = list(zip(("smallest", "largest"), runner.extreme_blocks(), strict=True))
        archs += [(f"random{i:02d}", sample_arch(runner, rng)) for i in range(cfg["archs"])]
        networks = []
        for name, blocks in archs:
            spec = runner.spec_of(blocks, name=f"gt_{algo.replace('-', '_')}_{name}")
            counts = count_spec(spec)
            networks.append({"name": name, "blocks": blocks, "mult_adds": counts.mult_adds, "params": counts.params,
                             "runs": {}})
        table = {"space": algo, "dataset": DATASET, "recipe": RECIPE,
                 "search_command": shlex.join(["python", "-m", "search.run", *search_argv(algo, smoke)]),
                 "command": shlex.join(["python", "bench/search_efficacy.py", *sys.argv[1:]]),
                 "train_seeds": list(cfg["train_seeds"]), "networks": networks}
        atomic_write_json(path, table)
    pending = []
    for i, net in enumerate(table["networks"]):
        spec_path = work / "gt" / algo / f"{net['name']}.json"
        if not spec_path.exists():
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            save_spec(runner.spec_of(net["blocks"], name=f"gt_{algo.replace('-', '_')}_{net['name']}"), spec_path)
        for seed in cfg["train_seeds"]:
            if str(seed) not in net["runs"]:
                pending.append(((i, seed), str(spec_path), str(work / "gt" / algo / f"{net['name']}_s{seed}"), seed,
                                cfg, 1 if jobs > 1 else None))

    def done(key, result):
        i, seed = key
        table["networks"][i]["runs"][str(seed)] = result
        atomic_write_json(path, table)

    run_jobs(pending, jobs, f"ground truth {algo}", done)
    return table


def gt_test(net: dict) -> float:
    return statistics.mean([r["test_top1"] for r in net["runs"].values()])


# ----------------------------------------------------------------------------- stage 2: searches


def run_search(algo: str, seed: int, cfg: dict, work: Path, tag: str, code: Path | None, smoke: bool) -> dict:
    out = work / "search" / tag / f"{algo}_s{seed}"
    result_path = out / "efficacy.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    spec_path = out / "spec.json"
    if not spec_path.exists():
        argv = [sys.executable, "-m", "search.run", *search_argv(algo, smoke), "--seed", str(seed), "--out",
                str(out), "--no-progress"]
        if (out / "checkpoint.pt").exists():
            argv.append("--resume")
        env = dict(os.environ)
        cwd = code or ROOT
        env["PYTHONPATH"] = str(cwd)
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "search.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"search {algo} seed {seed} failed; see {out / 'search.log'}")
    spec = load_spec(spec_path)
    runs = {}
    for s in cfg["train_seeds"]:
        runs[str(s)] = train_alone(spec_path, out / f"alone_s{s}", s, cfg)
    result = {"algo": algo, "seed": seed, "tag": tag, "wall_time_s": spec.search["wall_time_s"],
              "mult_adds": count_spec(spec).mult_adds, "blocks": [dict(b) for b in spec.blocks],
              "search_val_top1": spec.search.get("val_top1"), "runs": runs,
              "test_top1": statistics.mean([r["test_top1"] for r in runs.values()])}
    atomic_write_json(result_path, result)
    return result


# ----------------------------------------------------------------------------- stage 3: baselines


def random_search(algo: str, seed: int, budget_s: float, table: dict, cfg: dict, work: Path, smoke: bool) -> dict:
    """Ground-truth architectures under the limit, in a seeded order, each trained alone for `rs_epochs` until the
    search's wall time is used; the best by validation top-1 (only trainings finished within the time count)."""
    out = work / "baselines" / f"rs_{algo}_s{seed}"
    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    runner = make_runner(algo, smoke, seed, work / "spaces" / algo)
    pool = [i for i, n in enumerate(table["networks"]) if limit_ok(runner, n["mult_adds"])]
    random.Random(f"rs-{algo}-{seed}").shuffle(pool)
    tried, used = [], 0.0
    for i in pool:
        net = table["networks"][i]
        spec_path = work / "gt" / algo / f"{net['name']}.json"
        started = time.perf_counter()
        r = train_alone(spec_path, out / f"{net['name']}", seed, cfg, epochs=cfg["rs_epochs"])
        seconds = r.get("seconds", time.perf_counter() - started)
        if used + seconds > budget_s and tried:
            break
        used += seconds
        tried.append({"index": i, "name": net["name"], "val_top1": r["val_top1"], "seconds": seconds})
    best = max(tried, key=lambda t: t["val_top1"])
    net = table["networks"][best["index"]]
    result = {"method": "random search", "algo": algo, "seed": seed, "budget_s": budget_s, "used_s": used,
              "tried": tried, "chosen": best["name"], "mult_adds": net["mult_adds"], "test_top1": gt_test(net)}
    atomic_write_json(path, result)
    return result


def _eval_arch(runner: SearchRunner, blocks: list[dict], recipe: Recipe) -> float:
    model = FixedArch(runner.supernet, blocks)
    recalibrate_bn(model, runner.full_data.calib, runner.dist)
    return evaluate(model, runner.full_data.val, recipe, runner.dist)["top1"]


class _Uniform(torch.nn.Module):
    """The supernet with a uniformly drawn architecture per training step (evaluation runs `arch`)."""

    def __init__(self, runner: SearchRunner, seed: int):
        super().__init__()
        self.runner, self.supernet, self.rng = runner, runner.supernet, random.Random(f"ws-{seed}")

    def forward(self, x):
        return self.supernet(x, sample_arch(self.runner, self.rng))


def weight_sharing(algo: str, seed: int, budget_s: float, table: dict, cfg: dict, work: Path, smoke: bool) -> dict:
    """Random search with weight sharing: the supernet trained with uniform sampling, then the ground-truth
    architectures under the limit ranked by recalibrated validation top-1, all within the search's wall time.
    Afterwards (not timed) every ground-truth network is scored the same way, for the ranking measures."""
    from scipy.stats import kendalltau, spearmanr

    out = work / "baselines" / f"ws_{algo}_s{seed}"
    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    started = time.perf_counter()
    runner = make_runner(algo, smoke, seed, out)
    seed_everything(seed)
    recipe = Recipe(lr=0.05, weight_decay=5e-4, schedule="fixed", epochs=10 ** 6)
    model = _Uniform(runner, seed)
    optimizer = make_optimizer(runner.supernet, recipe)
    pool = [i for i, n in enumerate(table["networks"]) if limit_ok(runner, n["mult_adds"])]
    t0 = time.perf_counter()
    first = _eval_arch(runner, table["networks"][pool[0]]["blocks"], recipe)  # what one evaluation costs
    eval_s = time.perf_counter() - t0
    epochs, epoch_s = 0, 0.0
    for _epoch, _ in train_epochs(model, runner.full_data.train, optimizer, None, recipe, runner.dist, start=0,
                                 stop=10 ** 6, seed=seed, desc="uniform supernet", progress=False):
        epochs += 1
        elapsed = time.perf_counter() - started
        epoch_s = elapsed / epochs  # an upper bound on one more epoch (includes setup)
        if elapsed + epoch_s + eval_s * len(pool) > budget_s:
            break
    scores = {pool[0]: first}
    for i in pool[1:]:
        scores[i] = _eval_arch(runner, table["networks"][i]["blocks"], recipe)
    used = time.perf_counter() - started
    best = max(scores, key=scores.get)
    net = table["networks"][best]
    # Ranking quality over every ground-truth network (not part of the timed search).
    all_scores = [_eval_arch(runner, n["blocks"], recipe) if i not in scores else scores[i]
                  for i, n in enumerate(table["networks"])]
    truth = [gt_test(n) for n in table["networks"]]
    result = {"method": "random search with weight sharing", "algo": algo, "seed": seed, "budget_s": budget_s,
              "used_s": used, "supernet_epochs": epochs, "candidates": len(pool), "chosen": net["name"],
              "mult_adds": net["mult_adds"], "test_top1": gt_test(net),
              "supernet_val_top1": all_scores,
              "kendall_tau": float(kendalltau(all_scores, truth).statistic),
              "spearman_rho": float(spearmanr(all_scores, truth).statistic)}
    atomic_write_json(path, result)
    return result


# ----------------------------------------------------------------------------- stage 4: report


def percentile_and_regret(table: dict, cost: int, test: float) -> tuple[float, float, int]:
    """Among ground-truth networks of equal or lower cost: the share (%) with lower test top-1 (ties count half),
    the best one's test top-1 minus `test`, and how many there are."""
    peers = [gt_test(n) for n in table["networks"] if n["mult_adds"] <= cost]
    if not peers:
        return float("nan"), float("nan"), 0
    below = sum(1.0 if p < test else 0.5 if p == test else 0.0 for p in peers)
    return 100.0 * below / len(peers), max(peers) - test, len(peers)


def task_quality(table: dict) -> dict:
    """The task's bar: over ground-truth networks of comparable cost (three equal-count cost bins),
    best minus median standalone test top-1, against the seed-to-seed standard deviation of one network."""
    nets = sorted(table["networks"], key=lambda n: n["mult_adds"])
    seed_sd = statistics.mean([statistics.stdev([r["test_top1"] for r in n["runs"].values()]) for n in nets
                    if len(n["runs"]) > 1])
    bins = [nets[len(nets) * b // 3: len(nets) * (b + 1) // 3] for b in range(3)]
    spreads = [max(map(gt_test, b)) - statistics.median(map(gt_test, b)) for b in bins if b]
    return {"seed_sd": seed_sd, "bin_spreads": spreads, "mean_spread": statistics.mean(spreads),
            "ratio": statistics.mean(spreads) / seed_sd if seed_sd > 0 else float("inf"),
            "test_range": [min(map(gt_test, nets)), max(map(gt_test, nets))]}


def report(tables: dict, searches: list[dict], baselines: list[dict], results: Path) -> dict:
    rows = []
    for r in searches + baselines:
        table = tables[r["algo"]]
        pct, regret, peers = percentile_and_regret(table, r["mult_adds"], r["test_top1"])
        method = r.get("method") or (f"{r['algo']} search" + (f" ({r['tag']})" if r["tag"] != "after" else ""))
        rows.append({"space": r["algo"], "method": method, "seed": r["seed"], "test_top1": r["test_top1"],
                     "mult_adds": r["mult_adds"], "percentile": pct, "regret": regret, "peers": peers,
                     "seconds": r.get("wall_time_s", r.get("used_s"))})
    wins = {}
    for r in rows:  # per searcher (and tag) and seed: does it beat each baseline of the same seed?
        if r["method"].endswith(("search", "(before)")) and "random" not in r["method"]:
            for base in ("random search", "random search with weight sharing"):
                other = [b for b in rows if b["space"] == r["space"] and b["method"] == base and b["seed"] == r["seed"]]
                if other:
                    w = wins.setdefault(f"{r['method']} vs {base}", [0, 0])
                    w[0] += r["test_top1"] > other[0]["test_top1"]
                    w[1] += 1
    limits = {}
    for a, t in tables.items():
        under = [gt_test(n) for n in t["networks"] if n["mult_adds"] <= study_limit(a)]
        limits[a] = {"limit": study_limit(a), "networks": len(under), "best": max(under, default=None),
                     "median": statistics.median(under) if under else None}
    summary = {"tasks": {a: task_quality(t) for a, t in tables.items()}, "rows": rows, "wins": wins,
               "under_limit": limits,
               "ranking": {a: {k: [b[k] for b in baselines if b["algo"] == a and "kendall_tau" in b]
                               for k in ("kendall_tau", "spearman_rho")} for a in tables}}
    atomic_write_json(results / "results.json", summary)
    plot(tables, rows, results / "search_efficacy.png")
    print(markdown(summary))
    return summary


def _ms(xs: list[float], digits: int = 1) -> str:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["| space | task: best − median per cost bin (pp) | seed-to-seed sd (pp) | ratio | test top-1 range |",
             "|---|---|---|---|---|"]
    for a, q in summary["tasks"].items():
        lines.append(f"| {a} | {', '.join(f'{s:.1f}' for s in q['bin_spreads'])} (mean {q['mean_spread']:.1f}) | "
                     f"{q['seed_sd']:.2f} | {q['ratio']:.1f}× | {q['test_range'][0]:.1f}–{q['test_range'][1]:.1f} |")
    lines += ["", "| space | method | seeds | test top-1 (%) | M mult-adds | percentile at ≤ cost | regret (pp) | "
              "seconds |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for r in summary["rows"]:
        groups.setdefault((r["space"], r["method"]), []).append(r)
    for (space, method), rs in groups.items():
        lines.append(f"| {space} | {method} | {len(rs)} | {_ms([r['test_top1'] for r in rs])} | "
                     f"{_ms([r['mult_adds'] / 1e6 for r in rs], 2)} | {_ms([r['percentile'] for r in rs], 0)} | "
                     f"{_ms([r['regret'] for r in rs])} | {_ms([r['seconds'] or 0 for r in rs], 0)} |")
    lines += ["", "| space | limit (M mult-adds) | ground-truth networks within it | their best | median |",
              "|---|---|---|---|---|"]
    for a, u in summary["under_limit"].items():
        if u["networks"]:
            lines.append(f"| {a} | {u['limit'] / 1e6:.2f} | {u['networks']} | {u['best']:.1f} | {u['median']:.1f} |")
    lines += ["", "| comparison (same seed) | searcher better in |", "|---|---|"]
    for k, (w, n) in summary["wins"].items():
        lines.append(f"| {k} | {w} of {n} seeds |")
    lines += ["", "| space | Kendall τ (uniform supernet vs standalone) | Spearman ρ |", "|---|---|---|"]
    for a, k in summary["ranking"].items():
        lines.append(f"| {a} | {_ms(k['kendall_tau'], 2)} | {_ms(k['spearman_rho'], 2)} |")
    return "\n".join(lines)


def plot(tables: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 5), squeeze=False)
    markers = ["*", "P", "X", "D", "s", "^", "v"]
    for ax, (algo, table) in zip(axes[0], tables.items(), strict=True):
        xs = [n["mult_adds"] / 1e6 for n in table["networks"]]
        ys = [gt_test(n) for n in table["networks"]]
        errs = [statistics.stdev([r["test_top1"] for r in n["runs"].values()]) if len(n["runs"]) > 1 else 0
                for n in table["networks"]]
        ax.errorbar(xs, ys, yerr=errs, fmt="o", color="0.6", ms=4, label="ground truth (mean ± sd of seeds)")
        methods = sorted({r["method"] for r in rows if r["space"] == algo})
        for m, method in enumerate(methods):
            for r in (r for r in rows if r["space"] == algo and r["method"] == method):
                ax.scatter(r["mult_adds"] / 1e6, r["test_top1"], marker=markers[m % len(markers)], s=90, color=f"C{m}",
                           label=method if r["seed"] == min(x["seed"] for x in rows if x["method"] == method
                                                            and x["space"] == algo) else None, zorder=3)
                ax.annotate(str(r["seed"]), (r["mult_adds"] / 1e6, r["test_top1"]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        ax.axvline(study_limit(algo) / 1e6, color="0.3", ls="--", lw=1,
                   label="FPNAS budget" if algo == "fpnas" else "FP-NAS target")
        ax.set_title(f"{algo} space on {DATASET} (numbers: search seed)")
        ax.set_xlabel("mult-adds (M)")
        ax.set_ylabel("standalone test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main


def output_folders(smoke: bool, work: str | None, results: str | None) -> tuple[Path, Path]:
    """The work and results folders: the study's own by default; a smoke run's results stay in its work folder."""
    work_path = Path(work) if work else ROOT / "runs" / ("search_efficacy-smoke" if smoke else "search_efficacy")
    if results:
        return work_path, Path(results)
    return work_path, work_path / "results" if smoke else ROOT / "bench" / "search_efficacy"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="plumbing only: a few networks, tiny trainings and searches")
    p.add_argument("--work", help="checkpoints and logs (default runs/search_efficacy, with --smoke "
                   "runs/search_efficacy-smoke)")
    p.add_argument("--results", help="tables and the plot (default bench/search_efficacy, the committed results; "
                   "with --smoke WORK/results, so that a smoke run never writes over them)")
    p.add_argument("--stages", default="gt,search,baselines,report")
    p.add_argument("--algos", default="fpnas,fp-nas")
    p.add_argument("--epochs", type=int, help="epochs of every network trained alone (ground truth, found networks); "
                   "default: the cluttered-digits recipe's 3. Use a new --work and --results with it")
    p.add_argument("--jobs", type=int, default=1, help="ground-truth trainings at a time (one thread each if > 1)")
    p.add_argument("--tag", default="after", help="files the searches under this name (stage search)")
    p.add_argument("--code", help="run the searches with the code of this checkout (stage search)")
    args = p.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    work, results = output_folders(args.smoke, args.work, args.results)
    results.mkdir(parents=True, exist_ok=True)
    stages, algos = args.stages.split(","), args.algos.split(",")
    unknown = [a for a in algos if a not in STUDY]
    if unknown:
        print(f"error: --algos: {unknown} not in {sorted(STUDY)}", file=sys.stderr)
        return 2
    missing = [str(results / f"ground_truth_{a}.json") for a in algos
               if "gt" not in stages and not (results / f"ground_truth_{a}.json").exists()]
    if missing:
        print(f"error: --stages without gt needs the ground truth: {', '.join(missing)} not found (run stage gt "
              "first, or give the --results that holds it)", file=sys.stderr)
        return 2
    tables = {a: ground_truth(a, cfg, work, results, args.jobs, args.smoke) if "gt" in stages else
              json.loads((results / f"ground_truth_{a}.json").read_text()) for a in algos}
    searches, baselines = [], []
    tags = sorted({args.tag} | {d.name for d in (work / "search").glob("*") if d.is_dir()}) if (
        work / "search").exists() else [args.tag]
    for algo in algos:
        for seed in cfg["search_seeds"]:
            if "search" in stages:
                run_search(algo, seed, cfg, work, args.tag, Path(args.code).resolve() if args.code else None,
                           args.smoke)
    for algo in algos:
        for seed in cfg["search_seeds"]:
            for tag in tags:
                f = work / "search" / tag / f"{algo}_s{seed}" / "efficacy.json"
                if f.exists():
                    searches.append(json.loads(f.read_text()))
            after = work / "search" / "after" / f"{algo}_s{seed}" / "efficacy.json"
            if "baselines" in stages and after.exists():
                budget = json.loads(after.read_text())["wall_time_s"]
                baselines.append(random_search(algo, seed, budget, tables[algo], cfg, work, args.smoke))
                baselines.append(weight_sharing(algo, seed, budget, tables[algo], cfg, work, args.smoke))
            elif "baselines" not in stages:  # report what earlier runs measured
                for kind in ("rs", "ws"):
                    f = work / "baselines" / f"{kind}_{algo}_s{seed}" / "result.json"
                    if f.exists():
                        baselines.append(json.loads(f.read_text()))
    if "report" in stages:
        report(tables, searches, baselines, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
