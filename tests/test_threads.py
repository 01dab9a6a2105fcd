"""CPU threads of the search commands (`--threads`): small workloads on one thread by default.

Why one thread (a shared core slows a multi-threaded small search up to 30x) is measured in bench/shared_cpu.py;
these tests check the behaviour that measurement relies on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.engine import cpu_threads

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_threads_defaults_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with cpu_threads(None, small_workload=True) as used:
        assert used == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None, small_workload=False) as used:
        assert used == torch.get_num_threads() == before  # torch's own default is left alone
    with cpu_threads(3, small_workload=True) as used:
        assert used == torch.get_num_threads() == 3  # --threads wins
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's (or torchrun's) setting wins over the default
    with cpu_threads(None, small_workload=True) as used:
        assert used == before
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        with cpu_threads(0, small_workload=True):
            pass


def _search(out: Path, env_threads: str | None, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env_threads is not None:
        env["OMP_NUM_THREADS"] = env_threads
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, "-m", "search.run", "--algo", "fpnas", "--preset", "smoke", "--out", str(out),
                    "--no-progress", *extra], check=True, env=env, cwd=ROOT, capture_output=True)
    return json.loads((out / "spec.json").read_text())


@pytest.mark.slow
def test_small_search_runs_as_a_one_thread_process(tmp_path):
    """The default on embedded data is the run of a process that torch itself keeps to one thread."""
    default = _search(tmp_path / "default", None)
    one = _search(tmp_path / "omp1", "1")
    assert default["search"]["cpu_threads"] == 1
    assert default["blocks"] == one["blocks"]
    assert default["search"]["val_top1"] == one["search"]["val_top1"]
    assert default["search"]["measured"] == one["search"]["measured"]


@pytest.mark.parametrize("command", [["search.run", "--algo", "fpnas", "--preset", "smoke"],
                                     ["search.train", "--spec", "fpnasnet_cifar", "--dataset", "digits",
                                      "--recipe", "demo"]])
def test_threads_below_one_refused(tmp_path, command, capsys):
    from search.run import main as run_main
    from search.train import main as train_main

    main = {"search.run": run_main, "search.train": train_main}[command[0]]
    try:  # the exit status of `python -m ...`: main's return value, or argparse's SystemExit
        status = main([*command[1:], "--out", str(tmp_path / "out"), "--threads", "0"])
    except SystemExit as exit:
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert "--threads must be at least 1, got 0" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
