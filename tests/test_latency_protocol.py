"""fpnas_zoo.latency, the one timing protocol: BatchNorm folding, the protocol under an injected clock (eager and ONNX
Runtime), the refusals, and the commands that time through it (`python -m fpnas_zoo list/info --latency`,
bench/zoo_latency.py). Speed itself is never asserted: every time here comes from a fake clock, or is only checked to
be a positive number."""
import gc
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from conftest import randomise_batchnorm
from torch.nn.modules.batchnorm import _BatchNorm

import fpnas_zoo.export
from fpnas_zoo import latency
from fpnas_zoo.__main__ import main
from fpnas_zoo.latency import Prepared, Protocol, Timing, fold_batchnorm, measure, measure_interleaved, quantile

ROOT = Path(__file__).resolve().parents[1]


def _batchnorms_after_conv(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(BatchNorm modules that run in eval mode, those whose input is a Conv2d's output), found by running the model
    with hooks. (Split attention applies its first BatchNorm itself in eval mode, folded into its filters.)"""
    conv_outputs, fed_by_conv, ran = [], set(), set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: conv_outputs.append(out))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            def pre(_m, inputs, name=name):
                ran.add(name)
                if any(inputs[0] is out for out in conv_outputs):
                    fed_by_conv.add(name)
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return len(ran), len(fed_by_conv)


@pytest.mark.parametrize("name, input_size", [
    ("fpnasnet_cifar", (3, 32, 32)),
    ("fp_nas_s1pp", (3, 64, 64)),  # FP-NAS blocks (split attention) at a reduced input
    ("mobilenetv2_100", (3, 96, 96)),  # timm's own blocks (BatchNormAct2d)
])
def test_fold_batchnorm_keeps_outputs_and_leaves_no_batchnorm_after_a_conv(name, input_size):
    torch.manual_seed(0)
    model = timm.create_model(name)
    randomise_batchnorm(model)
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(1))
    total, after_conv = _batchnorms_after_conv(model, x)
    assert after_conv > 0
    with torch.no_grad():
        expected = model.eval()(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert _batchnorms_after_conv(folded, x) == (total - after_conv, 0)
    assert _batchnorms_after_conv(model, x) == (total, after_conv)  # the model itself is left as it was


class FakeClock:
    """`time.perf_counter` for fpnas_zoo.latency: it stands still until a pass advances it."""

    def __init__(self, pass_ms: list[float]):
        self.now, self.pass_ms, self.passes = 100.0, pass_ms, 0

    def perf_counter(self) -> float:
        return self.now

    def one_pass(self) -> None:
        self.now += self.pass_ms[self.passes] / 1e3
        self.passes += 1

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(perf_counter=self.perf_counter, time=lambda: 1.7e9 + self.now)


# passes in ms: 3 warm-up passes, then 5 timed ones whose median (3) is neither their mean nor the median of a window
# shifted by one pass (8 both ways), nor of all passes
PASS_MS = [50.0, 40.0, 30.0, 1.0, 9.0, 2.0, 8.0, 3.0]
WARMUP, REPEATS = 3, 5
BY_COUNT = dict(warmup=WARMUP, repeats=REPEATS, warmup_s=0.0, window_s=0.0, windows=1)  # pass counts alone


def test_eager_takes_the_median_of_the_timed_passes_on_its_thread_count(monkeypatch):
    clock = FakeClock(PASS_MS * 2)
    monkeypatch.setattr(latency, "time", clock.module())
    block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    threads_seen = []

    def tick(_module, _inputs, _output):
        threads_seen.append(torch.get_num_threads())
        clock.one_pass()

    block[2].register_forward_hook(tick)
    protocol = Protocol(runtime="eager", threads=1, batch_size=2, **BY_COUNT)
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        window = Prepared(block, (3, 8, 8), protocol).window()
        assert torch.get_num_threads() == 3  # restored
    finally:
        torch.set_num_threads(previous)
    assert clock.passes == WARMUP + REPEATS
    timed = PASS_MS[WARMUP:]
    assert window["passes"] == REPEATS and window["median_ms"] == pytest.approx(3.0)
    assert window["p10_ms"] == pytest.approx(np.percentile(timed, 10))
    assert window["p90_ms"] == pytest.approx(np.percentile(timed, 90))
    assert window["start"] == pytest.approx(1.7e9 + 100.0)
    assert threads_seen == [1] * (WARMUP + REPEATS)
    clock.passes = 0
    assert measure(block, (3, 8, 8), protocol) == pytest.approx(3.0)


def test_a_window_lasts_its_seconds_as_well_as_its_passes(monkeypatch):
    """Passes of 1/64 s (exact in binary): a warm-up of at least 2 passes and 1/16 s runs 4, then at least 3 timed
    passes and 1/8 s: 8 of them; with 20 passes asked for, 20."""
    clock = FakeClock([1000 / 64] * 100)
    monkeypatch.setattr(latency, "time", clock.module())
    run = Prepared.__new__(Prepared)
    run.protocol = Protocol(runtime="eager", warmup=2, repeats=3, warmup_s=1 / 16, window_s=1 / 8)

    def one() -> float:
        clock.one_pass()
        return 1000 / 64

    run.run = one
    window = run.window()
    assert window["passes"] == 8 and clock.passes == 12
    assert window["median_ms"] == 1000 / 64
    run.protocol = Protocol(runtime="eager", warmup=2, repeats=20, warmup_s=1 / 16, window_s=1 / 8)
    assert run.window()["passes"] == 20 and clock.passes == 12 + 4 + 20


def test_a_window_runs_with_garbage_collection_off_and_one_thread_pinned_to_one_core():
    run = Prepared.__new__(Prepared)
    run.protocol = Protocol(runtime="eager", threads=1, warmup=0, repeats=2, warmup_s=0.0, window_s=0.0)
    seen = []
    run.run = lambda: seen.append((gc.isenabled(), os.sched_getaffinity(0))) or 1.0
    allowed = os.sched_getaffinity(0)
    assert gc.isenabled()
    run.window()
    assert seen == [(False, {max(allowed)})] * 2
    assert gc.isenabled() and os.sched_getaffinity(0) == allowed  # both put back
    run.protocol = Protocol(runtime="eager", threads=2, warmup=0, repeats=1, warmup_s=0.0, window_s=0.0)
    seen.clear()
    run.window()
    assert seen == [(False, allowed)]  # two threads: not pinned


def test_quantile_interpolates_as_numpy_does():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8):
        values = list(rng.random(n))
        for q in (0.0, 0.2, 0.5, 0.9, 1.0):
            assert quantile(values, q) == pytest.approx(np.quantile(values, q))


class FakeModule:
    """A prepared module whose windows take the medians given, in turn; it logs the order it was timed in."""

    def __init__(self, name: str, medians: list[float], log: list[str]):
        self.name, self.medians, self.log = name, list(medians), log

    def window(self) -> dict:
        self.log.append(self.name)
        return {"start": float(len(self.log)), "passes": 1, "median_ms": self.medians.pop(0), "p10_ms": 0.0,
                "p90_ms": 0.0}


def test_interleaved_sweeps_time_every_module_once_a_sweep_in_a_new_order_and_keep_a_low_quantile():
    log = []
    modules = {name: FakeModule(name, [10.0 + i, 20.0 + i, 12.0 + i, 11.0 + i], log) for i, name in enumerate("abcdef")}
    protocol = Protocol(windows=4, quantile=0.2)
    timings, checks = measure_interleaved(modules, protocol, seed=3)
    assert checks == []
    sweeps = [log[i * 6:(i + 1) * 6] for i in range(4)]
    assert all(sorted(s) == list("abcdef") for s in sweeps)
    assert len({tuple(s) for s in sweeps}) > 1  # the order changes between sweeps
    for i, name in enumerate("abcdef"):
        medians = [10.0 + i, 20.0 + i, 12.0 + i, 11.0 + i]
        assert timings[name].ms == pytest.approx(np.quantile(medians, 0.2))
        assert [w["sweep"] for w in timings[name].windows] == [0, 1, 2, 3]
        assert timings[name].spread == pytest.approx((20.0 + i) / (10.0 + i) - 1)


def test_windows_timed_in_a_slow_stretch_are_timed_again_and_left_out():
    """The reference runs 1.0 ms, then 2.0 (the machine slowed down) after the first 4 windows of sweep 0, then 1.0
    again: those 4 windows are timed again at the end of the sweep and marked drifted; the latency leaves them out."""
    log = []
    # every module is slow (x3) in its first window, as the machine was when the reference found it slow
    modules = {name: FakeModule(name, [30.0, 10.0, 10.0], log) for name in "abcdefgh"}
    reference = FakeModule("ref", [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0], log)
    protocol = Protocol(windows=2, quantile=0.0)
    timings, checks = measure_interleaved(modules, protocol, seed=0, reference=reference, reference_every=4,
                                          drift=0.15)
    first_four = log[1:5]
    assert log[0] == "ref" and log[5] == "ref"
    assert log[10] == "ref" and sorted(log[11:15]) == sorted(first_four) and log[15] == "ref"  # timed again
    assert [c["median_ms"] for c in checks] == [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    for name, timing in timings.items():
        drifted = [w["drifted"] for w in timing.windows]
        if name in first_four:
            assert drifted == [True, False, False] and timing.ms == 10.0
        else:
            assert drifted == [False, False] and timing.ms == 10.0  # first window 30: not kept (quantile 0)
    assert sum(len(t.windows) for t in timings.values()) == 8 * 2 + 4


def test_a_timing_survives_its_dict_and_old_protocols_read_as_measured():
    timing = Timing.of([{"median_ms": 2.0, "passes": 3}, {"median_ms": 4.0, "passes": 5, "drifted": True}], 0.5)
    assert timing.ms == 2.0 and timing.passes == 8 and timing.spread == 1.0
    assert Timing.from_dict(json.loads(json.dumps(timing.as_dict()))) == timing
    old = Protocol.from_dict({"runtime": "eager", "threads": 1, "batch_size": 1, "warmup": 10, "repeats": 50,
                              "channels_last": False})
    assert (old.windows, old.window_s, old.warmup_s, old.quantile, old.pin) == (1, 0.0, 0.0, 0.5, False)


def test_onnxruntime_times_the_projects_export_on_its_thread_count(monkeypatch):
    clock = FakeClock(PASS_MS)
    monkeypatch.setattr(latency, "time", clock.module())
    exported, sessions = [], []
    real_onnx_bytes, real_session = fpnas_zoo.export.onnx_bytes, fpnas_zoo.export.ort_session

    def spy_onnx_bytes(model, *args, **kwargs):
        exported.append(model)
        return real_onnx_bytes(model, *args, **kwargs)

    class CountingSession:
        """The session as timed: its input bound once, each pass a run with that binding (no feed to copy)."""

        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def run(self, *args, **kwargs):
            pytest.fail("timed with a feed: the input would be copied inside the timed pass")

        def run_with_iobinding(self, binding):
            self.session.run_with_iobinding(binding)
            clock.one_pass()

    def spy_session(*args, **kwargs):
        sessions.append(real_session(*args, **kwargs))
        return CountingSession(sessions[-1])

    monkeypatch.setattr(fpnas_zoo.export, "onnx_bytes", spy_onnx_bytes)
    monkeypatch.setattr(fpnas_zoo.export, "ort_session", spy_session)
    block = timm.create_model("fpnasnet_cifar").blocks[1][0]  # a zoo block: 24 -> 40 channels, stride 2, at 32x32
    protocol = Protocol(runtime="onnxruntime", threads=2, batch_size=1, **BY_COUNT)
    assert measure(block, (24, 32, 32), protocol) == pytest.approx(3.0)
    assert clock.passes == WARMUP + REPEATS
    assert len(exported) == 1 and any(m is block for m in exported[0].modules())
    assert len(sessions) == 1 and sessions[0].get_session_options().intra_op_num_threads == 2


def test_exports_are_cached_by_content(monkeypatch, tmp_path):
    monkeypatch.setenv("FPNAS_ZOO_CACHE", str(tmp_path))
    exported = []
    real_onnx_bytes = fpnas_zoo.export.onnx_bytes
    monkeypatch.setattr(fpnas_zoo.export, "onnx_bytes", lambda m, *a, **k: exported.append(m) or real_onnx_bytes(
        m, *a, **k))
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    first = latency.cached_onnx(block, (4, 8, 8), "block A")
    again = latency.cached_onnx(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()), (4, 8, 8), "block A")
    assert len(exported) == 1 and again == first and len(list((tmp_path / "onnx").iterdir())) == 1
    latency.cached_onnx(block, (4, 8, 8), "block B")  # another key: exported again
    latency.cached_onnx(block, (4, 16, 16), "block A")  # another input size too
    assert len(exported) == 3 and len(list((tmp_path / "onnx").iterdir())) == 3
    session = fpnas_zoo.export.ort_session(first)
    (out,) = session.run(None, {"input": np.zeros((1, 4, 8, 8), np.float32)})
    assert out.shape == (1, 4, 8, 8)


def test_the_exporter_is_part_of_the_cache_key(monkeypatch, tmp_path):
    monkeypatch.setenv("FPNAS_ZOO_CACHE", str(tmp_path))
    exported = []
    real_onnx_bytes = fpnas_zoo.export.onnx_bytes
    monkeypatch.setattr(fpnas_zoo.export, "onnx_bytes", lambda m, *a, **k: exported.append(k["exporter"]) or
                        real_onnx_bytes(m, *a, **k))
    block = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    traced = latency.cached_onnx(block, (4, 8, 8), "block A", "torchscript")
    assert latency.cached_onnx(block, (4, 8, 8), "block A", "torchscript") == traced
    latency.cached_onnx(block, (4, 8, 8), "block A")  # the same block by dynamo: not served the traced file
    assert exported == ["torchscript", "dynamo"]
    x = torch.randn(3, 4, 8, 8)  # the batch axis stays dynamic
    (out,) = fpnas_zoo.export.ort_session(traced).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(out - block(x).numpy()).max() < 1e-5


def test_an_older_protocol_reads_as_the_dynamo_exporter_and_torchscript_is_named():
    recorded = Protocol().as_dict()
    del recorded["exporter"]
    assert Protocol.from_dict(recorded) == Protocol()
    assert "TorchScript" in Protocol(exporter="torchscript").describe() and "TorchScript" not in Protocol().describe()


@pytest.mark.parametrize("settings, option", [
    ({"exporter": "tflite"}, "--exporter"),
    ({"runtime": "eager", "exporter": "torchscript"}, "--exporter"),
    ({"runtime": "tpu"}, "--runtime"),
    ({"threads": 0}, "--threads"),
    ({"batch_size": 0}, "--batch-size"),
    ({"warmup": -1}, "--warmup"),
    ({"repeats": 0}, "--repeats"),
    ({"windows": 0}, "--windows"),
    ({"window_s": -1.0}, "--window-s"),
    ({"quantile": 1.5}, "--quantile"),
    ({"runtime": "onnxruntime", "channels_last": True}, "--channels-last"),
    pytest.param({"runtime": "cuda"}, "--runtime",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_each_bad_protocol_option_is_refused_in_one_line_naming_it(settings, option):
    with pytest.raises(ValueError) as refused:
        Protocol(**settings).check()
    message = str(refused.value)
    assert message.startswith(option) and "\n" not in message


@pytest.mark.parametrize("command", ["list", "info fpnasnet_cifar"])
@pytest.mark.parametrize("option, option_args", [
    ("--runtime", ["eager"]), ("--threads", ["2"]), ("--batch-size", ["4"]), ("--repeats", ["3"]),
    ("--warmup", ["1"]), ("--channels-last", []), ("--windows", ["2"]),
])
def test_a_latency_option_without_latency_is_refused(capsys, command, option, option_args):
    assert main([*command.split(), option, *option_args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}") and "--latency" in lines[0]


@pytest.mark.parametrize("argv, option", [
    (["--threads", "0"], "--threads"), (["--runtime", "tpu"], "--runtime"), (["--repeats", "0"], "--repeats"),
    (["--channels-last"], "--channels-last"),  # the default runtime is ONNX Runtime
])
def test_a_bad_latency_option_is_refused_before_anything_is_built(capsys, monkeypatch, argv, option):
    monkeypatch.setattr(latency, "measure_model", lambda *a: pytest.fail("timed despite a bad option"))
    assert main(["info", "fpnasnet_cifar", "--latency", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and re.fullmatch(rf"error: {option}[^\n]*\n", captured.err)


def test_info_latency_end_to_end_on_eager(capsys):
    argv = ["info", "fpnasnet_cifar", "--latency", "--runtime", "eager", "--repeats", "3", "--warmup", "1", "--windows",
            "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("fpnasnet_cifar  32x32 "))
    ms, images_per_s = map(float, re.search(r"(\d+\.\d+) \((\d+\.\d+)\)$", row).groups())
    assert ms > 0 and images_per_s == pytest.approx(1e3 / ms, rel=0.01)
    assert re.search(r"^Latency: quantile 0.2 of 2 window medians, each of at least 3 passes and 0.2 s after at least "
                     r"1 passes and 0.05 s of warm-up; eager, 1 thread, batch 1, pinned to one core; models timed in "
                     r"interleaved sweeps", out, re.M)

    assert main([*argv, "--batch-size", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    found = info["latency"]
    assert found["protocol"] == {**Protocol().as_dict(), "runtime": "eager", "threads": 1, "batch_size": 2,
                                 "warmup": 1, "repeats": 3, "windows": 2}
    assert found["spread"] >= 0
    assert found["ms"] > 0 and found["images_per_s"] == pytest.approx(2e3 / found["ms"])
    assert {"cpu", "cores", "torch"} <= set(found["device"]) and len(info["blocks"]) == 17
    assert main(["info", "fpnasnet_cifar", "--json"]) == 0
    assert "latency" not in json.loads(capsys.readouterr().out)  # without --latency: as before


@pytest.mark.slow
def test_list_latency_times_every_model_under_the_options_protocol(capsys, monkeypatch):
    """The plumbing of `list --latency` with an injected timer: each model's own number lands in its own row."""
    import fpnas_zoo.__main__ as cli

    timed = []

    def fake_prepare(model, input_size, protocol):
        timed.append((model.spec.name, protocol))
        return model.spec.name

    def fake_interleaved(prepared, protocol, progress=None):  # ms: a number each row can be checked against
        return {key: Timing(float(len(name)), [{"median_ms": float(len(name))}]) for key, name in prepared.items()}, []

    monkeypatch.setattr(latency, "prepare", fake_prepare)
    monkeypatch.setattr(latency, "measure_interleaved", fake_interleaved)
    monkeypatch.setattr(cli, "create_model_from_spec", lambda spec: types.SimpleNamespace(
        spec=spec, eval=lambda: types.SimpleNamespace(spec=spec)))
    assert main(["list", "--latency", "--runtime", "eager", "--threads", "2", "--batch-size", "4", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    names = list(fpnas_zoo.registered_specs())
    assert [r["name"] for r in rows] == names and [name for name, _ in timed] == names
    assert {p for _, p in timed} == {Protocol(runtime="eager", threads=2, batch_size=4)}
    for r in rows:
        assert r["latency"]["ms"] == len(r["name"]) and r["latency"]["images_per_s"] == pytest.approx(
            4e3 / len(r["name"]))
    assert f"{len(names)}/{len(names)}" in captured.err  # the progress bar, on stderr

    assert main(["list", "--latency", "--runtime", "eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-4:] == ["weights", "latency", "ms", "(img/s)"]
    row = next(line for line in lines if line.startswith("fpnasnet "))
    assert row.endswith(f"{8:.2f} ({1e3 / 8:.1f})")
    assert lines[-1].startswith("Latency: quantile 0.2 of 3 window medians, each of at least 20 passes")


@pytest.mark.slow
def test_the_bench_command_runs(tmp_path):
    """bench/zoo_latency.py at a toy size (one small model, one round, two passes): it runs end to end through both
    runtimes and writes its JSON. Kept to one 32x32 model so it stays within seconds of export."""
    out = tmp_path / "zoo_latency.json"
    command = [sys.executable, "bench/zoo_latency.py", "--models", "fpnasnet_cifar", "--rounds", "1", "--repeats",
               "2", "--warmup", "1", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"^\| `fpnasnet_cifar` \| 32 \| 74 \|", run.stdout, re.M)
    result = json.loads(out.read_text())
    (row,) = result["models"]
    assert row["name"] == "fpnasnet_cifar" and row["zoo"] and len(row["rounds_ms"]["onnxruntime@32"]) == 1
    assert row["images_per_s"]["eager"]["32"] == pytest.approx(32e3 / row["ms"]["eager"]["32"])
    assert result["protocol"]["threads"] == 1 and "onnxruntime" in result["device"]
