"""bench/yardstick_repeatability.py: its statistics against scipy and a hand-built case, and the command end to end
at a toy size. Nothing here asserts what a recipe achieves."""
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT, load_script
from scipy.stats import kendalltau, pearsonr

sys.path.insert(0, str(ROOT / "bench"))  # the script imports bench/search_efficacy.py as its neighbour
yardstick = load_script("bench/yardstick_repeatability.py")


def test_statistics_agree_with_scipy_and_a_hand_built_case():
    a, b = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0], [2.0, 1.0, 3.0, 4.0, 6.0, 5.0]
    assert yardstick.kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert yardstick.pearson(a, b) == pytest.approx(pearsonr(a, b).statistic)
    cost = [1e6, 2e6, 3e6, 4e6, 5e6, 6e6]
    trend = [10 + 2 * math.log(c) for c in cost]
    assert max(abs(r) for r in yardstick.residuals(trend, cost)) < 1e-9  # a pure log-cost trend leaves nothing
    # three networks, two seeds: within-network variance 0.5 each; network means 1.5, 5.5, 3.5 have variance 4, so
    # var_arch = 4 - 0.5 / 2 = 3.75 and ICC = 3.75 / (3.75 + 0.5)
    stats = yardstick.repeatability([[1.0, 2.0], [5.0, 6.0], [3.0, 4.0]], [1e6, 2e6, 3e6])
    assert stats["seed_sd"] == pytest.approx(0.5 ** 0.5)
    assert stats["arch_sd"] == pytest.approx(3.75 ** 0.5)
    assert stats["icc1"] == pytest.approx(3.75 / 4.25)
    assert stats["kendall_tau"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["--space", "fp-nas", "--dataset", "cluttered-digits", "--search-args",
                                          "--width-mult 0.75 --mult-adds-target 5e6", "--ema-decay", "0.9"]],
                         ids=["study", "other-task-width-ema"])
def test_the_command_runs_at_a_toy_size(tmp_path, options):
    """End to end at a toy size; with options, the task, the space's width and limit, and the EMA reach every
    network and training (checked on the files the trainings leave, not on the script's own record)."""
    from fpnas_zoo import load_spec

    out = tmp_path / "y.json"
    command = [sys.executable, "bench/yardstick_repeatability.py", "--networks", "3", "--seeds", "0", "1",
               "--epochs", "1", "--jobs", "1", "--limit-train", "128", "--limit-val", "64", "--work",
               str(tmp_path / "work"), "--out", str(out), *options]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["networks"]) == 3 and result["space"] == "fp-nas"
    for net in result["networks"]:
        assert 0.85 * result["limit"] <= net["mult_adds"] <= result["limit"]
        assert set(net["runs"]) == {"e1_s0", "e1_s1"}
    assert "| 1 |" in run.stdout
    if options:
        assert result["limit"] == 5e6 and result["dataset"] == "cluttered-digits"
        (folder,) = (tmp_path / "work").glob("fp-nas-cluttered-digits-ema0.9-*")
        spec = load_spec(folder / "net00.json")
        assert spec.stem["out_chs"] == 12  # width 0.75 (8 at the study's 0.5)
        assert spec.preprocessing["mean"][0] == 0.1966  # the task's
        metrics = json.loads((folder / "net00_e1_s0" / "metrics.json").read_text())
        assert metrics["weights"] == "ema"
