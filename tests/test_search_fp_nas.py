"""The FP-NAS searcher end to end on the embedded digits (smoke preset): spec, weights, trace, plots, adaptive
sampling, coarse-to-fine, the cost term, resume, bad input and 2 processes (torchrun, gloo)."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port, torchrun_two
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

import fpnas_zoo
from fpnas_zoo import FpnasZooNet, count_spec, load_spec
from search.checkpointing import read_trace
from search.data import load_data
from search.distributed import DistInfo
from search.engine import Recipe, evaluate
from search.probabilistic import algorithm as algorithm_module
from search.probabilistic.algorithm import PRESETS, FpNasSearch, FpNasSettings, cost_excess, default_lambda
from search.probabilistic.space import build_space
from search.run import main
from search.runner import SearchRunner

ROOT = Path(__file__).parents[1]
SMOKE = PRESETS["smoke"]

# Searches run here through SearchRunner and through the CLI alike, on the CLI's thread count.
pytestmark = pytest.mark.usefixtures("cli_threads")


def smoke_space():
    return build_space(SMOKE["space"], (3, 32, 32), 10, width_mult=SMOKE["width_mult"], layers=SMOKE["layers"],
                       choices=SMOKE["choices"])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp_nas_smoke")
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


@pytest.mark.slow
def test_smoke_search_writes_a_zoo_spec_of_ir_and_skip_blocks(smoke_run):
    spec = load_spec(smoke_run / "spec.json")
    assert spec.provenance == "searched" and spec.search["algorithm"] == "fp_nas"
    assert spec.search["measured"] == count_spec(spec).as_dict()
    assert {b["type"] for b in spec.blocks} <= {"ir", "skip"}
    assert spec.search["settings"]["space"] == "fbnetv2-f++"
    summary = spec.search["distribution"]
    assert summary["parameterisation"] == "joint" and len(summary["mode"]) == len(SMOKE["layers"])
    model = fpnas_zoo.create_model_from_spec(smoke_run / "spec.json").eval()  # the zoo builds it, no extra code
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the spec is the most likely point of the space: its blocks are a point the space can locate
    space = smoke_space()
    assert space.arch_blocks(space.locate(spec.blocks)) == [dict(b) for b in spec.blocks]


@pytest.mark.slow
def test_printed_inspect_hint_opens_the_spec(smoke_run):
    """search.run prints `inspect: python -m fpnas_zoo info OUT/spec.json`: it works on an FP-NAS spec."""
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "info", str(smoke_run / "spec.json")],
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0 and "(searched)" in run.stdout, run.stderr[-2000:]


@pytest.mark.slow
def test_exported_weights_are_the_supernets_and_score_what_the_search_measured(smoke_run):
    """weights.pth (the supernet's tensors of the final architecture, BN recalibrated) in the zoo's own model: its
    validation top-1 is the one the search recorded for the supernet running that architecture."""
    spec = load_spec(smoke_run / "spec.json")
    model = FpnasZooNet(spec)
    model.load_state_dict(torch.load(smoke_run / "weights.pth", weights_only=True))  # strict
    settings = FpNasSettings(**SMOKE)
    data = load_data("digits", batch_size=settings.batch_size, seed=settings.seed, limit_train=settings.limit_train,
                     limit_val=settings.limit_val, calib_images=settings.calib_images, split_train=True)
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    top1 = evaluate(model, data.val, Recipe(), dist)["top1"]
    assert top1 == pytest.approx(spec.search["val_top1"], abs=1e-9)


@pytest.mark.slow
def test_the_found_spec_trains_with_search_train(smoke_run, tmp_path):
    """docs/fp-nas.md's retrain command on a searched FP-NAS spec (one epoch)."""
    run = subprocess.run([sys.executable, "-m", "search.train", "--spec", str(smoke_run / "spec.json"), "--dataset",
                          "digits", "--recipe", "demo", "--epochs", "1", "--limit-train", "128", "--out",
                          str(tmp_path), "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.json").is_file()


@pytest.mark.slow
def test_trace_records_every_step_with_k_entropy_costs_and_weights(smoke_run):
    trace = read_trace(smoke_run / "trace.jsonl")
    steps = [r for r in trace if r["event"] == "step"]
    space = smoke_space()
    # Independent of the distribution code: the start (zero logits) is uniform over each variable, and a skip (one
    # block choice in layers that have it) ignores act, attention and expansion, so per layer
    # H0 = log(#blocks) + log(#widths) + P(not skip) * log(#act * #attention * #expansion), in nats over networks.
    h0 = sum(math.log(n[0]) + math.log(n[4]) + (1 - ("skip" in layer.variables[0].choices) / n[0])
             * math.log(n[1] * n[2] * n[3]) for layer, n in zip(space.layers, space.sizes(), strict=True))
    assert steps[0]["entropy"] == pytest.approx(h0, abs=1e-3)
    assert steps[0]["K"] == max(2, math.ceil(default_lambda() * h0))
    for r in steps:
        assert r["K"] == max(2, math.ceil(default_lambda() * r["entropy"]))
        assert len(r["costs"]) == r["K"] and len(r["layer_entropy"]) == len(space.layers)
        assert sum(r["layer_entropy"]) == pytest.approx(r["entropy"], abs=1e-3)
    search_steps = [r for r in steps if r["phase"] == "search"]
    warm = [r for r in steps if r["phase"] == "warmup"]
    assert warm and search_steps and {r["epoch"] for r in warm} == set(range(SMOKE["warmup_epochs"]))
    for r in search_steps:
        excess = [max(0.0, c / SMOKE["target"] - 1) for c in r["costs"]]
        # alpha's accuracy coefficients: softmax(-loss / T) - 1/K, computed here from the traced losses (T: the
        # default, 1: the batch-mean loss)
        w = [math.exp(-(loss - min(r["alpha_losses"]))) for loss in r["alpha_losses"]]
        assert r["accuracy_coefficients"] == pytest.approx([x / sum(w) - 1 / r["K"] for x in w], abs=2e-4)
        assert r["excess"] == pytest.approx(excess, abs=1e-5)
        # the term alpha's update uses before beta: the paper's log(1 + C(A)), averaged over the K samples
        assert r["cost_term"] == pytest.approx(sum(map(math.log1p, excess)) / len(excess), abs=1e-5)
    # Costs: the cost model's sum equals the zoo's counter on the built network of a traced sample's arch.
    epochs = [r for r in trace if r["event"] == "epoch"]
    spec = load_spec(smoke_run / "spec.json")
    assert epochs[-1]["mult_adds"] == count_spec(spec).mult_adds
    # The distribution's entropy falls as alpha learns.
    assert search_steps[-1]["entropy"] < h0


@pytest.mark.slow
def test_coarse_to_fine_switches_at_theta_without_changing_the_distribution(smoke_run):
    trace = read_trace(smoke_run / "trace.jsonl")
    switch = [r for r in trace if r["event"] == "coarse_to_fine"]
    sizes = smoke_space().sizes()
    assert len(switch) == 1 and switch[0]["epoch"] == SMOKE["coarse_to_fine_epochs"]
    assert switch[0]["parameters_before"] == sum(sum(layer) for layer in sizes)
    # one joint logit per distinct block of a layer (a skip's tuples are one network)
    assert switch[0]["parameters_after"] == sum(len(c) for c in smoke_space().candidates())
    before = [r for r in trace if r["event"] == "step" and r["epoch"] == SMOKE["coarse_to_fine_epochs"] - 1][-1]
    after = [r for r in trace if r["event"] == "step" and r["epoch"] == SMOKE["coarse_to_fine_epochs"]][0]
    assert not before["joint"] and after["joint"]
    assert switch[0]["entropy"] < before["entropy"] + 1  # (same distribution: checked exactly in distributions)


@pytest.mark.slow
def test_plots_are_written(smoke_run):
    for png in ("entropy_and_samples.png", "sample_costs.png", "val_accuracy.png", "choice_probabilities.png"):
        assert (smoke_run / "plots" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_fixed_samples_is_parsecs_constant_k(tmp_path):
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--epochs", "2", "--warmup-epochs", "0",
                 "--coarse-to-fine-epochs", "1", "--samples", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    steps = [r for r in read_trace(tmp_path / "trace.jsonl") if r["event"] == "step"]
    assert steps and {r["K"] for r in steps} == {3}


@pytest.mark.slow
def test_the_cost_term_pushes_the_distribution_under_a_tight_target(tmp_path):
    """With the cost term dominating (beta large) and a target near the smallest network, the expected cost of the
    learned distribution (estimated from 300 draws) falls well below that of the uniform start: the sign and the
    normalisation of the cost gradient are right. The same search with beta = 0 does not fall as far."""
    probe = SearchRunner(FpNasSearch, FpNasSettings(**SMOKE), tmp_path / "probe", progress=False)
    low, _ = probe.cost_range()

    def expected_cost(runner: SearchRunner) -> float:
        archs = runner.algorithm.distribution.sample(300, torch.Generator().manual_seed(123))
        return sum(runner.cost(runner.space.arch_blocks(a)) for a in archs) / len(archs)

    uniform = expected_cost(probe)
    results = {}
    for beta in (0.0, 50.0):
        settings = FpNasSettings(**{**SMOKE, "epochs": 3, "warmup_epochs": 0, "beta": beta, "alpha_lr": 0.2,
                                    "target": low * 1.05})
        runner = SearchRunner(FpNasSearch, settings, tmp_path / f"beta{beta}", progress=False)
        runner.run()
        results[beta] = expected_cost(runner)
    assert results[50.0] < 0.8 * uniform and results[50.0] < results[0.0], (uniform, results)


@pytest.mark.slow
def test_resume_after_an_interruption_ends_on_the_same_spec(smoke_run, tmp_path, monkeypatch):
    settings = FpNasSettings(**{**SMOKE, "checkpoint_every": 2})
    original = SearchRunner.save

    def crash_mid_epoch(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.algorithm.epoch == SMOKE["warmup_epochs"] and self.algorithm.step > 0:  # alpha has started
            raise KeyboardInterrupt

    monkeypatch.setattr(SearchRunner, "save", crash_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        SearchRunner(FpNasSearch, settings, tmp_path, progress=False).run()
    monkeypatch.setattr(SearchRunner, "save", original)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert state["step"] > 0  # interrupted inside an epoch
    assert not (tmp_path / "spec.json").exists()
    SearchRunner(FpNasSearch, settings, tmp_path, progress=False).run(resume=True)
    resumed, uninterrupted = load_spec(tmp_path / "spec.json"), load_spec(smoke_run / "spec.json")
    assert resumed.blocks == uninterrupted.blocks
    assert resumed.search["distribution"] == uninterrupted.search["distribution"]
    assert _strip(read_trace(tmp_path / "trace.jsonl")) == _strip(read_trace(smoke_run / "trace.jsonl"))


@pytest.mark.slow
def test_checkpoint_every_counts_the_searchs_steps_and_a_resume_keeps_counting(smoke_run, tmp_path, monkeypatch):
    """--checkpoint-every 3 with 4 steps per epoch checkpoints at the search's steps 3, 6 and 9 (epoch 0 step 3,
    epoch 1 step 2, epoch 2 step 1), not at step 3 of each epoch (the paper preset's 500 would never fire at ~55
    steps per epoch). A search interrupted at step 6 (alpha has started) resumes there, goes on counting from the
    checkpoint and ends on the uninterrupted run's spec and trace."""
    settings = FpNasSettings(**{**SMOKE, "checkpoint_every": 3})
    original, saved = SearchRunner.save, []

    def record(self, *args, crash=True, **kwargs):
        original(self, *args, **kwargs)
        a = self.algorithm
        steps = min(len(a.data.train), len(a.data.train_arch))
        assert steps == 4  # what makes 3 cross the epochs' ends
        if a.step:  # a checkpoint inside an epoch (the epoch's end has step 0 of the next)
            saved.append(a.epoch * steps + a.step)
            if crash and a.epoch == SMOKE["warmup_epochs"]:
                raise KeyboardInterrupt

    monkeypatch.setattr(SearchRunner, "save", record)
    with pytest.raises(KeyboardInterrupt):
        SearchRunner(FpNasSearch, settings, tmp_path, progress=False).run()
    assert saved == [3, 6]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["step"]) == (1, 2)
    monkeypatch.setattr(SearchRunner, "save", lambda self, *a, **k: record(self, *a, crash=False, **k))
    SearchRunner(FpNasSearch, settings, tmp_path, progress=False).run(resume=True)
    assert saved == [3, 6, 9]
    resumed, uninterrupted = load_spec(tmp_path / "spec.json"), load_spec(smoke_run / "spec.json")
    assert resumed.blocks == uninterrupted.blocks
    assert resumed.search["distribution"] == uninterrupted.search["distribution"]
    assert _strip(read_trace(tmp_path / "trace.jsonl")) == _strip(read_trace(smoke_run / "trace.jsonl"))


@pytest.mark.slow
def test_the_soft_target_is_called_target_in_the_spec(smoke_run):
    """FP-NAS's target is not FPNAS's hard budget: the spec records `target_mult_adds`, and no budget."""
    written = json.loads((smoke_run / "spec.json").read_text())["search"]
    assert written["target_mult_adds"] == SMOKE["target"] and "budget_mult_adds" not in written
    assert "target" in written["settings"] and "budget" not in written["settings"]


@pytest.mark.slow
def test_a_spec_and_a_checkpoint_that_call_the_target_budget_still_read(smoke_run, tmp_path):
    """Specs and checkpoints written before the rename call the target `budget`: the spec loads with it as
    `target_mult_adds`, and the checkpoint resumes (the finished search writes its spec again)."""
    old = json.loads((smoke_run / "spec.json").read_text())
    old["search"] = {("budget_mult_adds" if k == "target_mult_adds" else k): v for k, v in old["search"].items()}
    (tmp_path / "old_spec.json").write_text(json.dumps(old))
    assert load_spec(tmp_path / "old_spec.json").search["target_mult_adds"] == SMOKE["target"]

    out = tmp_path / "out"
    shutil.copytree(smoke_run, out)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    settings = checkpoint["identity"]["settings"]
    checkpoint["identity"]["settings"] = {("budget" if k == "target" else k): v for k, v in settings.items()}
    torch.save(checkpoint, out / "checkpoint.pt")
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert load_spec(out / "spec.json").blocks == load_spec(smoke_run / "spec.json").blocks


@pytest.mark.slow
def test_written_tensors_load_on_a_machine_without_cuda(smoke_run, assert_loads_on_cpu):
    """weights.pth and checkpoint.pt hold CPU tensors: they load without map_location where CUDA is hidden."""
    assert_loads_on_cpu(smoke_run / "weights.pth", smoke_run / "checkpoint.pt")


@pytest.mark.parametrize("args, option", [
    (["--space", "fbnetv2-x"], "--space"),
    (["--flops-target", "1e3"], "--flops-target"),
    (["--flops-target", "1e12"], "--flops-target"),
    (["--coarse-to-fine-epochs", "9"], "--coarse-to-fine-epochs"),
    (["--lambda", "0"], "--lambda"),
    (["--lambda", "-1"], "--lambda"),
    (["--samples", "1"], "--samples"),
    (["--flops-budget", "1e6"], "--flops-budget"),
    (["--blocks", "4"], "--blocks"),
    (["--compile"], "--compile"),  # every sampled architecture is a new graph: refused, not silently eager
])
def test_bad_input_is_one_line_naming_the_option_and_writes_nothing(args, option, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and option in err and "\n" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_fpnas_refuses_fp_nas_options(tmp_path, capsys):
    assert main(["--algo", "fpnas", "--preset", "smoke", "--space", "fbnetv2-f", "--out", str(tmp_path)]) == 2
    assert "--space is an option of --algo fp-nas" in capsys.readouterr().err


def test_help_tells_the_two_algorithms_apart(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Cui et al." in text and "Yan et al." in text and "--flops-target" in text


def test_cost_excess_is_the_papers_hinge():
    assert cost_excess(50, 100) == 0 and cost_excess(100, 100) == 0 and cost_excess(150, 100) == 0.5


# --------------------------------------------------------------------------- omega's step


def _omega_step_and_reference(search: FpNasSearch, k: int = 4) -> dict:
    """`train_omega` on a batch of the weight half and k sampled architectures, and the gradient it must give,
    computed here one sample at a time from the same starting weights and dropout draws: sum_k w_k grad L_k with
    w = softmax(-L / tau_omega), each L_k and grad L_k averaged over the ranks by hand. The samples run worst loss
    first, so the online softmax meets a new best at every sample. Also how many times DDP all-reduced the gradient
    (its comm hook's calls for the first bucket)."""
    search.data.train.set_epoch(0)
    images, labels = next(iter(search.data.train))
    blocks = [search.space.arch_blocks(a) for a in search.distribution.sample(k, torch.Generator().manual_seed(7))]
    masks = [101 + i for i in range(k)]
    net, dist = search.supernet, search.dist
    start = {name: t.clone() for name, t in net.state_dict().items()}
    net.train()
    params = dict(net.named_parameters())
    losses, grads = [], []
    for arch, mask in zip(blocks, masks, strict=True):
        torch.manual_seed(mask)
        loss = F.cross_entropy(net(images, arch), labels)
        g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        losses.append(dist.all_reduce_mean(loss.detach()))
        grads.append([dist.all_reduce_mean(torch.zeros_like(p) if x is None else x)
                      for x, p in zip(g, params.values(), strict=True)])
    losses = torch.stack(losses)
    order = losses.argsort(descending=True).tolist()
    w = torch.softmax(-losses / search.settings.omega_temperature, 0)
    reference = {name: sum(w[j] * grads[j][i] for j in range(k)) for i, name in enumerate(params)}

    net.load_state_dict(start)
    reduced = []
    if isinstance(search.model, DDP):
        def counting(state, bucket):
            reduced.append(bucket.index())
            return default_hooks.allreduce_hook(state, bucket)

        search.model.register_comm_hook(None, counting)
    search.model.train()
    step_losses = search.train_omega(images, labels, [blocks[j] for j in order], [masks[j] for j in order])
    step = {name: torch.zeros_like(p) if p.grad is None else p.grad.clone() for name, p in params.items()}
    return {"step": step, "reference": reference, "allreduces": reduced.count(0), "weights": w,
            "losses": losses[order], "step_losses": step_losses.detach()}


def _assert_omega_step_is_the_reference(result: dict) -> None:
    assert result["weights"].max() - result["weights"].min() > 0.05  # the weighting matters
    torch.testing.assert_close(result["step_losses"], result["losses"])
    for name, reference in result["reference"].items():
        torch.testing.assert_close(result["step"][name], reference, rtol=1e-4, atol=1e-6, msg=name)
    assert any(t.abs().sum() > 0 for t in result["step"].values())


OMEGA_SETTINGS = {**SMOKE, "omega_temperature": 0.02}  # sharp weights: a wrong weighting would show


def test_omega_step_is_the_importance_weighted_gradient(tmp_path):
    """One forward and backward per sample (online softmax) gives sum_k w_k grad L_k: the gradient of the method
    that formed the weights in a pass without gradients first, computed here one sample at a time."""
    runner = SearchRunner(FpNasSearch, FpNasSettings(**OMEGA_SETTINGS), tmp_path, progress=False)
    _assert_omega_step_is_the_reference(_omega_step_and_reference(runner.algorithm))


def test_a_step_waits_for_the_device_once_and_runs_each_sample_once(tmp_path, host_reads):
    """Everything computed from the batches stays on the device until one read per step (the loss of a warm-up
    step; the loss and alpha's losses of a search step), and omega's K samples each run one forward (alpha's K more
    on the other half in a search step), not a pass without gradients first."""
    wrap, reads = host_reads
    runner = SearchRunner(FpNasSearch, FpNasSettings(**{**SMOKE, "samples": 3}), tmp_path, progress=False)
    search = runner.algorithm
    forwards, forward = [], search.supernet.forward
    search.supernet.forward = lambda x, arch: forwards.append(arch) or forward(x, arch)
    search.data.train.set_epoch(0)
    search.data.train_arch.set_epoch(0)
    w_batch, a_batch = next(iter(search.data.train)), next(iter(search.data.train_arch))
    for epoch, phase, runs in ((0, "warmup", 3), (SMOKE["warmup_epochs"], "search", 6)):
        reads.clear()
        forwards.clear()
        record = search.train_step(epoch, 0, tuple(map(wrap, w_batch)), tuple(map(wrap, a_batch)))
        assert record["phase"] == phase and len(reads) <= 1, reads
        assert len(forwards) == runs
        assert all(math.isfinite(x) for x in [record["loss"], *record.get("alpha_losses", [])])


def test_a_search_resumed_inside_an_epoch_makes_no_batch_of_the_steps_done(tmp_path, monkeypatch):
    """Resumed at step 2 of an epoch, the search trains steps 2.. on the very batches of the uninterrupted epoch,
    without making (gathering, or decoding from an ImageFolder) the batches of steps 0 and 1 only to drop them."""
    runner = SearchRunner(FpNasSearch, FpNasSettings(**SMOKE), tmp_path, progress=False)
    search = runner.algorithm
    seen, made = [], []
    monkeypatch.setattr(search, "train_step", lambda epoch, step, w, a: seen.append((step, w, a)) or
                        {"K": 2, "entropy": 1.0, "loss": 1.0})
    for half in (search.data.train, search.data.train_arch):
        monkeypatch.setattr(half, "_normalise", lambda x, gather=half._normalise: made.append(1) or gather(x))
    search.train_epoch()
    whole, steps = list(seen), len(seen)
    seen.clear()
    made.clear()
    search.step = 2
    search.train_epoch()
    assert steps >= 3 and [step for step, _, _ in seen] == list(range(2, steps))
    for (_, w, a), (_, w_whole, a_whole) in zip(seen, whole[2:], strict=True):
        assert all(torch.equal(x, y) for x, y in zip((*w, *a), (*w_whole, *a_whole), strict=True))
    assert len(made) == 2 * (steps - 2)


@pytest.mark.slow
def test_the_step_bench_runs_and_finds_both_updates_equal():
    """bench/search_step.py (its quick check from the docstring): both tables, and the one-pass and two-pass updates
    of omega give the same gradient."""
    run = subprocess.run([sys.executable, "bench/search_step.py", "--steps", "1", "--ks", "2", "--overhead-batches",
                          "2", "--threads", "1"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    omega, overhead = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| 2 |")]
    assert float(omega[-1]) < 1e-4 and len(overhead) == 5, run.stdout


# --------------------------------------------------------------------------- 2 processes (torchrun, gloo on CPU)


def _torchrun(out: Path, *args: str, hooks: dict | None = None) -> subprocess.CompletedProcess:
    return torchrun_two(str(ROOT / "tests" / "search_run_with_hooks.py"), "--algo", "fp-nas", "--preset", "smoke",
                        "--device", "cpu", "--out", str(out), "--no-progress", *args, env=hooks)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp_nas_ddp")
    run = _torchrun(out, hooks={"SEARCH_DUMP_FINAL_STATE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_draw_the_same_architectures_and_stay_in_sync(two_process_run):
    """Each rank dumps its distribution and supernet at the end: identical on both ranks (the same K samples per
    step, omega through DDP, the same alpha gradient); rank 0's spec is that distribution's most likely arch."""
    states = [torch.load(two_process_run / f"final_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0]["distribution"] == states[1]["distribution"]
    for key, tensor in states[0]["supernet"].items():
        assert torch.equal(tensor, states[1]["supernet"][key]), key
    assert states[0]["samples"] == states[1]["samples"] and states[0]["samples"]
    spec = load_spec(two_process_run / "spec.json")
    assert spec.search["distribution"]["mode"] == states[0]["mode"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_search_killed_mid_epoch_resumes_to_the_uninterrupted_spec(two_process_run, tmp_path):
    crashed = _torchrun(tmp_path, "--checkpoint-every", "2", hooks={"SEARCH_CRASH_AT_SAVE": "3"})
    assert crashed.returncode != 0 and not (tmp_path / "spec.json").exists()
    resumed = _torchrun(tmp_path, "--checkpoint-every", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_spec(tmp_path / "spec.json"), load_spec(two_process_run / "spec.json")
    assert a.blocks == b.blocks and a.search["distribution"] == b.search["distribution"]


def _two_rank_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One of 2 gloo ranks: omega's step against its reference, then an epoch's end (BN calibration, evaluation),
    recording how many times the rank loaded the data and the calibration batches' sizes."""
    from search import runner as runner_module
    from search.distributed import cleanup

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    loads, load_data = [], runner_module.load_data
    runner_module.load_data = lambda *a, **k: loads.append(k["world_size"]) or load_data(*a, **k)
    try:
        runner = SearchRunner(FpNasSearch, FpNasSettings(**OMEGA_SETTINGS), Path(out) / "run", device="cpu",
                              progress=False)
        result = _omega_step_and_reference(runner.algorithm)
        calibrated = []
        recalibrate = algorithm_module.recalibrate_bn
        algorithm_module.recalibrate_bn = lambda model, batches, *a, **k: calibrated.extend(
            len(y) for _, y in batches) or recalibrate(model, batches, *a, **k)
        runner.algorithm.end_epoch()
        torch.save(result | {"loads": loads, "calibrated": calibrated, "mode_top1": runner.algorithm.mode_top1},
                   Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp_nas_two_ranks")
    mp.spawn(_two_rank_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_omega_step_all_reduces_once_and_is_the_weighted_gradient(two_ranks):
    """Under DDP (2 gloo processes) the K weighted backward passes all-reduce the gradient once (the first K - 1
    accumulate under no_sync), and every rank ends with the reference gradient: each sample's gradient averaged over
    the ranks, weighted by the softmax of the losses averaged over the ranks."""
    for result in two_ranks:
        assert result["allreduces"] == 1
        _assert_omega_step_is_the_reference(result)
    for name, grad in two_ranks[0]["step"].items():
        assert torch.equal(grad, two_ranks[1]["step"][name]), name


@pytest.mark.slow
@pytest.mark.distributed
def test_each_process_loads_the_data_once_and_calibrates_on_whole_batches(two_ranks):
    """FP-NAS trains nothing alone, so a rank loads only its share of the data (once), whose calibration batches are
    whole ones (the smoke preset's 64 images in steps of 32), as one process recalibrates."""
    for result in two_ranks:
        assert result["loads"] == [2] and result["calibrated"] == [32, 32]
    assert two_ranks[0]["mode_top1"] == two_ranks[1]["mode_top1"]
