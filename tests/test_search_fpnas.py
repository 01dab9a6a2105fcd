"""The FPNAS searcher end to end on the embedded digits data (smoke preset): spec, trace, plots, resume, DDP."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port

import fpnas_zoo
from fpnas_zoo import count_spec, load_spec
from search.checkpointing import ResumeError, read_trace
from search.coordinate_descent.algorithm import PRESETS, FpnasSearch, FpnasSettings, merit
from search.distributed import DistInfo
from search.run import build_parser, main, settings_from_args
from search.runner import SearchRunner

# Searches run here through SearchRunner and through the CLI alike, on the CLI's thread count.
pytestmark = pytest.mark.usefixtures("cli_threads")


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
    assert len(decisions) == PRESETS["smoke"]["block_optimisations"]
    assert {r["stage"] for r in trace if r["event"] == "candidate"} == {1, 2}
    assert all(r["mult_adds"] > 0 and "reward" in r for r in trace if r["event"] == "candidate")
    assert decisions[-1]["arch"] == [f"t{b['expansion']:g}_k{b['kernel_size']}" + ("_sc" if b["shortcut"] else "")
                                     + ("_sp" if b["split"] else "") for b in spec.blocks[1:]]
    for png in ("accuracy_vs_mult_adds.png", "chosen_blocks.png", "val_accuracy_over_time.png"):
        assert (smoke_run / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert (smoke_run / "checkpoint.pt").is_file()


def test_written_checkpoint_loads_on_a_machine_without_cuda(smoke_run, assert_loads_on_cpu):
    assert_loads_on_cpu(smoke_run / "checkpoint.pt")


@pytest.mark.slow
def test_compile_compiles_each_stage2_network_and_leaves_the_supernet_eager(tmp_path, monkeypatch):
    """--compile: stage 1 runs another candidate every step, each a new graph (dynamo stops compiling after 8 and
    runs eager), so its supernet stays eager; each stage-2 network, trained alone, is compiled after a dynamo reset,
    so the 9th candidate of a search is compiled as the first was. torch.compile itself is stubbed here: a real
    compile takes minutes on a CPU (bench/results/2026-11-29-compile-cost.md); test_search_train checks a compiled
    network trains right."""
    events = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: events.append(type(model).__name__) or model)
    monkeypatch.setattr(torch.compiler, "reset", lambda: events.append("reset"))
    settings = FpnasSettings(**{**PRESETS["smoke"], "block_optimisations": 1})
    runner = SearchRunner(FpnasSearch, settings, tmp_path, progress=False, recipe_overrides={"compile": True})
    assert not runner.algorithm.recipe1.compile and runner.algorithm.recipe2.compile
    runner.run()
    assert events == ["reset", "FpnasZooNet"] * settings.candidates_kept


@pytest.mark.slow
def test_searched_spec_opens_in_the_zoo_cli(smoke_run):
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "info", str(smoke_run / "spec.json")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "(searched)" in run.stdout


@pytest.mark.slow
def test_resume_after_an_interruption_gives_the_same_spec(smoke_run, tmp_path, monkeypatch):
    settings = FpnasSettings(**PRESETS["smoke"])
    calls = {"n": 0}
    original = SearchRunner.save

    def crash_after_some_checkpoints(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # mid stage-1 evaluation of the first block
            raise KeyboardInterrupt

    monkeypatch.setattr(SearchRunner, "save", crash_after_some_checkpoints)
    with pytest.raises(KeyboardInterrupt):
        SearchRunner(FpnasSearch, settings, tmp_path, progress=False).run()
    monkeypatch.setattr(SearchRunner, "save", original)
    assert not (tmp_path / "spec.json").exists()
    SearchRunner(FpnasSearch, settings, tmp_path, progress=False).run(resume=True)
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
        other = FpnasSettings(**{**PRESETS["smoke"], "candidates_kept": 3})
        SearchRunner(FpnasSearch, other, tmp_path, progress=False).run(resume=True)


def _copy_run(run: Path, to: Path, edit=None) -> None:
    """`run`'s checkpoint and trace in `to`, the checkpoint's payload passed through `edit` first."""
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save(edit(payload) if edit else payload, to / "checkpoint.pt")
    (to / "trace.jsonl").write_bytes((run / "trace.jsonl").read_bytes())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_checkpoint_from_before_start_and_reward_resumes_as_the_papers(smoke_run, tmp_path, capsys):
    """Settings added since a checkpoint was written (--start, --reward) take the values that behave as before."""
    def without_the_new_settings(payload):
        settings = payload["identity"]["settings"]
        assert (settings.pop("start"), settings.pop("reward")) == ("default", "paper")
        return payload

    _copy_run(smoke_run, tmp_path, without_the_new_settings)
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert load_spec(tmp_path / "spec.json").blocks == load_spec(smoke_run / "spec.json").blocks
    _copy_run(smoke_run, tmp_path, without_the_new_settings)
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--resume", "--no-progress", "--reward", "soft",
                 "--mult-adds-budget", "3e6"]) == 2
    assert "settings.reward: checkpoint has 'paper', this run has 'soft'" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_another_number_of_processes_in_one_line(smoke_run, tmp_path, capsys):
    """BatchNorm statistics and each rank's random state are per process: one process cannot continue a search of 2
    as it would have gone on (a checkpoint of 2 processes: 2 RNG states, its identity says 2)."""
    def of_two_processes(payload):
        payload["identity"]["world_size"] = 2
        payload["rng"] = payload["rng"] * 2
        return payload

    _copy_run(smoke_run, tmp_path, of_two_processes)
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--resume", "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "written by 2 processes and this run has 1: resume it with torchrun --nproc_per_node 2" in err
    assert not (tmp_path / "spec.json").exists()


def test_resume_refuses_a_checkpoint_of_another_supernet_layout_in_one_line(smoke_run, tmp_path, capsys):
    """A checkpoint of another supernet layout (`search.supernet.LAYOUT_VERSION`), recorded, or written before
    layouts were recorded and told by its tensors (one under another name), is refused in one line instead of a dump
    of missing keys; an unrecorded one whose tensors are today's resumes."""
    def recorded_layout_1(payload):
        payload["identity"]["supernet_layout"] = 1
        return payload

    def unrecorded(payload, rename=False):
        payload["identity"] = {k: v for k, v in payload["identity"].items()
                               if k not in ("supernet_layout", "world_size")}
        if rename:
            payload["supernet"]["positions.0.renamed"] = payload["supernet"].pop("positions.0.conv_dw.weight")
        return payload

    for edit, layout in ((recorded_layout_1, "layout 1"),
                         (lambda p: unrecorded(p, rename=True), "layout from before layouts were numbered")):
        _copy_run(smoke_run, tmp_path, edit)
        assert main(["--preset", "smoke", "--out", str(tmp_path), "--resume", "--no-progress"]) == 2
        err = _one_line_error(capsys)
        assert f"holds a supernet of {layout}, written by another version" in err and "uses layout 2" in err
    _copy_run(smoke_run, tmp_path, unrecorded)
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert load_spec(tmp_path / "spec.json").blocks == load_spec(smoke_run / "spec.json").blocks


def test_paper_symbols_are_aliases_of_the_named_options():
    def parse(*argv: str) -> FpnasSettings:
        return settings_from_args(build_parser().parse_args(["--out", "x", *argv]))

    by_symbol = parse("--N", "6", "--P", "3", "--Q", "2", "--E", "5", "--T", "7")
    assert by_symbol == parse("--blocks", "6", "--stage1-epochs", "3", "--stage2-epochs", "2", "--candidates-kept",
                              "5", "--block-optimisations", "7")
    assert (by_symbol.num_blocks, by_symbol.stage1_epochs, by_symbol.stage2_epochs, by_symbol.candidates_kept,
            by_symbol.block_optimisations) == (6, 3, 2, 5, 7)
    assert "the paper's E" in build_parser().format_help()


def test_counts_below_one_are_refused_naming_the_option(tmp_path, capsys):
    assert main(["--preset", "smoke", "--E", "0", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--candidates-kept (E) must be at least 1, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_batch_that_does_not_share_out_over_the_processes_is_refused(tmp_path, monkeypatch):
    three = DistInfo(rank=0, world_size=3, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr("search.distributed.init_distributed", lambda device=None: three)
    with pytest.raises(ValueError, match="--batch-size 32 must be a multiple of the 3 processes"):
        SearchRunner(FpnasSearch, FpnasSettings(**PRESETS["smoke"]), tmp_path, progress=False)


# --------------------------------------------------------------------------- 2 processes (torchrun, gloo on CPU)

ROOT = Path(__file__).parents[1]


def _torchrun_command(out: Path, *args: str, hooks: dict | None = None, launcher: tuple = ()) -> tuple[list, dict]:
    """The smoke search over 2 CPU processes, one block optimisation: (command, environment)."""
    port = free_port()
    program = [str(ROOT / "tests" / "search_run_with_hooks.py")] if hooks else ["-m", "search.run"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(hooks or {}))
    return ([sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc_per_node", "2", "--master_addr",
             "127.0.0.1", "--master_port", str(port), *program, "--preset", "smoke", "--device", "cpu",
             "--block-optimisations", "1", "--out", str(out), "--no-progress", *args], env)


def _torchrun(out: Path, *args: str, hooks: dict | None = None) -> subprocess.CompletedProcess:
    """The smoke search over 2 CPU processes (`_torchrun_command`); a timeout turns a hang into a failure."""
    command, env = _torchrun_command(out, *args, hooks=hooks)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)


def _two_process_run(kept: int, out: Path) -> tuple[int, Path]:
    run = _torchrun(out, "--E", str(kept), hooks={"SEARCH_SNAPSHOT_STAGE2": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return kept, out


@pytest.fixture(scope="module")
def two_process_e3(tmp_path_factory):
    """E = 3 candidates over 2 ranks: not a multiple of the world size, two stage-2 rounds."""
    return _two_process_run(3, tmp_path_factory.mktemp("ddp_e3"))


@pytest.fixture(scope="module")
def two_process_e1(tmp_path_factory):
    """E = 1: fewer candidates than ranks, rank 1 has nothing to train in stage 2."""
    return _two_process_run(1, tmp_path_factory.mktemp("ddp_e1"))


def _stage2(trace: list[dict]) -> tuple[list[dict], list[dict]]:
    return ([r for r in trace if r["event"] == "candidate" and r["stage"] == 2],
            [r for r in trace if r["event"] == "epoch" and r["stage"] == 2])


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("run", ["two_process_e3", "two_process_e1"])
def test_two_process_stage2_scores_each_candidate_as_one_process_training_it_alone(run, request, tmp_path):
    kept, out = request.getfixturevalue(run)
    spec = load_spec(out / "spec.json")
    assert spec.provenance == "searched" and spec.search["settings"]["candidates_kept"] == kept
    assert fpnas_zoo.create_model_from_spec(out / "spec.json")(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    trace = read_trace(out / "trace.jsonl")
    candidates, epochs = _stage2(trace)
    assert len(candidates) == kept and len(epochs) == kept * PRESETS["smoke"]["stage2_epochs"]  # every rank's records

    # One process, the same supernet weights (the checkpoint written as stage 2 began), each candidate alone. The
    # checkpoint is relabelled as one process's: a resume refuses another number of processes.
    checkpoint = torch.load(out / "stage2_start.pt", weights_only=True)
    checkpoint["identity"]["world_size"] = 1
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun ranks (OMP_NUM_THREADS=1): the same float summation order
    try:
        settings = FpnasSettings(**{**PRESETS["smoke"], "block_optimisations": 1, "candidates_kept": kept})
        runner = SearchRunner(FpnasSearch, settings, tmp_path, progress=False)
        runner.resume()
        search = runner.algorithm
        alone = [search.train_candidate(0, 0, j, c) for j, c in enumerate(search.top_candidates())]
    finally:
        torch.set_num_threads(threads)
    assert [r["label"] for r, _, _ in alone] == [r["candidate"] for r in candidates]
    assert [r["accuracy"] for r, _, _ in alone] == [r["accuracy"] for r in candidates]
    assert [(e["loss"], e["accuracy"]) for _, records, _ in alone for e in records] == [
        (e["loss"], e["accuracy"]) for e in epochs]
    best = max(range(kept), key=lambda j: (*merit(candidates[j]), -j))  # decided over every rank's candidates
    assert [r for r in trace if r["event"] == "decision"][0]["candidate"] == candidates[best]["candidate"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_search_killed_in_stage2_resumes_to_the_uninterrupted_spec(two_process_e3, tmp_path):
    _, uninterrupted = two_process_e3
    crashed = _torchrun(tmp_path, "--E", "3", hooks={"SEARCH_CRASH_AT_STAGE2_RESULTS": "2"})
    assert crashed.returncode != 0 and not (tmp_path / "spec.json").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert state["phase"] == "stage2" and len(state["stage2_results"]) == 2  # killed between the 2 rounds
    resumed = _torchrun(tmp_path, "--candidates-kept", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_spec(tmp_path / "spec.json").blocks == load_spec(uninterrupted / "spec.json").blocks
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_trace(tmp_path / "trace.jsonl")) == strip(read_trace(uninterrupted / "trace.jsonl"))


def _worker_pids(agent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun's agent process `agent` runs now."""
    pids = {}
    for pid in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except FileNotFoundError:  # gone meanwhile
            continue
        pids.update({int(v[len(b"RANK="):]): int(pid) for v in environ if v.startswith(b"RANK=")})
    return pids


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="finds torchrun's workers through /proc (Linux)")
def test_torchrun_max_restarts_continues_a_search_after_a_rank_is_killed(two_process_e1, tmp_path):
    """`torchrun --max-restarts 1 ... --resume`, as docs/distributed.md gives it: the first attempt finds no checkpoint
    and starts afresh; rank 0 (the one that writes) is killed with SIGKILL once the first checkpoint exists; torchrun
    restarts both ranks, which meet again (before the fix they could read the killed group's addresses from
    torchrun's store and fail in init_process_group, depending on which rank got there first:
    tests/test_torchrun_restart.py sets that order), resume from the checkpoint and end on the uninterrupted run's
    spec and trace."""
    _, uninterrupted = two_process_e1
    command, env = _torchrun_command(tmp_path, "--E", "1", "--resume", launcher=("--max-restarts", "1"))
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "checkpoint.pt").exists():
            assert agent.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        os.kill(_worker_pids(agent.pid)[0], signal.SIGKILL)
        _, err = agent.communicate(timeout=240)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, err[-3000:]
    assert "exitcode: -9" in err and err.count("resumed from") == 1, err[-3000:]  # killed, restarted, resumed once
    assert load_spec(tmp_path / "spec.json").blocks == load_spec(uninterrupted / "spec.json").blocks
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_trace(tmp_path / "trace.jsonl")) == strip(read_trace(uninterrupted / "trace.jsonl"))
