"""bench/search_efficacy.py: the study's plumbing (--smoke) end to end, and its measures on hand-made tables."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_script("bench/search_efficacy.py")


def _net(name, cost, tests):
    return {"name": name, "mult_adds": cost, "runs": {str(i): {"test_top1": t} for i, t in enumerate(tests)}}


def test_percentile_regret_and_task_quality_by_hand():
    b = _bench()
    table = {"networks": [_net("a", 10, [50, 52]), _net("b", 20, [60, 60]), _net("c", 30, [70, 74]),
                          _net("d", 40, [40, 42]), _net("e", 50, [80, 80]), _net("f", 60, [55, 57])]}
    # At cost 30 the peers are a (51), b (60), c (72): 65 beats two of three; the best of them is 72.
    pct, regret, peers = b.percentile_and_regret(table, 30, 65.0)
    assert (peers, pct, regret) == (3, pytest.approx(200 / 3), pytest.approx(7.0))
    assert b.percentile_and_regret(table, 30, 60.0)[0] == pytest.approx(100 * 1.5 / 3)  # a tie counts half
    assert b.percentile_and_regret(table, 5, 60.0)[2] == 0
    q = b.task_quality(table)
    sds = [statistics.stdev(x) for x in ([50, 52], [60, 60], [70, 74], [40, 42], [80, 80], [55, 57])]
    assert q["seed_sd"] == pytest.approx(sum(sds) / 6)
    # Cost bins {a, b}, {c, d}, {e, f}: best minus median = 60-55.5, 72-56.5, 80-68.
    assert q["bin_spreads"] == pytest.approx([4.5, 15.5, 12.0])


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
    committed = {p: p.read_bytes() for p in (ROOT / "bench" / "search_efficacy").iterdir() if p.is_file()}
    done = subprocess.run([sys.executable, "bench/search_efficacy.py", "--smoke", "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.read_bytes() for p in committed} == committed  # the committed study is left as it was
    for algo in ("fpnas", "fp-nas"):
        table = json.loads((results / f"ground_truth_{algo}.json").read_text())
        names = [n["name"] for n in table["networks"]]
        assert names[:2] == ["smallest", "largest"] and len(names) == 2 + 2
        costs = [n["mult_adds"] for n in table["networks"]]
        assert costs[0] == min(costs) and costs[1] == max(costs)
        assert all(set(n["runs"]) == {"0", "1"} for n in table["networks"])
        assert "search.run" in table["search_command"] and "search_efficacy.py" in table["command"]
    summary = json.loads((results / "results.json").read_text())
    methods = {(r["space"], r["method"]) for r in summary["rows"]}
    for algo in ("fpnas", "fp-nas"):
        assert {(algo, f"{algo} search"), (algo, "random search"),
                (algo, "random search with weight sharing")} <= methods
        assert len(summary["ranking"][algo]["kendall_tau"]) == 1
        assert -1 <= summary["ranking"][algo]["kendall_tau"][0] <= 1
    assert all(0 <= r["percentile"] <= 100 for r in summary["rows"] if r["peers"])
    assert (results / "search_efficacy.png").read_bytes()[:4] == b"\x89PNG"
    assert "| fp-nas | random search |" in done.stdout
    # Run again: everything is done, nothing is retrained (the study resumes instead of starting over).
    again = subprocess.run([sys.executable, "bench/search_efficacy.py", "--smoke", "--work", str(tmp_path / "work"),
                            "--results", str(results), "--stages", "gt,search,report"], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((results / "results.json").read_text())["rows"] == summary["rows"]
