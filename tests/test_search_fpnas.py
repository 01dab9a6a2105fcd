"""The FPNAS searcher end to end on the embedded digits data (smoke preset): spec, trace, plots, resume, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fpnas_zoo
from fpnas_zoo import count_spec, load_spec
from search.checkpointing import ResumeError, read_trace
from search.fpnas import PRESETS, FpnasSearch, FpnasSettings
from search.run import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    assert main(["--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def test_smoke_search_writes_a_zoo_spec_trace_and_plots(smoke_run):
    spec = load_spec(smoke_run / "spec.json")
    assert spec.provenance == "searched" and spec.search["algorithm"] == "fpnas"
    assert spec.search["dataset"] == "digits" and spec.search["seed"] == 0
    assert spec.search["measured"] == count_spec(spec).as_dict()
    assert spec.input_size == (3, 32, 32) and spec.num_classes == 10
    model = fpnas_zoo.create_model_from_spec(smoke_run / "spec.json").eval()  # the zoo builds it, no extra code
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    trace = read_trace(smoke_run / "trace.jsonl")
    decisions = [r for r in trace if r["event"] == "decision"]
    assert len(decisions) == PRESETS["smoke"]["T"]
    assert {r["stage"] for r in trace if r["event"] == "candidate"} == {1, 2}
    assert all(r["mult_adds"] > 0 and "reward" in r for r in trace if r["event"] == "candidate")
    assert decisions[-1]["arch"] == [f"t{b['expansion']:g}_k{b['kernel_size']}" + ("_sc" if b["shortcut"] else "")
                                     + ("_sp" if b["split"] else "") for b in spec.blocks[1:]]
    for png in ("accuracy_vs_mult_adds.png", "chosen_blocks.png", "val_accuracy_over_time.png"):
        assert (smoke_run / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert (smoke_run / "checkpoint.pt").is_file()


def test_searched_spec_opens_in_the_zoo_cli(smoke_run):
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "info", str(smoke_run / "spec.json")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "(searched)" in run.stdout


def test_resume_after_an_interruption_gives_the_same_spec(smoke_run, tmp_path, monkeypatch):
    settings = FpnasSettings(**PRESETS["smoke"])
    calls = {"n": 0}
    original = FpnasSearch.save

    def crash_after_some_checkpoints(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # mid stage-1 evaluation of the first block
            raise KeyboardInterrupt

    monkeypatch.setattr(FpnasSearch, "save", crash_after_some_checkpoints)
    with pytest.raises(KeyboardInterrupt):
        FpnasSearch(settings, tmp_path, progress=False).run()
    monkeypatch.setattr(FpnasSearch, "save", original)
    assert not (tmp_path / "spec.json").exists()
    FpnasSearch(settings, tmp_path, progress=False).run(resume=True)
    resumed, uninterrupted = load_spec(tmp_path / "spec.json"), load_spec(smoke_run / "spec.json")
    assert resumed.blocks == uninterrupted.blocks
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_trace(tmp_path / "trace.jsonl")) == strip(read_trace(smoke_run / "trace.jsonl"))


def test_resume_refuses_a_checkpoint_of_another_run(smoke_run, tmp_path, capsys):
    for name in ("checkpoint.pt", "trace.jsonl"):
        (tmp_path / name).write_bytes((smoke_run / name).read_bytes())
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--seed", "1", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another search" in err and "settings.seed: checkpoint has 0, this run has 1" in err
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    with pytest.raises(ResumeError):
        FpnasSearch(FpnasSettings(**{**PRESETS["smoke"], "E": 3}), tmp_path, progress=False).run(resume=True)


def test_ddp_search_on_two_cpu_processes(tmp_path):
    """torchrun with 2 ranks (gloo): same candidates on every rank in stage 1, stage 2 sharded across ranks."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(29500 + os.getpid() % 1000), "-m", "search.run", "--preset", "smoke", "--device", "cpu",
         "--T", "1", "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parents[1],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    spec = load_spec(tmp_path / "spec.json")
    trace = read_trace(tmp_path / "trace.jsonl")
    stage2 = [r for r in trace if r["event"] == "candidate" and r["stage"] == 2]
    assert len(stage2) == PRESETS["smoke"]["E"] and spec.provenance == "searched"
    assert json.loads((tmp_path / "spec.json").read_text())["search"]["settings"]["T"] == 1
