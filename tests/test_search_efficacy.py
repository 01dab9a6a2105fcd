"""bench/search_efficacy.py: the study's plumbing (--smoke) end to end, and its measures on hand-made tables and
brute-force computations."""
from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_script("bench/search_efficacy.py")


def _net(name, cost, tests, draw="uniform"):
    return {"name": name, "draw": draw, "blocks": [name], "mult_adds": cost,
            "runs": {str(i): {"test_top1": t} for i, t in enumerate(tests)}}


def _table(hard=False):
    """Limit 100. Uniform draws within it: u1 51, u2 60, u3 72, u5 41 (u5 at the limit: in only when not hard);
    u4 is over it; the extreme and the band top-up b1 (80, the best within the limit) are not uniform draws."""
    return {"space": "fpnas", "dataset": "cluttered-digits", "limit": 100.0, "limit_hard": hard,
            "networks": [_net("smallest", 10, [30, 30], "extreme"), _net("u1", 20, [50, 52]), _net("u2", 40, [60, 60]),
                         _net("u3", 80, [70, 74]), _net("u4", 120, [90, 90]), _net("b1", 90, [80, 80], "band"),
                         _net("u5", 100, [40, 42])]}


def test_every_pick_is_placed_among_the_uniform_in_limit_ground_truth():
    b = _bench()
    m = b.pick_measures(_table(), 50, 65.0)  # a pick that is not in the table
    assert m["reference_networks"] == 4
    assert m["percentile"] == pytest.approx(75.0)  # above 51, 60, 41; below 72
    assert m["regret"] == pytest.approx(80 - 65)  # the band network is the best within the limit
    assert m["over_average"] == pytest.approx(65 - (51 + 60 + 72 + 41) / 4)
    assert b.pick_measures(_table(), 50, 60.0)["percentile"] == pytest.approx(100 * 2.5 / 4)  # a tie counts half
    hard = b.pick_measures(_table(hard=True), 50, 65.0)  # at the limit is over a hard budget: u5 drops out
    assert (hard["reference_networks"], hard["percentile"]) == (3, pytest.approx(200 / 3))
    # The residual: 65 minus numpy's least-squares line of the four uniform networks on log mult-adds, at 50.
    slope, intercept = np.polyfit(np.log([20, 40, 80, 100]), [51, 60, 72, 41], 1)
    assert m["residual"] == pytest.approx(65 - (intercept + slope * math.log(50)))
    lo, hi = m["residual_90"]
    assert lo <= hi


def test_the_residual_interval_collapses_on_an_exact_log_cost_line():
    stats = _bench()
    cost = [1e5 * (i + 1) for i in range(8)]
    acc = [20 + 3 * math.log(c) for c in cost]
    point, lo, hi = stats.residual_interval(acc, cost, 2.5e5, 70.0, seed="t")
    expected = 70.0 - (20 + 3 * math.log(2.5e5))
    assert (point, lo, hi) == (pytest.approx(expected), pytest.approx(expected), pytest.approx(expected))
    noisy = [a + (1.5 if i % 2 else -1.5) for i, a in enumerate(acc)]
    point, lo, hi = stats.residual_interval(noisy, cost, 2.5e5, 70.0, seed="t")
    assert lo < point < hi and stats.residual_interval(noisy, cost, 2.5e5, 70.0, seed="t")[1:] == (lo, hi)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 3.0], [5.0, 2.0, 2.0, 9.0, 7.0]])
def test_expected_best_of_k_matches_enumeration_and_inverts(values):
    b = _bench()
    stats = sys.modules["efficacy_stats"]
    for k in (1, 2, 3):
        brute = statistics.mean(max(t) for t in itertools.product(values, repeat=k))
        assert stats.expected_best_of_k(values, k) == pytest.approx(brute)
        assert b.equivalent_draws(values, brute) == pytest.approx(k, rel=1e-6)
    assert b.equivalent_draws(values, max(values)) == math.inf
    assert b.equivalent_draws(values, min(values)) == 0.0


def test_proxy_and_scoring_seeds_never_overlap():
    b = _bench()
    for cfg in (b.FULL, b.SMOKE):
        jobs = b.plan(cfg, list(b.STUDY), ["after", "before"])
        proxy = {j["seed"] for j in jobs if j["role"] == "proxy"}
        score = {j["seed"] for j in jobs if j["role"] == "score"}
        assert score == set(cfg["train_seeds"]) and proxy == {1000 + k for k in cfg["search_seeds"]}
        assert not proxy & score
        assert {j["stage"] for j in jobs if j["role"] == "proxy"} == {"search", "baselines"}
        b.check_seeds(cfg)
    assert b.FULL["train_seeds"] == (0, 1, 2) and b.FULL["budget_share"] == 1.0  # the study: the search's time
    with pytest.raises(SystemExit, match="overlap"):
        b.check_seeds(dict(b.FULL, proxy_seed=2))
    retest = {j["seed"] for j in b.plan(b.FULL, ["fp-nas"], ["after"]) if j["role"] == "retest"}
    assert retest == {3, 4, 5}  # the second loop's seeds: neither scoring nor proxy seeds
    with pytest.raises(SystemExit, match="scoring and retest seeds overlap"):
        b.check_seeds(dict(b.FULL, retest_seeds=(2, 3)))
    with pytest.raises(SystemExit, match="proxy and scoring seeds overlap"):
        b.check_seeds(dict(b.FULL, retest_seeds=(1000,)))


def test_ground_truth_is_uniform_draws_extremes_and_band_top_ups():
    b = _bench()
    space = SimpleNamespace(candidates=lambda: [[0, 1, 2, 3]] * 4)
    runner = SimpleNamespace(space=space, algorithm_class=SimpleNamespace(cost_limit=SimpleNamespace(hard=True)),
                             limit=lambda: 10.0, mult_adds=lambda blocks: sum(blocks) + 1,
                             extreme_blocks=lambda: ([0] * 4, [3] * 4))
    nets = b.draw_ground_truth(runner, "x", dict(archs=12, band_networks=6))
    assert [n[:2] for n in nets[:2]] == [("smallest", "extreme"), ("largest", "extreme")]
    rng = random.Random("ground-truth-x")
    uniform = [[rng.choice([0, 1, 2, 3]) for _ in range(4)] for _ in range(12)]
    assert [n[2] for n in nets if n[1] == "uniform"] == uniform
    in_band = sum(sum(u) + 1 == 9 for u in uniform)  # [8.5, 10) with a hard limit of 10: cost 9 only
    assert in_band < 6
    band_rng, top_ups = random.Random("ground-truth-band-x"), []
    while len(top_ups) < 6 - in_band:  # rejection sampling, by hand
        blocks = [band_rng.choice([0, 1, 2, 3]) for _ in range(4)]
        if sum(blocks) + 1 == 9:
            top_ups.append(blocks)
    assert [n[2] for n in nets if n[1] == "band"] == top_ups
    assert [n[3] for n in nets if n[1] == "band"] == [9] * len(top_ups)
    assert sum(n[3] == 9 for n in nets) == 6


def test_random_search_keeps_the_best_trial_finished_within_the_time():
    b = _bench()
    trace = {"trials": [{"name": f"t{i}", "at_s": at, "val_top1": v}
                        for i, (at, v) in enumerate([(10, 50), (20, 70), (30, 60), (40, 80)])]}
    assert (lambda p: (p["name"], p["trials"], p["used_s"], p["over_budget"]))(b.pick_at(trace, 35)) == \
        ("t1", 3, 30, False)
    assert b.pick_at(trace, 40)["name"] == "t3"
    assert (lambda p: (p["name"], p["over_budget"]))(b.pick_at(trace, 8)) == ("t0", True)


def test_random_search_trains_one_network_even_when_its_set_up_outlasts_the_time(tmp_path, monkeypatch):
    """A set-up (runner, data) longer than the whole budget still leaves one trial, flagged over budget, to pick."""
    b = _bench()
    clock = iter(range(0, 1000, 50))  # every reading of the clock 50 s after the last: the set-up alone takes 50 s
    monkeypatch.setattr(b.time, "perf_counter", lambda: next(clock))
    space = SimpleNamespace(candidates=lambda: [[{"type": "skip", "out_chs": 8, "stride": 1}]])
    runner = SimpleNamespace(space=space, limit=lambda: None, mult_adds=lambda blocks: 1000,
                             algorithm_class=SimpleNamespace(cost_limit=SimpleNamespace(hard=True)),
                             spec_of=lambda blocks, name: name)
    monkeypatch.setattr(b, "make_runner", lambda *a, **k: runner)
    monkeypatch.setattr(b, "save_spec", lambda spec, path: None)
    trained = []
    monkeypatch.setattr(b, "train_alone", lambda spec, out, seed, cfg, epochs: trained.append(out) or
                        {"val_top1": 12.5, "seconds": 1.0})
    cfg = dict(b.FULL, dataset="crowded-digits")
    trace = b.rs_trace("fpnas", 0, "after", 10.0, cfg, tmp_path, smoke=False)
    assert len(trained) == 1 and [t["name"] for t in trace["trials"]] == ["rs000"]
    assert trace["setup_s"] == 50 and trace["trials"][0]["at_s"] == 100  # set-up, then one trial of 50 s
    assert (lambda p: (p["name"], p["trials"], p["over_budget"]))(b.pick_at(trace, 10.0)) == ("rs000", 1, True)
    assert json.loads((tmp_path / "baselines" / "after" / "rs_fpnas_s0" / "trace.json").read_text()) == trace


def test_report_compares_every_tag_with_baselines_at_its_own_budget(tmp_path, capsys):
    b = _bench()
    table = _table()
    searches = [{"algo": "fpnas", "tag": "after", "seed": 0, "test_top1": 65.0, "mult_adds": 50, "wall_time_s": 30.0},
                {"algo": "fpnas", "tag": "before", "seed": 0, "test_top1": 75.0, "mult_adds": 60,
                 "wall_time_s": 60.0}]

    def rs(tag, test, times):
        return {"method": "random search", "algo": "fpnas", "tag": tag, "seed": 0, "test_top1": test,
                "mult_adds": 70, "used_s": 28.0, "budget_s": 30.0, "one_epoch_s": times,
                "anytime": {"1.0": {"trials": 3, "test_top1": test, "val_top1": 50.0}}}

    def ws(tag, test):
        return {"method": "random search with weight sharing", "algo": "fpnas", "tag": tag, "seed": 0,
                "test_top1": test, "mult_adds": 70, "used_s": 29.0, "budget_s": 30.0, "kendall_tau": 0.5,
                "kendall_tau_band": 0.0, "ground_truth_pick": None}

    baselines = [rs("after", 60.0, [2.0, 4.0]), ws("after", 70.0), rs("before", 72.0, [2.0, 4.0, 6.0]),
                 ws("before", 80.0)]
    summary = b.report({"fpnas": table}, searches, baselines, tmp_path)
    assert summary["wins"] == {"fpnas search vs random search": [1, 1],
                               "fpnas search vs random search with weight sharing": [0, 1],
                               "fpnas search (before) vs random search": [1, 1],
                               "fpnas search (before) vs random search with weight sharing": [0, 1]}
    rows = {(r["method"], r["tag"]): r for r in summary["rows"]}
    # random search's pick (60, not in the table) is placed among the same four uniform networks as every pick
    assert rows["random search", "after"]["percentile"] == pytest.approx(62.5)
    assert rows["fpnas search", "after"]["percentile"] == pytest.approx(75.0)
    # one 1-epoch training: the mean of the longest trace of the run (2, 4, 6 s), whatever tag read it
    assert rows["fpnas search", "after"]["epochs_equivalent"] == pytest.approx(30 / 4)
    assert rows["largest under the limit (no search)", None]["test_top1"] == pytest.approx(41)
    assert rows["best in-band ground truth (oracle)", None]["test_top1"] == pytest.approx(80)
    assert summary["ranking"]["fpnas"]["supernet_kendall_tau"] == [0.5, 0.5]
    assert json.loads((tmp_path / "results.json").read_text())["wins"] == summary["wins"]
    assert "| fpnas search (before) vs random search | 1 of 1 runs |" in capsys.readouterr().out


def test_ranking_over_all_and_in_band_networks_by_hand():
    b = _bench()
    table = _table()  # in band [85, 100]: b1 (90, test 80) and u5 (100, test 41)
    scores = [1, 2, 3, 4, 5, 6, 7]  # by table order: the truths are 30 51 60 72 90 80 41
    r = b.ranking(table, scores)
    # 21 pairs; discordant where a later network has the lower truth: 90>80, 90>41, 80>41, 51>41, 60>41, 72>41.
    assert r["kendall_tau"] == pytest.approx((15 - 6) / 21)
    assert r["kendall_tau_band"] == pytest.approx(-1.0) and r["band_networks"] == 2
    assert r["mult_adds_kendall_tau_band"] == pytest.approx(-1.0)  # b1 is cheaper and better than u5


def test_task_quality_by_hand():
    b = _bench()
    table = {"networks": [_net("a", 10, [50, 52]), _net("b", 20, [60, 60]), _net("c", 30, [70, 74]),
                          _net("d", 40, [40, 42]), _net("e", 50, [80, 80]), _net("f", 60, [55, 57]),
                          _net("g", 45, [99, 99], "band")]}
    q = b.task_quality(table)
    sds = [statistics.stdev(x) for x in ([50, 52], [60, 60], [70, 74], [40, 42], [80, 80], [55, 57], [99, 99])]
    assert q["seed_sd"] == pytest.approx(math.sqrt(sum(sd**2 for sd in sds) / 7))  # pooled, not the mean of sds
    # Cost bins of the uniform draws {a, b}, {c, d}, {e, f}: best minus median = 60-55.5, 72-56.5, 80-68.
    assert q["bin_spreads"] == pytest.approx([4.5, 15.5, 12.0])


def test_loop_agreement_by_hand():
    stats = load_script("bench/efficacy_stats.py")
    # Means 51, 60, 72, 80 in the first loop; 41, 70, 60, 90 in the second: ranks 1 2 3 4 against 1 3 2 4, so
    # sum d^2 = 2 and Spearman 1 - 6 * 2 / (4 * 15) = 0.8; Kendall (5 - 1) / 6; mean shift 65.25 - 65.75.
    first = [[50, 52], [60, 60], [70, 74], [80, 80]]
    second = [[40, 42], [70, 70], [60, 60], [90, 90]]
    a = stats.loop_agreement(first, second)
    assert a["spearman"] == pytest.approx(0.8) and a["kendall_tau"] == pytest.approx(4 / 6)
    assert a["mean_shift"] == pytest.approx(-0.5) and a["networks"] == 4


def test_another_loop_is_compared_on_the_retested_in_band_networks():
    b = _bench()
    table = _table()
    assert [n["name"] for n in b.in_band(table)] == ["b1", "u5"]
    table["networks"].append(_net("b2", 95, [70, 71], "band"))
    record = {"change": {"nesterov": True}, "seeds": [3, 4],
              "networks": [{"name": n, "runs": {"3": {"test_top1": x}, "4": {"test_top1": y}}}
                           for n, x, y in (("b1", 79, 81), ("u5", 60, 62), ("b2", 50, 50))]}
    a = b.retest_agreement(table, record)  # ground truth 80, 41, 70.5 against 80, 61, 50
    assert a["spearman"] == pytest.approx(0.5) and a["kendall_tau"] == pytest.approx(1 / 3)
    assert a["change"] == {"nesterov": True} and a["seeds"] == [3, 4]
    del record["networks"][2]["runs"]["4"]
    assert b.retest_agreement(table, record) is None  # not until every retest run is done
    assert "another loop" in b.markdown(dict(_summary_without_rows(), another_loop={"fpnas": a}))


def _summary_without_rows():
    return {"dataset": "crowded-digits", "tasks": {}, "rows": [], "under_limit": {}, "wins": {}, "anytime": [],
            "ranking": {"fpnas": {"supernet_kendall_tau": [], "supernet_kendall_tau_band": [],
                                  "mult_adds_kendall_tau": 0.1, "mult_adds_kendall_tau_band": 0.2}},
            "yardstick": {"fpnas": None}}


def test_an_unknown_stage_is_refused_before_any_folder_is_made(tmp_path, capsys):
    results = tmp_path / "results"
    assert _bench().main(["--stages", "gt,retset", "--results", str(results), "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.strip() == ("error: --stages: ['retset'] not in gt, retest, search, baselines, "
                                               "report")
    assert not results.exists() and not (tmp_path / "w").exists()


def test_search_args_need_a_tag_of_their_own(tmp_path, capsys):
    results = tmp_path / "results"
    assert _bench().main(["--stages", "search", "--search-args", "--select halving", "--results", str(results),
                          "--work", str(tmp_path / "w")]) == 2
    assert "--search-args: give them a --tag of their own" in capsys.readouterr().err
    assert not results.exists() and not (tmp_path / "w").exists()


def test_a_tag_keeps_the_search_args_it_was_first_run_with(tmp_path):
    study = _bench()
    study.tag_options(tmp_path, "halving", ["--select", "halving"])
    study.tag_options(tmp_path, "halving", ["--select", "halving"])  # the same again: accepted
    with pytest.raises(SystemExit, match="tag 'halving' was run with --select halving, not none"):
        study.tag_options(tmp_path, "halving", [])
    assert json.loads((tmp_path / "search" / "halving" / "options.json").read_text()) == {
        "search_args": ["--select", "halving"]}


def test_a_tags_search_args_reach_the_search_command(tmp_path, monkeypatch):
    study = _bench()
    seen = []

    class Stop(Exception):
        pass

    def run(argv, **kwargs):
        seen.append(argv)
        raise Stop

    monkeypatch.setattr(study.subprocess, "run", run)
    with pytest.raises(Stop):
        study.run_search("fp-nas", 1, dict(study.FULL, dataset=study.DATASET), tmp_path, "x", None, False,
                         ["--final", "band"])
    argv = seen[0]
    assert argv[argv.index("search.run") + 1:][:len(study.STUDY["fp-nas"])] == study.STUDY["fp-nas"]
    i = argv.index("--final")
    assert argv[i + 1] == "band" and i > argv.index("--coarse-to-fine-epochs")  # after the space's own options
    assert argv[argv.index("--seed") + 1] == "1001"


@pytest.mark.parametrize("jobs, threads", [(1, None), (2, 1)])
def test_scoring_seeds_train_jobs_at_a_time_one_thread_each_and_file_in_seed_order(tmp_path, monkeypatch, jobs,
                                                                                    threads):
    study = _bench()
    seen = {}

    def run_jobs(todo, workers, desc, on_done):
        seen["workers"], seen["threads"] = workers, {job[5] for job in todo}
        for key, _spec, out, seed, _cfg, _threads in reversed(todo):  # finishing out of order
            assert out == str(tmp_path / f"alone_s{seed}")
            on_done(key, {"test_top1": float(seed), "val_top1": 0.0, "seconds": 1.0})

    monkeypatch.setattr(study, "run_jobs", run_jobs)
    scored = study.score_pick(tmp_path / "spec.json", tmp_path, dict(train_seeds=(0, 1, 2), jobs=jobs))
    assert seen == {"workers": jobs, "threads": {threads}}
    assert list(scored["runs"]) == ["0", "1", "2"] and scored["test_top1"] == 1.0


def test_a_smoke_run_never_defaults_to_the_committed_results():
    study = load_script("bench/search_efficacy.py")
    committed = ROOT / "bench" / "search_efficacy"
    work, results = study.output_folders(True, None, None)
    assert results == work / "results" and committed not in (work, results, *results.parents)
    assert study.output_folders(False, None, None)[1] == committed  # the full study writes the committed tables
    assert study.output_folders(True, "/tmp/w", "/tmp/r") == (Path("/tmp/w"), Path("/tmp/r"))


@pytest.mark.slow
def test_smoke_study_writes_tables_measures_and_plot(tmp_path):
    """The command docs/search.md gives, in --smoke mode: every stage runs and leaves what the report needs."""
    results = tmp_path / "results"
    committed = {p: p.read_bytes() for p in (ROOT / "bench" / "search_efficacy").rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "bench/search_efficacy.py", "--smoke", "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.read_bytes() for p in committed} == committed  # the committed study is left as it was
    dataset = load_script("bench/search_efficacy.py").DATASET
    results, work = results / dataset, tmp_path / "work" / dataset  # a folder per task
    for algo in ("fpnas", "fp-nas"):
        table = json.loads((results / f"ground_truth_{algo}.json").read_text())
        assert table["dataset"] == dataset == "crowded-digits"
        names = [n["name"] for n in table["networks"]]
        assert names[:4] == ["smallest", "largest", "random00", "random01"]
        assert [n["draw"] for n in table["networks"][:4]] == ["extreme", "extreme", "uniform", "uniform"]
        assert sum(0.85 * table["limit"] <= n["mult_adds"] <= table["limit"] for n in table["networks"]) >= 1
        costs = [n["mult_adds"] for n in table["networks"]]
        assert costs[0] == min(costs) and costs[1] == max(costs)
        assert all(set(n["runs"]) == {"0", "1"} for n in table["networks"])
        assert "search.run" in table["search_command"] and "search_efficacy.py" in table["command"]
        search = json.loads((work / "search" / "after" / f"{algo}_s0" / "efficacy.json").read_text())
        spec = json.loads((work / "search" / "after" / f"{algo}_s0" / "spec.json").read_text())
        assert json.dumps(spec).count('"seed": 1000') >= 1 and search["search_seed"] == 1000  # a proxy seed
        assert search["wall_time_s"] >= search["searcher_wall_time_s"]  # the study's clock holds the searcher's
        ws = json.loads((work / "baselines" / "after" / f"ws_{algo}_s0" / "result.json").read_text())
        assert ws["supernet_epochs"] >= 1 and all(c["at_s"] > ws["trained_s"] for c in ws["candidates"])
        assert set(ws["runs"]) == {"0", "1"}  # the pick trained alone with the scoring seeds
        rs = json.loads((work / "baselines" / "after" / f"rs_{algo}_s0" / "result.json").read_text())
        assert set(rs["runs"]) == {"0", "1"}
        assert rs["budget_s"] == search["wall_time_s"] / 4  # smoke: a quarter of the search's time
        assert rs["used_s"] <= rs["budget_s"] or (rs["over_budget"] and rs["trials"] == 1)
        retest = json.loads((results / f"retest_{algo}.json").read_text())
        assert retest["change"] == {"nesterov": True} and len(retest["networks"]) == 1
        assert set(retest["networks"][0]["runs"]) == {"2", "3"}  # the second loop's seeds
    summary = json.loads((results / "results.json").read_text())
    methods = {(r["space"], r["method"]) for r in summary["rows"]}
    for algo in ("fpnas", "fp-nas"):
        assert {(algo, f"{algo} search"), (algo, "random search"), (algo, "random search with weight sharing"),
                (algo, "largest under the limit (no search)")} <= methods
        assert len(summary["ranking"][algo]["supernet_kendall_tau"]) == 1
        assert -1 <= summary["ranking"][algo]["supernet_kendall_tau"][0] <= 1
    assert all(0 <= r["percentile"] <= 100 for r in summary["rows"] if r["reference_networks"] >= 2)
    assert set(summary["anytime"][0]["picks"]) == {"0.5", "1.0"}
    assert (results / "search_efficacy.png").read_bytes()[:4] == b"\x89PNG"
    assert "| fp-nas | random search |" in done.stdout
    # Run again: everything is done, nothing is retrained (the study resumes instead of starting over).
    again = subprocess.run([sys.executable, "bench/search_efficacy.py", "--smoke", "--work", str(tmp_path / "work"),
                            "--results", str(tmp_path / "results"), "--stages", "gt,search,report"], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((results / "results.json").read_text())["rows"] == summary["rows"]
