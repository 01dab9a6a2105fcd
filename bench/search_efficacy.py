"""Do the searchers find better networks than chance? Ground truth, random-search baselines and supernet ranking.

One script on purpose: the study's stages (ground truth, searches, baselines, tables, plot) share its settings and
resume from one work folder, and it is run by hand as one command.

    python bench/search_efficacy.py                    # the whole study (resumable: run it again to continue)
    python bench/search_efficacy.py --smoke            # plumbing, under 2 minutes, in runs/search_efficacy-smoke
    python bench/search_efficacy.py --stages search,baselines,report --tag before --code ../before --algos fp-nas
    python bench/search_efficacy.py --dataset marked-digits   # the same study on another task, in its own folders

On one task (`--dataset`, default `crowded-digits`; every folder of the study is per task: WORK/<dataset>,
RESULTS/<dataset>), for two spaces, each exactly the space of one search command (`STUDY`):

1. ground truth (stage `gt`): 40 architectures drawn uniformly (every search variable of every position uniform),
   the space's smallest and largest, and extra uniform draws kept only when their mult-adds fall in [0.85, 1.0] x
   the search's limit (rejection sampling) until 20 networks are in that band; each network records how it was
   drawn (`draw`: uniform, extreme, band), and statistics of "a random network" use the uniform draws only. Each
   is trained alone by `search.train`'s `train` with the `cluttered-digits` recipe (on either task) for the
   scoring seeds 0, 1, 2; test top-1 and mult-adds in RESULTS/<dataset>/ground_truth_<space>.json. `--jobs 2`
   trains two at a time, one thread each.
   another loop (stage `retest`): the first 12 in-band networks trained again with seeds 3, 4, 5 (other
   initialisations and batch orders) and Nesterov momentum on (the recipe's is off): something that should not
   matter. The report gives Spearman's rho between the two loops' mean test top-1
   (RESULTS/<dataset>/retest_<space>.json).
2. searches (stage `search`): `python -m search.run` of each searcher for 3 runs k = 0, 1, 2 (search seed
   1000 + k); each found network trained alone exactly as the ground truth (scoring seeds). The search's cost is
   the wall time of that subprocess as the study measures it (start-up, data, checkpoints and plots included).
3. baselines (stage `baselines`), per searcher run (every tag) with that run's wall time, one at a time:
   random search (fresh uniform draws within the limit, each trained alone for 1 epoch with seed 1000 + k, until the
   time is used, the best by validation kept; one trace per tag, space and k, run on to 2x the budget, so the
   picks at 0.5x, 1x and 2x the budget are prefixes of it) and random search with weight sharing (the space's
   supernet trained with a uniformly drawn architecture per step, seed 1000 + k, for 3/4 of the time, then fresh
   in-limit draws scored on the trained supernet by validation top-1 after BatchNorm recalibration until the time
   is used; the best kept). Each unit is timed from its first line, model and data construction included. Both
   picks are then trained alone with the scoring seeds, exactly as the searchers' picks. Afterwards (not timed) the
   trained supernet scores every ground-truth network: Kendall tau against standalone test top-1, over all of them
   and over the in-band ones, beside the Kendall tau of mult-adds alone.
4. report (stage `report`): RESULTS/<dataset>/results.json, search_efficacy.png and a Markdown summary on stdout.
   Every pick is measured against the same ground truth: its percentile among the uniform in-limit networks,
   regret to the best in-limit network, cost-adjusted residual (test top-1 minus the uniform in-limit networks'
   least-squares line on log mult-adds; bootstrap 90% interval over those networks), the number k of random
   in-limit networks whose expected best equals it, and its gain over the average random in-limit network.
   Every budget is also given in standalone epochs (seconds / the mean wall time of one 1-epoch training alone,
   random search's, in the same study). Two more rows per space: the largest ground-truth network under the limit
   (no search) and the best in-band ground-truth network (an oracle). The ground truth's test-retest statistics
   over its in-band networks (seed-pair Kendall tau, residual r, ICC) are the yardstick's ceiling.

Scoring seeds (the trainings that give a pick its test top-1) and proxy seeds (every training that chooses:
searches, 1-epoch trainings, supernets) never overlap (`plan`). Each unit of work (one training, one search, one
baseline) writes its result when done and is skipped when run again, so a killed study continues where it stopped
(an interrupted search or training resumes from its checkpoint; a resumed search's time is that of its last
attempt only, and is flagged). `--tag before --code DIR` runs the searches with the code in DIR (another checkout,
e.g. before a fix) and files them under that tag; `--tag halving --search-args '--select halving'` runs them with
options appended to the space's search command (an ablation row; a tag keeps the options it was first run with).
The ground truth is shared, and each tag's runs get baselines of their own at their own budgets, run right after
them: a baseline's seconds are only comparable with a search's measured on the same machine in the same state
(this VM ran the same FP-NAS search 2.5x slower on one day than on the day before).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # efficacy_stats, this script's neighbour

import torch  # noqa: E402
from efficacy_stats import (  # noqa: E402
    BAND,
    equivalent_draws,
    kendall_tau,
    loop_agreement,
    percentile,
    repeatability,
    residual_interval,
)
from tqdm import tqdm  # noqa: E402

from fpnas_zoo import count_spec, load_spec, save_spec  # noqa: E402
from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from search.algorithms import ALGORITHMS, settings_from_args  # noqa: E402
from search.data import SCENES  # noqa: E402
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

# The study's task: the one on which the ground truth's ranking repeats (bench/results/2026-12-05-yardstick-tasks.md).
DATASET = "crowded-digits"
DATASETS = tuple(SCENES)  # the tasks the study can run on: the generated scenes
RECIPE = "cluttered-digits"  # search.train's recipe for every network trained alone
# The search command of each space (seed and output added per run); the ground truth is drawn from its space.
STUDY = {
    "fpnas": ["--algo", "fpnas", "--preset", "demo", "--dataset", DATASET, "--width-mult", "0.5", "--stem-stride",
              "2", "--mult-adds-budget", "1.2e6", "--limit-train", "5000"],
    # At half width (the demo's quarter width has layers of 2-10 channels, which train differently on every seed).
    # Both searches see 5000 training images: on all 20000 an FP-NAS search takes about 21 minutes here (1560 steps
    # of 0.8 s), and each search is matched by 4x its time in baselines; on 5000 it took 3 to 4 (177-225 s).
    "fp-nas": ["--algo", "fp-nas", "--preset", "demo", "--dataset", DATASET, "--width-mult", "0.5",
               "--mult-adds-target", "2.7e6", "--epochs", "10", "--warmup-epochs", "2", "--coarse-to-fine-epochs", "5",
               "--limit-train", "5000"],
}
# train_seeds score a network (its test top-1 is their mean); proxy_seed + k seeds everything that chooses in run k.
FULL = dict(archs=40, band_networks=20, train_seeds=(0, 1, 2), search_seeds=(0, 1, 2), proxy_seed=1000,
            epochs=None, rs_epochs=1, anytime=(0.5, 1.0, 2.0), ws_score_share=0.25, budget_share=1.0, limit_train=None,
            limit_val=None, limit_test=None, retest_networks=12, retest_seeds=(3, 4, 5))
# --smoke: the plumbing only (numbers meaningless): few networks, one epoch on a few hundred images, tiny searches,
# baselines given a quarter of the search's time and random search's trace only to half of it (under 2 minutes).
SMOKE = dict(FULL, archs=2, band_networks=1, train_seeds=(0, 1), search_seeds=(0,), epochs=1, anytime=(0.5, 1.0),
             budget_share=0.25, limit_train=256, limit_val=128, limit_test=128,
             retest_networks=1, retest_seeds=(2, 3))
# The second loop of stage `retest`: what changes against the ground truth's (besides the seeds).
RETEST_CHANGE = {"nesterov": True}
SMOKE_SEARCH = {
    "fpnas": ["--block-optimisations", "1", "--limit-train", "128", "--limit-val", "64"],
    "fp-nas": ["--epochs", "2", "--warmup-epochs", "1", "--coarse-to-fine-epochs", "1", "--limit-train", "128",
               "--limit-val", "64"],
}
BASELINES = ("random search", "random search with weight sharing")
STAGES = ("gt", "retest", "search", "baselines", "report")


# ----------------------------------------------------------------------------- spaces


def study_limit(algo: str) -> float:
    """The mult-adds limit of the search command of `algo` (FPNAS's budget, FP-NAS's target)."""
    argv = STUDY[algo]
    return float(next(argv[i + 1] for i, a in enumerate(argv) if a in ("--mult-adds-budget", "--mult-adds-target")))


def search_argv(algo: str, smoke: bool, dataset: str = DATASET) -> list[str]:
    argv = STUDY[algo] + (SMOKE_SEARCH[algo] if smoke else [])
    argv[argv.index("--dataset") + 1] = dataset
    return argv


def make_runner(algo: str, smoke: bool, seed: int, out: Path, dataset: str = DATASET,
                extra: list[str] = ()) -> SearchRunner:
    """The wiring of the search command of `algo` (its space, data, cost and supernet), without running it;
    `dataset` replaces the study's; `extra` options are appended (a repeated option's last value wins)."""
    args = build_parser().parse_args(search_argv(algo, smoke, dataset) + list(extra)
                                     + ["--seed", str(seed), "--out", str(out)])
    settings = settings_from_args(args)
    return SearchRunner(ALGORITHMS[args.algo], settings, out, progress=False)


@functools.cache
def space_runner(algo: str, smoke: bool, work: Path, dataset: str) -> SearchRunner:
    """The runner (seed 0) that stages gt and retest draw, price and write the ground truth's specs with: one per
    space and process, built the first time one is needed (a finished stage builds none)."""
    return make_runner(algo, smoke, 0, work / "spaces" / algo, dataset)


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


def draw_in_limit(runner: SearchRunner, rng: random.Random, band: bool = False,
                  max_draws: int = 100000) -> tuple[list[dict], int]:
    """The next uniform draw of `rng` within the limit (and in BAND x the limit with `band`): rejection sampling."""
    for _ in range(max_draws):
        blocks = sample_arch(runner, rng)
        cost = runner.mult_adds(blocks)
        if limit_ok(runner, cost) and (not band or cost >= BAND[0] * runner.limit()):
            return blocks, cost
    raise SystemExit(f"none of {max_draws} uniform draws fell within the limit{' band' if band else ''}")


def within(table: dict, cost: float, band: bool = False) -> bool:
    """`limit_ok` for a ground-truth table (which records its limit), optionally in BAND x the limit too."""
    limit = table["limit"]
    ok = cost < limit if table["limit_hard"] else cost <= limit
    return ok and (not band or cost >= BAND[0] * limit)


# ----------------------------------------------------------------------------- seeds


def proxy_seed(cfg: dict, k: int) -> int:
    """The seed of every training that chooses in run k (search, 1-epoch trainings, supernet): never a scoring seed."""
    return cfg["proxy_seed"] + k


def plan(cfg: dict, algos: list[str], tags: list[str]) -> list[dict]:
    """Every training the stages launch, with its role ('score' gives a test top-1, 'proxy' chooses) and seed;
    the stages take their seeds from the same two sources (cfg['train_seeds'], proxy_seed)."""
    jobs = []
    for algo in algos:
        jobs += [{"stage": "gt", "unit": f"{algo} ground truth", "role": "score", "seed": s}
                 for s in cfg["train_seeds"]]
        jobs += [{"stage": "retest", "unit": f"{algo} ground truth, another loop", "role": "retest", "seed": s}
                 for s in cfg["retest_seeds"]]
        for k in cfg["search_seeds"]:
            units = [("search", f"{algo} search, {tag}, run {k}") for tag in tags]
            units += [("baselines", f"{algo} random search, run {k}")]  # one trace for every tag
            units += [("baselines", f"{algo} weight sharing, {tag}, run {k}") for tag in tags]
            for stage, unit in units:
                jobs.append({"stage": stage, "unit": f"{unit}: choosing", "role": "proxy", "seed": proxy_seed(cfg, k)})
                jobs += [{"stage": stage, "unit": f"{unit}: its pick", "role": "score", "seed": s}
                         for s in cfg["train_seeds"]]
    return jobs


def check_seeds(cfg: dict) -> None:
    jobs = plan(cfg, list(STUDY), ["after"])
    seeds = {role: {j["seed"] for j in jobs if j["role"] == role} for role in ("proxy", "score", "retest")}
    clash = seeds["proxy"] & (seeds["score"] | seeds["retest"])
    if clash:
        raise SystemExit(f"proxy and scoring seeds overlap: {sorted(clash)}")
    if seeds["score"] & seeds["retest"]:  # the second loop is another set of seeds
        raise SystemExit(f"scoring and retest seeds overlap: {sorted(seeds['score'] & seeds['retest'])}")


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
                                limit_train=cfg["limit_train"], limit_val=cfg["limit_val"],
                                limit_test=cfg.get("limit_test"),
                                ema_decay=cfg.get("ema_decay"), nesterov=cfg.get("nesterov"), progress=False))
    return {k: result[k] for k in ("val_top1", "test_top1", "seconds")}


def score_pick(spec_path: Path, out: Path, cfg: dict) -> dict:
    """A pick trained alone with every scoring seed: its runs and their mean test top-1 (as the ground truth).
    With cfg['jobs'] > 1 the seeds train that many at a time, one thread each, as the ground truth's did (after the
    timed part of every unit, so no method's clock sees them)."""
    jobs, runs = cfg.get("jobs", 1), {}
    threads = 1 if jobs > 1 else None
    run_jobs([(str(s), str(spec_path), str(out / f"alone_s{s}"), s, cfg, threads) for s in cfg["train_seeds"]],
             jobs, f"scoring {out.name}", lambda key, result: runs.__setitem__(key, result))
    runs = {str(s): runs[str(s)] for s in cfg["train_seeds"]}  # in seed order, whatever order they finished in
    return {"runs": runs, "test_top1": statistics.mean(r["test_top1"] for r in runs.values())}


def _train_job(job: tuple) -> tuple:
    key, spec_path, out, seed, cfg, threads = job
    return key, train_alone(Path(spec_path), Path(out), seed, cfg, threads=threads)


def run_jobs(jobs: list[tuple], workers: int, desc: str, on_done, work=None) -> None:
    """Run `work(job) -> (key, result)` on each job, `workers` at a time (more than one: in spawned processes), calling
    on_done(key, result) in order of completion. `work` defaults to training (key, spec, out, seed, cfg, threads)
    jobs alone; another must be a module-level function (spawned processes import it)."""
    work = work or _train_job
    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc=desc)
    if workers <= 1:
        for job in jobs:
            on_done(*work(job))
            bar.update()
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for key, result in pool.imap_unordered(work, jobs):
                on_done(key, result)
                bar.update()
    bar.close()


# ----------------------------------------------------------------------------- stage 1: ground truth


def record_runs(record: dict, path: Path, pending: list[tuple], jobs: int, desc: str) -> None:
    """Run the ((network index, seed), ...) training jobs `pending` and file each result as
    record['networks'][index]['runs'][seed], writing `path` after each one (so that a killed stage resumes)."""

    def done(key, result):
        i, seed = key
        record["networks"][i]["runs"][str(seed)] = result
        atomic_write_json(path, record)

    run_jobs(pending, jobs, desc, done)


def draw_ground_truth(runner: SearchRunner, algo: str, cfg: dict) -> list[tuple[str, str, list[dict], int]]:
    """(name, draw, blocks, mult-adds) of the ground truth: the extremes, cfg['archs'] uniform draws (seed
    'ground-truth-<space>'), then uniform draws kept only in BAND x the limit (seed 'ground-truth-band-<space>')
    until cfg['band_networks'] networks of all are in the band."""
    low, high = runner.extreme_blocks()
    nets = [("smallest", "extreme", low, runner.mult_adds(low)), ("largest", "extreme", high, runner.mult_adds(high))]
    rng = random.Random(f"ground-truth-{algo}")
    for i in range(cfg["archs"]):
        blocks = sample_arch(runner, rng)
        nets.append((f"random{i:02d}", "uniform", blocks, runner.mult_adds(blocks)))
    band_rng = random.Random(f"ground-truth-band-{algo}")
    in_band = sum(limit_ok(runner, c) and c >= BAND[0] * runner.limit() for *_, c in nets)
    for i in range(max(0, cfg["band_networks"] - in_band)):
        blocks, cost = draw_in_limit(runner, band_rng, band=True)
        nets.append((f"band{i:02d}", "band", blocks, cost))
    return nets


def gt_spec(algo: str, net: dict, runner: Callable[[], SearchRunner], work: Path) -> Path:
    """The spec file of a ground-truth network in WORK (written the first time, with the space's `runner()`)."""
    spec_path = work / "gt" / algo / f"{net['name']}.json"
    if not spec_path.exists():
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        save_spec(runner().spec_of(net["blocks"], name=f"gt_{algo.replace('-', '_')}_{net['name']}"), spec_path)
    return spec_path


def ground_truth(algo: str, cfg: dict, work: Path, results: Path, jobs: int, smoke: bool) -> dict:
    path = results / f"ground_truth_{algo}.json"
    table = json.loads(path.read_text()) if path.exists() else None
    runner = functools.partial(space_runner, algo, smoke, work, cfg["dataset"])
    if table is None:  # draw the architectures once; the table is the record of what to train
        networks = []
        for name, draw, blocks, _cost in draw_ground_truth(runner(), algo, cfg):
            spec = runner().spec_of(blocks, name=f"gt_{algo.replace('-', '_')}_{name}")
            counts = count_spec(spec)
            networks.append({"name": name, "draw": draw, "blocks": blocks, "mult_adds": counts.mult_adds,
                             "params": counts.params, "runs": {}})
        table = {"space": algo, "dataset": cfg["dataset"], "recipe": RECIPE, "limit": runner().limit(),
                 "limit_hard": runner().algorithm_class.cost_limit.hard, "band": list(BAND),
                 "search_command": shlex.join(["python", "-m", "search.run",
                                               *search_argv(algo, smoke, cfg["dataset"])]),
                 "command": shlex.join(["python", "bench/search_efficacy.py", *sys.argv[1:]]),
                 "train_seeds": list(cfg["train_seeds"]), "networks": networks}
        atomic_write_json(path, table)
    pending = []
    for i, net in enumerate(table["networks"]):
        spec_path = gt_spec(algo, net, runner, work)
        for seed in cfg["train_seeds"]:
            if str(seed) not in net["runs"]:
                pending.append(((i, seed), str(spec_path), str(work / "gt" / algo / f"{net['name']}_s{seed}"), seed,
                                cfg, 1 if jobs > 1 else None))
    record_runs(table, path, pending, jobs, f"ground truth {algo}")
    return table


def in_band(table: dict) -> list[dict]:
    """The ground-truth networks with mult-adds in BAND x the limit, in table order."""
    return [n for n in table["networks"] if within(table, n["mult_adds"], band=True)]


def retest(algo: str, table: dict, cfg: dict, work: Path, results: Path, jobs: int, smoke: bool) -> dict:
    """Stage `retest`: the ranking under another faithful loop. The first cfg['retest_networks'] in-band ground-truth
    networks trained again with seeds cfg['retest_seeds'] (other initialisations and batch orders) and RETEST_CHANGE
    (Nesterov momentum, which the recipe leaves off); RESULTS/<dataset>/retest_<space>.json."""
    path = results / f"retest_{algo}.json"
    record = json.loads(path.read_text()) if path.exists() else None
    if record is None:
        nets = in_band(table)[:cfg["retest_networks"]]
        record = {"space": algo, "dataset": table["dataset"], "recipe": RECIPE, "change": RETEST_CHANGE,
                  "seeds": list(cfg["retest_seeds"]), "ground_truth_seeds": table["train_seeds"],
                  "command": shlex.join(["python", "bench/search_efficacy.py", *sys.argv[1:]]),
                  "networks": [{"name": n["name"], "mult_adds": n["mult_adds"], "runs": {}} for n in nets]}
        atomic_write_json(path, record)
    loop = dict(cfg, **RETEST_CHANGE)
    runner = functools.partial(space_runner, algo, smoke, work, cfg["dataset"])
    truth = {n["name"]: n for n in table["networks"]}
    pending = [((i, seed), str(gt_spec(algo, truth[net["name"]], runner, work)),
                str(work / "gt" / algo / f"{net['name']}_retest_s{seed}"), seed, loop, 1 if jobs > 1 else None)
               for i, net in enumerate(record["networks"]) for seed in record["seeds"] if str(seed) not in net["runs"]]
    record_runs(record, path, pending, jobs, f"another loop {algo}")
    return record


def retest_agreement(table: dict, record: dict | None) -> dict | None:
    """The retested networks' mean test top-1 under the ground truth's loop against the other loop's
    (`loop_agreement`); None until every retest run is done or with fewer than 3 networks."""
    if record is None or len(record["networks"]) < 3 or any(len(n["runs"]) < len(record["seeds"])
                                                             for n in record["networks"]):
        return None
    truth = {n["name"]: n for n in table["networks"]}
    first = [[r["test_top1"] for r in truth[n["name"]]["runs"].values()] for n in record["networks"]]
    second = [[r["test_top1"] for r in n["runs"].values()] for n in record["networks"]]
    return dict(loop_agreement(first, second), change=record["change"], seeds=record["seeds"])


def gt_test(net: dict) -> float:
    return statistics.mean([r["test_top1"] for r in net["runs"].values()])


def same_blocks(a: list[dict], b: list[dict]) -> bool:
    """Equal architectures, whether or not one went through JSON (tuples read back as lists)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def gt_lookup(table: dict, blocks: list[dict]) -> dict | None:
    """The ground-truth network of these blocks, if it was drawn."""
    return next((n for n in table["networks"] if same_blocks(n["blocks"], blocks)), None)


# ----------------------------------------------------------------------------- stage 2: searches


def tag_options(work: Path, tag: str, search_args: list[str]) -> None:
    """A tag's searches all run with the same extra options: the first run of a tag records them
    (WORK/search/<tag>/options.json) and a later run of that tag with other options is refused."""
    path = work / "search" / tag / "options.json"
    if path.exists():
        recorded = json.loads(path.read_text())["search_args"]
        if recorded != search_args:
            raise SystemExit(f"error: --search-args: tag {tag!r} was run with {shlex.join(recorded) or 'none'}, "
                             f"not {shlex.join(search_args) or 'none'} (give another --tag)")
        return
    atomic_write_json(path, {"search_args": search_args})


def run_search(algo: str, k: int, cfg: dict, work: Path, tag: str, code: Path | None, smoke: bool,
               search_args: list[str] = ()) -> dict:
    """Search run k (seed proxy_seed(k)) timed as a whole subprocess; its pick trained alone with the scoring seeds.
    `search_args` are appended to the space's search command (the options a tag measures)."""
    out = work / "search" / tag / f"{algo}_s{k}"
    result_path = out / "efficacy.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    spec_path, clock_path = out / "spec.json", out / "study_clock.json"
    if not spec_path.exists():
        resumed = (out / "checkpoint.pt").exists()
        argv = [sys.executable, "-m", "search.run", *search_argv(algo, smoke, cfg["dataset"]), *search_args,
                "--seed", str(proxy_seed(cfg, k)), "--out", str(out), "--no-progress",
                *(["--resume"] if resumed else [])]
        env = dict(os.environ)
        cwd = code or ROOT
        env["PYTHONPATH"] = str(cwd)
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        out.mkdir(parents=True, exist_ok=True)
        (out / "search.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"search {algo} run {k} failed; see {out / 'search.log'}")
        atomic_write_json(clock_path, {"wall_time_s": wall, "resumed": resumed})
    if not clock_path.exists():
        raise SystemExit(f"{out}: a search without the study's clock; delete the folder and run it again")
    clock = json.loads(clock_path.read_text())
    spec = load_spec(spec_path)
    scored = score_pick(spec_path, out, cfg)
    result = {"algo": algo, "seed": k, "search_seed": proxy_seed(cfg, k), "tag": tag,
              "search_args": list(search_args), "wall_time_s": clock["wall_time_s"], "resumed": clock["resumed"],
              "searcher_wall_time_s": spec.search["wall_time_s"], "mult_adds": count_spec(spec).mult_adds,
              "blocks": [dict(b) for b in spec.blocks], "search_val_top1": spec.search.get("val_top1"), **scored}
    atomic_write_json(result_path, result)
    return result


# ----------------------------------------------------------------------------- stage 3: baselines


def rs_trace(algo: str, k: int, tag: str, until_s: float, cfg: dict, work: Path, smoke: bool) -> dict:
    """Random search run k: fresh uniform draws within the limit (seed 'rs-<space>-<k>'), each trained alone for
    `rs_epochs` with seed proxy_seed(k), until `until_s` seconds of the unit's clock are used (at least one trial,
    however long the set-up took). The clock starts at
    its first line (runner and data included) and adds each trial's whole wall time (draw, spec, model, data,
    training); the trace is kept and a later call that asks for more time continues it where it stopped."""
    out = work / "baselines" / tag / f"rs_{algo}_s{k}"
    path = out / "trace.json"
    trace = json.loads(path.read_text()) if path.exists() else None
    if trace is not None and trace["trials"] and trace["trials"][-1]["at_s"] >= until_s:
        return trace
    started = time.perf_counter()
    runner = make_runner(algo, smoke, proxy_seed(cfg, k), out / "space", cfg["dataset"])
    if trace is None:
        trace = {"algo": algo, "seed": k, "proxy_seed": proxy_seed(cfg, k), "epochs": cfg["rs_epochs"],
                 "setup_s": time.perf_counter() - started, "trials": []}
    rng = random.Random(f"rs-{algo}-{k}")
    for trial in trace["trials"]:  # replay the draws made, so that the sequence continues
        assert same_blocks(draw_in_limit(runner, rng)[0], trial["blocks"]), "random search's draws changed"
    at = trace["trials"][-1]["at_s"] if trace["trials"] else trace["setup_s"]
    while at < until_s or not trace["trials"]:  # at least one trial, however long the set-up took
        t0 = time.perf_counter()
        name = f"rs{len(trace['trials']):03d}"
        blocks, cost = draw_in_limit(runner, rng)
        spec_path = out / f"{name}.json"
        save_spec(runner.spec_of(blocks, name=f"rs_{algo.replace('-', '_')}_{k}_{name}"), spec_path)
        r = train_alone(spec_path, out / name, proxy_seed(cfg, k), cfg, epochs=cfg["rs_epochs"])
        wall = time.perf_counter() - t0
        at += wall
        trace["trials"].append({"name": name, "blocks": blocks, "mult_adds": cost, "val_top1": r["val_top1"],
                                "wall_s": wall, "train_s": r["seconds"], "at_s": at})
        atomic_write_json(path, trace)
    return trace


def pick_at(trace: dict, budget_s: float) -> dict:
    """The trial random search keeps at `budget_s`: the best by validation top-1 of those finished within it (the
    first trial, flagged, if none finished), with how many finished and when the last did."""
    done = [t for t in trace["trials"] if t["at_s"] <= budget_s]
    if not done:
        return dict(trace["trials"][0], trials=1, used_s=trace["trials"][0]["at_s"], over_budget=True)
    best = max(done, key=lambda t: t["val_top1"])
    return dict(best, trials=len(done), used_s=done[-1]["at_s"], over_budget=False)


def random_search(algo: str, k: int, tag: str, budget_s: float, table: dict, cfg: dict, work: Path,
                  smoke: bool) -> dict:
    out = work / "baselines" / tag / f"rs_{algo}_s{k}"
    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    trace = rs_trace(algo, k, tag, max(cfg["anytime"]) * budget_s, cfg, work, smoke)
    pick = pick_at(trace, budget_s)
    scored = score_pick(out / f"{pick['name']}.json", out / f"{pick['name']}_score", cfg)
    anytime = {}
    for f in cfg["anytime"]:
        p = pick_at(trace, f * budget_s)
        net = gt_lookup(table, p["blocks"])
        test = scored["test_top1"] if p["name"] == pick["name"] else gt_test(net) if net else None
        anytime[str(f)] = {"budget_s": f * budget_s, "chosen": p["name"], "trials": p["trials"],
                           "over_budget": p["over_budget"], "val_top1": p["val_top1"], "mult_adds": p["mult_adds"],
                           "test_top1": test,
                           "scored_by": ("scoring seeds" if p["name"] == pick["name"] else "ground truth" if net
                                         else None)}
    result = {"method": "random search", "algo": algo, "seed": k, "tag": tag, "proxy_seed": trace["proxy_seed"],
              "budget_s": budget_s, "used_s": pick["used_s"], "over_budget": pick["over_budget"],
              "trials": pick["trials"], "one_epoch_s": [t["wall_s"] for t in trace["trials"]],
              "chosen": pick["name"], "blocks": pick["blocks"], "mult_adds": pick["mult_adds"],
              "val_top1": pick["val_top1"], **scored, "anytime": anytime}
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


def weight_sharing(algo: str, k: int, tag: str, budget_s: float, table: dict, cfg: dict, work: Path,
                   smoke: bool) -> dict:
    """Random search with weight sharing, timed from its first line: the supernet trained with uniform sampling
    (seed proxy_seed(k)) while another epoch fits in (1 - ws_score_share) of the time (at least one epoch), then
    fresh in-limit draws scored on the trained supernet (recalibrated validation top-1) while another fits in the
    time (at least one); the best is trained alone with the scoring seeds. Afterwards (not timed) the trained
    supernet scores every ground-truth network, for the ranking measures."""
    out = work / "baselines" / tag / f"ws_{algo}_s{k}"
    path, chosen_path = out / "result.json", out / "chosen.json"
    if path.exists():
        return json.loads(path.read_text())
    if not chosen_path.exists():
        started = time.perf_counter()
        seed = proxy_seed(cfg, k)
        runner = make_runner(algo, smoke, seed, out / "space", cfg["dataset"])
        seed_everything(seed)
        recipe = Recipe(lr=0.05, weight_decay=5e-4, schedule="fixed", epochs=10 ** 6)
        model = _Uniform(runner, seed)
        optimizer = make_optimizer(runner.supernet, recipe)
        setup_s = time.perf_counter() - started
        epochs = 0
        for _epoch, _ in train_epochs(model, runner.full_data.train, optimizer, None, recipe, runner.dist, start=0,
                                     stop=10 ** 6, seed=seed, desc="uniform supernet", progress=False):
            epochs += 1
            elapsed = time.perf_counter() - started
            if elapsed + (elapsed - setup_s) / epochs > (1 - cfg["ws_score_share"]) * budget_s:
                break
        trained_s = time.perf_counter() - started
        rng, candidates = random.Random(f"ws-draws-{algo}-{k}"), []
        while True:  # every candidate is scored on the trained supernet
            t0 = time.perf_counter()
            blocks, cost = draw_in_limit(runner, rng)
            candidates.append({"blocks": blocks, "mult_adds": cost, "val_top1": _eval_arch(runner, blocks, recipe),
                               "eval_s": time.perf_counter() - t0})
            elapsed = candidates[-1]["at_s"] = time.perf_counter() - started
            if elapsed + statistics.mean(c["eval_s"] for c in candidates) > budget_s:
                break
        used = time.perf_counter() - started
        best = max(candidates, key=lambda c: c["val_top1"])
        save_spec(runner.spec_of(best["blocks"], name=f"ws_{algo.replace('-', '_')}_{k}"), out / "chosen_spec.json")
        # Not timed: the trained supernet's ranking of the ground truth, beside that of mult-adds alone.
        nets = table["networks"]
        scores = [_eval_arch(runner, n["blocks"], recipe) for n in nets]
        pool = [i for i, n in enumerate(nets) if within(table, n["mult_adds"])]
        gt_pick = nets[max(pool, key=lambda i: scores[i])] if pool else None
        atomic_write_json(chosen_path, {
            "budget_s": budget_s, "setup_s": setup_s, "trained_s": trained_s, "used_s": used,
            "supernet_epochs": epochs, "candidates": candidates, "chosen": best, "supernet_val_top1": scores,
            "ground_truth_pick": gt_pick and {"name": gt_pick["name"], "mult_adds": gt_pick["mult_adds"],
                                              "test_top1": gt_test(gt_pick)},
            **ranking(table, scores)})
    chosen = json.loads(chosen_path.read_text())
    scored = score_pick(out / "chosen_spec.json", out, cfg)
    result = {"method": "random search with weight sharing", "algo": algo, "seed": k, "tag": tag,
              "proxy_seed": proxy_seed(cfg, k), **{k_: v for k_, v in chosen.items() if k_ != "chosen"},
              "blocks": chosen["chosen"]["blocks"], "mult_adds": chosen["chosen"]["mult_adds"],
              "val_top1": chosen["chosen"]["val_top1"], **scored}
    atomic_write_json(path, result)
    return result


def ranking(table: dict, scores: list[float]) -> dict:
    """Kendall tau of `scores` (one per ground-truth network) and of mult-adds alone against the ground truth's
    test top-1, over all networks and over the in-band ones."""
    nets = table["networks"]
    truth, cost = [gt_test(n) for n in nets], [n["mult_adds"] for n in nets]
    band = [i for i, n in enumerate(nets) if within(table, n["mult_adds"], band=True)]
    sub = lambda xs: [xs[i] for i in band]  # noqa: E731
    return {"kendall_tau": kendall_tau(scores, truth), "kendall_tau_band": kendall_tau(sub(scores), sub(truth)),
            "mult_adds_kendall_tau": kendall_tau(cost, truth),
            "mult_adds_kendall_tau_band": kendall_tau(sub(cost), sub(truth)), "band_networks": len(band)}


# ----------------------------------------------------------------------------- stage 4: report


def reference(table: dict) -> dict:
    """What every pick of a space is measured against: the uniform in-limit ground truth (mean test top-1 and
    mult-adds) and the best in-limit network of any draw."""
    uni = [n for n in table["networks"] if n.get("draw", "uniform") == "uniform" and within(table, n["mult_adds"])]
    every = [gt_test(n) for n in table["networks"] if within(table, n["mult_adds"])]
    return {"tests": [gt_test(n) for n in uni], "costs": [n["mult_adds"] for n in uni],
            "best": max(every) if every else float("nan")}


def pick_measures(table: dict, cost: float, test: float) -> dict:
    """One pick against the ground truth: percentile among the uniform in-limit networks (ties half), regret to the
    best in-limit network, cost-adjusted residual with its bootstrap 90% interval, equivalent random draws, and the
    gain over the average uniform in-limit network."""
    ref = reference(table)
    if len(ref["tests"]) < 2:
        nan = float("nan")
        return {"percentile": nan, "regret": nan, "residual": nan, "residual_90": [nan, nan],
                "equivalent_draws": nan, "over_average": nan, "reference_networks": len(ref["tests"])}
    res, lo, hi = residual_interval(ref["tests"], ref["costs"], cost, test, seed=f"bootstrap-{table['space']}")
    return {"percentile": percentile(ref["tests"], test), "regret": ref["best"] - test, "residual": res,
            "residual_90": [lo, hi], "equivalent_draws": equivalent_draws(ref["tests"], test),
            "over_average": test - statistics.mean(ref["tests"]), "reference_networks": len(ref["tests"])}


def task_quality(table: dict) -> dict:
    """The task's bar: over uniform ground-truth networks of comparable cost (three equal-count cost bins),
    best minus median standalone test top-1, against the seed-to-seed standard deviation of one network (pooled over
    all networks: the root of the mean within-network variance)."""
    nets = sorted(table["networks"], key=lambda n: n["mult_adds"])
    seed_sd = math.sqrt(statistics.mean([statistics.variance([r["test_top1"] for r in n["runs"].values()])
                                         for n in nets if len(n["runs"]) > 1]))  # pooled over the networks
    uni = [n for n in nets if n.get("draw", "uniform") == "uniform"]
    bins = [uni[len(uni) * b // 3: len(uni) * (b + 1) // 3] for b in range(3)]
    spreads = [max(map(gt_test, b)) - statistics.median(map(gt_test, b)) for b in bins if b]
    return {"seed_sd": seed_sd, "bin_spreads": spreads, "mean_spread": statistics.mean(spreads),
            "ratio": statistics.mean(spreads) / seed_sd if seed_sd > 0 else float("inf"),
            "test_range": [min(map(gt_test, nets)), max(map(gt_test, nets))]}


def yardstick(table: dict) -> dict | None:
    """The ground truth's test-retest over its in-band networks (all scoring seeds): the ceiling of any ranking."""
    nets = in_band(table)
    seeds = sorted(set.intersection(*(set(n["runs"]) for n in nets))) if nets else []
    if len(nets) < 3 or len(seeds) < 2:
        return None
    return repeatability([[n["runs"][s]["test_top1"] for s in seeds] for n in nets], [n["mult_adds"] for n in nets])


def searcher_method(r: dict) -> str:
    return f"{r['algo']} search" + (f" ({r['tag']})" if r["tag"] != "after" else "")


def report(tables: dict, searches: list[dict], baselines: list[dict], results: Path,
           retests: dict | None = None) -> dict:
    traces: dict[tuple, list] = {}  # one trace per space and run, shared by the tags: its longest record
    for b in baselines:
        if b["method"] == BASELINES[0] and len(b["one_epoch_s"]) > len(traces.get((b["algo"], b["seed"]), [])):
            traces[b["algo"], b["seed"]] = b["one_epoch_s"]
    one_epoch = {}
    for a in tables:
        times = [t for (algo, _), ts in traces.items() if algo == a for t in ts]
        one_epoch[a] = statistics.mean(times) if times else None
    rows = []

    def row(space, method, tag, seed, r, seconds, budget):
        epochs = seconds / one_epoch[space] if seconds is not None and one_epoch[space] else None
        rows.append({"space": space, "method": method, "tag": tag, "seed": seed, "test_top1": r["test_top1"],
                     "mult_adds": r["mult_adds"], "seconds": seconds, "epochs_equivalent": epochs,
                     "budget_s": budget, **pick_measures(tables[space], r["mult_adds"], r["test_top1"])})

    for r in searches:
        row(r["algo"], searcher_method(r), r["tag"], r["seed"], r, r["wall_time_s"], r["wall_time_s"])
    for r in baselines:
        row(r["algo"], r["method"], r["tag"], r["seed"], r, r["used_s"], r["budget_s"])
    for a, t in tables.items():
        under = [n for n in t["networks"] if within(t, n["mult_adds"])]
        band = [n for n in under if within(t, n["mult_adds"], band=True)]
        for method, net in (("largest under the limit (no search)",
                             max(under, key=lambda n: n["mult_adds"]) if under else None),
                            ("best in-band ground truth (oracle)", max(band, key=gt_test) if band else None)):
            if net:
                row(a, method, None, None, {"test_top1": gt_test(net), "mult_adds": net["mult_adds"]}, None, None)
    wins = {}
    for r in rows:  # every searcher run (every tag) against each baseline given its own budget
        if r["method"] in {searcher_method(s) for s in searches}:
            for base in BASELINES:
                other = [b for b in rows if (b["space"], b["method"], b["tag"], b["seed"]) ==
                         (r["space"], base, r["tag"], r["seed"])]
                if other:
                    w = wins.setdefault(f"{r['method']} vs {base}", [0, 0])
                    w[0] += r["test_top1"] > other[0]["test_top1"]
                    w[1] += 1
    limits = {}
    for a, t in tables.items():
        ref = reference(t)
        limits[a] = {"limit": t["limit"], "uniform_networks": len(ref["tests"]), "best": ref["best"],
                     "mean": statistics.mean(ref["tests"]) if ref["tests"] else None,
                     "median": statistics.median(ref["tests"]) if ref["tests"] else None,
                     "band_networks": sum(within(t, n["mult_adds"], band=True) for n in t["networks"]),
                     "one_epoch_s": one_epoch[a]}
    ws = [b for b in baselines if b["method"] == BASELINES[1]]
    ranks = {}
    for a, t in tables.items():
        alone = ranking(t, [n["mult_adds"] for n in t["networks"]])
        ranks[a] = {"supernet_kendall_tau": [b["kendall_tau"] for b in ws if b["algo"] == a],
                    "supernet_kendall_tau_band": [b["kendall_tau_band"] for b in ws if b["algo"] == a],
                    "mult_adds_kendall_tau": alone["kendall_tau"], "mult_adds_kendall_tau_band":
                        alone["kendall_tau_band"], "band_networks": alone["band_networks"],
                    "supernet_ground_truth_pick": [b["ground_truth_pick"] for b in ws if b["algo"] == a]}
    anytime = [{"space": b["algo"], "tag": b["tag"], "seed": b["seed"], "picks": b["anytime"]}
               for b in baselines if b["method"] == BASELINES[0]]
    summary = {"dataset": next(iter(tables.values()))["dataset"], "tasks": {a: task_quality(t) for a, t in
                                                                            tables.items()},
               "rows": rows, "wins": wins, "under_limit": limits, "anytime": anytime,
               "ranking": ranks,
               "yardstick": {a: yardstick(t) for a, t in tables.items()},
               "another_loop": {a: retest_agreement(t, (retests or {}).get(a)) for a, t in tables.items()}}
    atomic_write_json(results / "results.json", summary)
    plot(tables, rows, results / "search_efficacy.png")
    print(markdown(summary))
    return summary


def _ms(xs: list[float], digits: int = 1) -> str:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "n/a"
    if any(math.isinf(x) for x in xs):
        return ", ".join("∞" if math.isinf(x) else f"{x:.{digits}f}" for x in xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = [f"Task: {summary['dataset']}", "",
             "| space | task: best − median per cost bin (pp) | seed-to-seed sd (pp) | ratio | test top-1 range |",
             "|---|---|---|---|---|"]
    for a, q in summary["tasks"].items():
        lines.append(f"| {a} | {', '.join(f'{s:.1f}' for s in q['bin_spreads'])} (mean {q['mean_spread']:.1f}) | "
                     f"{q['seed_sd']:.2f} | {q['ratio']:.1f}× | {q['test_range'][0]:.1f}–{q['test_range'][1]:.1f} |")
    lines += ["", "| space | method | budget of | runs | test top-1 (%) | M mult-adds | seconds | standalone epochs | "
              "percentile | regret (pp) | residual (pp) | equivalent draws | over average (pp) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for r in summary["rows"]:
        groups.setdefault((r["space"], r["method"], r["tag"]), []).append(r)
    for (space, method, tag), rs in groups.items():
        ci = " ".join(f"[{r['residual_90'][0]:.1f}, {r['residual_90'][1]:.1f}]" for r in rs)
        lines.append(f"| {space} | {method} | {tag or '–'} | {len(rs)} | {_ms([r['test_top1'] for r in rs])} | "
                     f"{_ms([r['mult_adds'] / 1e6 for r in rs], 2)} | {_ms([r['seconds'] for r in rs], 0)} | "
                     f"{_ms([r['epochs_equivalent'] for r in rs])} | {_ms([r['percentile'] for r in rs], 0)} | "
                     f"{_ms([r['regret'] for r in rs])} | {_ms([r['residual'] for r in rs])} (90%: {ci}) | "
                     f"{_ms([r['equivalent_draws'] for r in rs])} | {_ms([r['over_average'] for r in rs])} |")
    lines += ["", "| space | limit (M mult-adds) | uniform draws within it | best in-limit | mean | median | in-band "
              "networks | s per 1-epoch training |", "|---|---|---|---|---|---|---|---|"]
    for a, u in summary["under_limit"].items():
        if u["uniform_networks"]:
            lines.append(f"| {a} | {u['limit'] / 1e6:.2f} | {u['uniform_networks']} | {u['best']:.1f} | "
                         f"{u['mean']:.1f} | {u['median']:.1f} | {u['band_networks']} | "
                         f"{u['one_epoch_s'] or float('nan'):.1f} |")
    lines += ["", "| comparison (same run, its budget) | searcher better in |", "|---|---|"]
    for k, (w, n) in summary["wins"].items():
        lines.append(f"| {k} | {w} of {n} runs |")
    lines += ["", "| space | budget of | run | random search at a share of the budget: trials, test top-1 |",
              "|---|---|---|---|"]
    for c in summary["anytime"]:
        cells = [f"{f}×: {p['trials']}, " + (f"{p['test_top1']:.1f}" if p["test_top1"] is not None else
                                             f"not scored (val {p['val_top1']:.1f})") for f, p in c["picks"].items()]
        lines.append(f"| {c['space']} | {c['tag']} | {c['seed']} | {' / '.join(cells)} |")
    lines += ["", "| space | Kendall τ, trained supernet: all / in-band | mult-adds alone: all / in-band | "
              "ground truth seed pairs, in-band (ceiling): τ / residual r | ICC: 1 seed / mean of seeds | "
              "another loop: networks, Spearman / τ of the means |", "|---|---|---|---|---|---|"]
    for a, k in summary["ranking"].items():
        y, o = summary["yardstick"][a], summary.get("another_loop", {}).get(a)
        lines.append(f"| {a} | {_ms(k['supernet_kendall_tau'], 2)} / {_ms(k['supernet_kendall_tau_band'], 2)} | "
                     f"{k['mult_adds_kendall_tau']:.2f} / {k['mult_adds_kendall_tau_band']:.2f} | "
                     + (f"{y['kendall_tau']:.2f} / {y['residual_r']:.2f} | {y['icc1']:.2f} / "
                        f"{y['icc_mean_of_seeds']:.2f} | " if y else "n/a | n/a | ")
                     + (f"{o['networks']}, {o['spearman']:.2f} / {o['kendall_tau']:.2f} |" if o else "n/a |"))
    return "\n".join(lines)


def plot(tables: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 5), squeeze=False)
    markers = ["*", "P", "X", "D", "s", "^", "v", "<", ">"]
    for ax, (algo, table) in zip(axes[0], tables.items(), strict=True):
        for draw, color in (("uniform", "0.6"), ("extreme", "0.3"), ("band", "tab:olive")):
            nets = [n for n in table["networks"] if n.get("draw", "uniform") == draw]
            errs = [statistics.stdev([r["test_top1"] for r in n["runs"].values()]) if len(n["runs"]) > 1 else 0
                    for n in nets]
            ax.errorbar([n["mult_adds"] / 1e6 for n in nets], [gt_test(n) for n in nets], yerr=errs, fmt="o",
                        color=color, ms=4, label=f"ground truth, {draw} (mean ± sd of seeds)")
        methods = sorted({(r["method"], r["tag"] or "") for r in rows if r["space"] == algo})
        for m, (method, tag) in enumerate(methods):
            mine = [r for r in rows if r["space"] == algo and r["method"] == method and (r["tag"] or "") == tag]
            for j, r in enumerate(mine):
                ax.scatter(r["mult_adds"] / 1e6, r["test_top1"], marker=markers[m % len(markers)], s=90,
                           color=f"C{m}", label=(method + (f" [{tag}]" if tag and tag not in method else ""))
                           if j == 0 else None, zorder=3)
                if r["seed"] is not None:
                    ax.annotate(str(r["seed"]), (r["mult_adds"] / 1e6, r["test_top1"]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
        ax.axvline(table["limit"] / 1e6, color="0.3", ls="--", lw=1,
                   label="FPNAS budget" if algo == "fpnas" else "FP-NAS target")
        ax.set_title(f"{algo} space on {table['dataset']} (numbers: run)")
        ax.set_xlabel("mult-adds (M)")
        ax.set_ylabel("standalone test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main


def output_folders(smoke: bool, work: str | None, results: str | None) -> tuple[Path, Path]:
    """The work and results folders: the study's own by default; a smoke run's results stay in its work folder.
    The study writes into a subfolder per task of each."""
    work_path = Path(work) if work else ROOT / "runs" / ("search_efficacy-smoke" if smoke else "search_efficacy")
    if results:
        return work_path, Path(results)
    return work_path, work_path / "results" if smoke else ROOT / "bench" / "search_efficacy"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="plumbing only: a few networks, tiny trainings and searches")
    p.add_argument("--work", help="checkpoints and logs (default runs/search_efficacy, with --smoke "
                   "runs/search_efficacy-smoke), in a subfolder per --dataset")
    p.add_argument("--results", help="tables and the plot (default bench/search_efficacy, the committed results; "
                   "with --smoke WORK/results, so that a smoke run never writes over them), in a subfolder per "
                   "--dataset")
    p.add_argument("--dataset", default=DATASET, choices=DATASETS,
                   help=f"the task of the searches and of every training (default {DATASET})")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)} "
                   "(default all)")
    p.add_argument("--algos", default="fpnas,fp-nas")
    p.add_argument("--epochs", type=int, help="epochs of every network trained alone (ground truth, picks); "
                   "default: the cluttered-digits recipe's 3. Use a new --work and --results with it")
    p.add_argument("--jobs", type=int, default=1, help="trainings alone at a time (ground truth, retest, and the "
                   "scoring seeds of each pick; one thread each if > 1)")
    p.add_argument("--tag", default="after", help="files the searches under this name (stage search)")
    p.add_argument("--code", help="run the searches with the code of this checkout (stage search)")
    p.add_argument("--search-args", default="", metavar="ARGS",
                   help="options appended to every search command of this --tag (stage search), one quoted string, "
                        "e.g. --tag halving --search-args '--select halving'; a tag keeps the options it was first "
                        "run with")
    args = p.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else FULL, dataset=args.dataset, jobs=args.jobs)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    check_seeds(cfg)
    search_args = shlex.split(args.search_args)
    if search_args and args.tag == "after":
        print("error: --search-args: give them a --tag of their own (tag 'after' is the searchers' defaults)",
              file=sys.stderr)
        return 2
    work, results = (folder / args.dataset for folder in output_folders(args.smoke, args.work, args.results))
    stages, algos = args.stages.split(","), args.algos.split(",")
    if set(stages) - set(STAGES):
        print(f"error: --stages: {sorted(set(stages) - set(STAGES))} not in {', '.join(STAGES)}", file=sys.stderr)
        return 2
    unknown = [a for a in algos if a not in STUDY]
    if unknown:
        print(f"error: --algos: {unknown} not in {sorted(STUDY)}", file=sys.stderr)
        return 2
    results.mkdir(parents=True, exist_ok=True)
    missing = [str(results / f"ground_truth_{a}.json") for a in algos
               if "gt" not in stages and not (results / f"ground_truth_{a}.json").exists()]
    if missing:
        print(f"error: --stages without gt needs the ground truth: {', '.join(missing)} not found (run stage gt "
              "first, or give the --results that holds it)", file=sys.stderr)
        return 2
    tables = {a: ground_truth(a, cfg, work, results, args.jobs, args.smoke) if "gt" in stages else
              json.loads((results / f"ground_truth_{a}.json").read_text()) for a in algos}
    retests = {a: retest(a, tables[a], cfg, work, results, args.jobs, args.smoke) if "retest" in stages else
               json.loads((results / f"retest_{a}.json").read_text())
               if (results / f"retest_{a}.json").exists() else None for a in algos}
    if "search" in stages:
        tag_options(work, args.tag, search_args)
    for algo in algos:
        for k in cfg["search_seeds"]:
            if "search" in stages:
                run_search(algo, k, cfg, work, args.tag, Path(args.code).resolve() if args.code else None,
                           args.smoke, search_args)
    tags = sorted(d.name for d in (work / "search").glob("*") if d.is_dir()) if (work / "search").exists() else []
    searches, baselines = [], []
    for algo in algos:
        for k in cfg["search_seeds"]:
            for tag in tags:
                f = work / "search" / tag / f"{algo}_s{k}" / "efficacy.json"
                if not f.exists():
                    continue
                searches.append(json.loads(f.read_text()))
                budget = searches[-1]["wall_time_s"] * cfg["budget_share"]  # 1 but in --smoke
                if "baselines" in stages:  # every searcher run gets both baselines at its own budget
                    baselines.append(random_search(algo, k, tag, budget, tables[algo], cfg, work, args.smoke))
                    baselines.append(weight_sharing(algo, k, tag, budget, tables[algo], cfg, work, args.smoke))
                else:  # report what earlier runs measured
                    for kind in ("rs", "ws"):
                        b = work / "baselines" / tag / f"{kind}_{algo}_s{k}" / "result.json"
                        if b.exists():
                            baselines.append(json.loads(b.read_text()))
    if "report" in stages:
        report(tables, searches, baselines, results, retests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
