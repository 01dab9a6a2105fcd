"""bench/latency_protocol.py: what it computes from given times, and a toy run end to end (its times are never
asserted, only that each network got one per run and protocol)."""
import json

import pytest
from conftest import load_script


def test_the_retest_is_run_b_against_run_a_per_protocol():
    bench = load_script("bench/latency_protocol.py")
    runs = {"earlier": [{0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.05, 1: 2.5, 2: 3.0}],
            "present": [{0: 1.0, 1: 2.0, 2: 3.0}, {0: 3.0, 1: 2.0, 2: 1.0}]}
    got = bench.summarise(runs)
    assert got["earlier"]["within_10pct"] == pytest.approx(2 / 3)  # 5% and 0% in, 25% out
    assert got["earlier"]["mape"] == pytest.approx((0.05 + 0.25 + 0.0) / 3)
    assert got["earlier"]["spearman"] == pytest.approx(1.0)
    assert got["present"]["spearman"] == pytest.approx(-1.0) and got["present"]["within_10pct"] == pytest.approx(1 / 3)
    assert bench.protocols("eager")["earlier"].windows == 1 and bench.protocols("eager")["present"].windows == 3


def test_a_toy_run_times_every_network_in_both_runs_of_both_protocols(tmp_path, capsys):
    bench = load_script("bench/latency_protocol.py")
    out = tmp_path / "repeat.json"
    assert bench.main(["--space", "fpnas", "--preset", "smoke", "--networks", "3", "--runtimes", "eager",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = result["runtimes"]["eager"]["runs_ms"]
    assert set(runs) == {"earlier", "present"}
    assert all(len(r) == 2 and all(len(run) == 3 and min(run) > 0 for run in r) for r in runs.values())
    assert len(result["archs"]) == 3
    assert "| eager | present |" in capsys.readouterr().out
