"""`python -m search.run` refuses budgets that mean nothing before any training; a fresh run starts a fresh
trace."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fpnas_zoo import count_spec, spec_from_dict
from fpnas_zoo.__main__ import main as cli_main
from search.checkpointing import read_trace
from search.coordinate_descent.algorithm import PRESETS
from search.coordinate_descent.space import fpnas_space
from search.run import main
from search.space import PROBE_METADATA
from search.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def _smoke_space():
    s = PRESETS["smoke"]
    return fpnas_space(s["num_blocks"], (3, 32, 32), 10, s["width_mult"], s["expansions"], s["kernels"])


def _mult_adds(space, arch) -> int:
    spec = spec_from_dict(space.to_spec_dict(arch, "probe", (0.5,) * 3, (0.25,) * 3, dict(PROBE_METADATA)))
    return count_spec(spec).mult_adds


@pytest.fixture(scope="module")
def cost_range():
    """Smallest and largest network of the smoke space, by building every one-position variant with the zoo."""
    space = _smoke_space()
    base = space.default_arch()
    low, high = list(base), list(base)
    for p in range(space.num_blocks):
        costs = {c: _mult_adds(space, base[:p] + [c] + base[p + 1:]) for c in space.choices(p)}
        low[p], high[p] = min(costs, key=costs.get), max(costs, key=costs.get)
    return _mult_adds(space, low), _mult_adds(space, high)


@pytest.mark.parametrize("which", ["below", "at_smallest", "above"])
def test_budget_no_network_meets_or_every_network_meets_is_refused(tmp_path, capsys, cost_range, which):
    low, high = cost_range
    budget = {"below": 10, "at_smallest": low, "above": high + 1}[which]
    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--flops-budget", str(budget), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --flops-budget")
    assert f"{low if which != 'above' else high:,}" in err[0]
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.slow
def test_fresh_run_into_a_folder_with_an_old_trace_starts_a_new_trace(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "trace.jsonl").write_text(json.dumps({"event": "from_an_old_run"}) + "\n")
    assert main(["--preset", "smoke", "--T", "1", "--out", str(out), "--no-progress"]) == 0
    events = [r["event"] for r in read_trace(out / "trace.jsonl")]
    assert "from_an_old_run" not in events and events.count("decision") == 1


def _image_folder(root: Path) -> Path:
    """An ImageFolder tree validate reads: 2 classes of one image each."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "0.png")
    return root


def _one_error_line(err: str, option: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option} ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("cli", ["search.run", "search.train", "fpnas_zoo validate"])
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, cli, capsys, monkeypatch):
    """As a user runs it on a machine without a GPU (torch.cuda says there is none, as CUDA_VISIBLE_DEVICES= makes
    it say)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _image_folder(tmp_path / "val")
    main_of = {"search.run": main, "search.train": train_main, "fpnas_zoo validate": cli_main}
    argv = {"search.run": ["--preset", "smoke", "--out", str(tmp_path / "out"), "--no-progress"],
            "search.train": ["--spec", "fpnasnet_cifar", "--dataset", "digits", "--recipe", "demo", "--out",
                             str(tmp_path / "out"), "--no-progress"],
            "fpnas_zoo validate": ["validate", "--model", "fpnasnet_cifar", "--data-dir", str(data), "--out",
                                   str(tmp_path / "out")]}[cli]
    assert main_of[cli]([*argv, "--device", "cuda"]) == 2
    line = _one_error_line(capsys.readouterr().err, "--device cuda:")
    assert "no cuda device" in line and "--device cpu" in line
    assert list(tmp_path.iterdir()) == [data]


@pytest.mark.slow
def test_device_cuda_without_a_gpu_is_one_line_from_the_command(tmp_path):
    """The same refusal in the process a user starts with CUDA_VISIBLE_DEVICES= (any GPU hidden), exit status 2."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "search.run", "--preset", "smoke", "--out", str(tmp_path / "out"),
                          "--no-progress", "--device", "cuda"], capture_output=True, text=True, cwd=ROOT, env=env)
    line = _one_error_line(run.stderr, "--device cuda:")
    assert run.returncode == 2 and "no cuda device" in line and "--device cpu" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, option", [("tpu", "--device"), ("out_is_a_file", "--out"), ("seed", "--seed"),
                                          ("width_negative", "--width-mult"), ("width_zero", "--width-mult")])
def test_search_run_bad_values_are_one_line_and_write_nothing(tmp_path, capsys, case, option):
    out = tmp_path / "out"
    extra = {"tpu": ["--device", "tpu"], "seed": ["--seed", "-1"], "width_negative": ["--width-mult", "-1"],
             "width_zero": ["--width-mult", "0"]}.get(case, [])
    if case == "out_is_a_file":
        out.write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert main(["--preset", "smoke", "--out", str(out), "--no-progress", *extra]) == 2
    line = _one_error_line(capsys.readouterr().err, option)
    assert {"tpu": "not a device name torch knows", "out_is_a_file": "is a file; expected a folder",
            "seed": "must be at least 0, got -1", "width_negative": "must be > 0", "width_zero": "must be > 0",
            }[case] in line
    assert sorted(tmp_path.rglob("*")) == before and (case != "out_is_a_file" or out.read_text() == "mine")


@pytest.mark.parametrize("case, option", [("epochs", "--epochs"), ("batch_size", "--batch-size"),
                                          ("tpu", "--device"), ("out_is_a_file", "--out")])
def test_search_train_bad_values_are_one_line_and_write_nothing(tmp_path, capsys, case, option):
    """0 epochs or images per step is refused, not read as 'the recipe's' (3 epochs of 64)."""
    out = tmp_path / "out"
    extra = {"epochs": ["--epochs", "0"], "batch_size": ["--batch-size", "0"], "tpu": ["--device", "tpu"]}.get(case, [])
    if case == "out_is_a_file":
        out.write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    argv = ["--spec", "fpnasnet_cifar", "--dataset", "digits", "--recipe", "demo", "--out", str(out), "--no-progress",
            "--limit-train", "32", "--limit-val", "16"]  # seconds, should a bad value train
    assert train_main([*argv, *extra]) == 2
    line = _one_error_line(capsys.readouterr().err, option)
    assert {"epochs": "--epochs must be at least 1, got 0", "batch_size": "--batch-size must be at least 1, got 0",
            "tpu": "not a device name torch knows", "out_is_a_file": "is a file; expected a folder"}[case] in line
    assert sorted(tmp_path.rglob("*")) == before


def test_validate_device_not_known_is_one_line(tmp_path, capsys):
    out = tmp_path / "r.json"
    data = _image_folder(tmp_path / "val")
    assert cli_main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(data), "--device", "tpu",
                     "--out", str(out)]) == 2
    assert "not a device name torch knows" in _one_error_line(capsys.readouterr().err, "--device tpu:")
    assert not out.exists()
