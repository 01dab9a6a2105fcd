"""Latency tables (`python -m search.latency`) and latency searches (`search.run --cost latency`).

The plumbing is tested with an injected deterministic "timer" that takes a module's mult-adds (counted by the
zoo's counter) as its latency: then a table's prediction for a network must equal the independent count of the
built spec, and the entries must be exactly those a brute-force walk over every network of the space meets.
"""
import itertools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import search.latency as latency
import search.latency_table as latency_table
from fpnas_zoo import count_spec
from fpnas_zoo.counting import count_mult_adds
from fpnas_zoo.latency import Timing
from search.latency import LatencyCost, LatencyTable, agreement, fit_correction, random_arch
from search.latency import main as latency_main
from fpnas_zoo.__main__ import main as zoo_main
from search.run import main as run_main
from search.supernet import block_key

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")  # search.run's INFO log lines
SCALE = 1e5  # the fake timer: 1e5 mult-adds take 1 "ms"
FPNAS_SMOKE = ("fpnas", "smoke")
FP_NAS_SMOKE = ("fbnetv2-f++", "smoke")


def fake_ms(module, input_size) -> float:
    return count_mult_adds(module, tuple(input_size))[0] / SCALE


def fake_timer(ms_of, calls: list | None = None):
    """`latency_table.time_modules` with every module taking `ms_of(module, input size)` in each of its windows (one
    per sweep); `calls` gets what it was asked to time."""

    def time_modules(modules, protocol, seed=0, reference=None, checks=None, progress=None):
        found = {}
        for key, (module, input_size, _cache_key) in modules.items():
            if calls is not None:
                calls.append((type(module).__name__, tuple(input_size)))
            ms = ms_of(module, input_size)
            found[key] = Timing(ms, [{"median_ms": ms, "passes": 1, "sweep": s} for s in range(protocol.windows)])
            for _ in range(protocol.windows):
                if progress:
                    progress()
        return found

    return time_modules


@pytest.fixture
def timer_calls(monkeypatch):
    """Replace the timing protocol by `fake_ms`; the list of what it was asked to time."""
    calls = []
    monkeypatch.setattr(latency_table, "time_modules", fake_timer(fake_ms, calls))
    return calls


def _build(out: Path, space) -> Path:
    assert latency_main(["build", "--space", space[0], "--preset", space[1], "--runtime", "eager", "--out", str(out),
                         "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The smoke tables of both searchers' spaces, built once with the fake timer (about 1 min for FP-NAS's)."""
    folder = tmp_path_factory.mktemp("tables")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(latency_table, "time_modules", fake_timer(fake_ms))
        return {space: _build(folder / f"{space[0]}.json", space).read_bytes() for space in (FPNAS_SMOKE, FP_NAS_SMOKE)}


@pytest.fixture
def build(tmp_path, built, timer_calls):
    """build(space) -> a copy of that table in tmp_path; build(space, fresh=True) runs `build` here."""

    def make(space=FPNAS_SMOKE, fresh: bool = False) -> Path:
        out = tmp_path / "lut.json"
        if fresh:
            return _build(out, space)
        out.write_bytes(built[space])
        return out

    return make


def base_of(table: LatencyTable):
    return latency.space_from_options(table.meta["build"])[1]


def walk_every_network(space, base) -> tuple[set, set]:
    """Brute force: every (in_chs, resolution, block) of every network of the space, and every last width."""
    seen, widths = set(), set()
    for arch in itertools.product(*space.candidates()):
        chs, res = base.stem["out_chs"], (base.input_size[1] + base.stem["stride"] - 1) // base.stem["stride"]
        for block in arch:
            seen.add((chs, res, block_key(block)))
            chs, res = block["out_chs"], (res + block["stride"] - 1) // block["stride"]
        widths.add(arch[-1]["out_chs"])
    return seen, widths


@pytest.mark.slow
def test_a_table_holds_every_block_the_space_can_meet_and_nothing_else(build, timer_calls):
    table = LatencyTable.load(build(fresh=True))
    space, base = latency.space_from_options(table.meta["build"])
    assert sum(len(c) for c in space.candidates()) < 64  # the brute force below stays small
    blocks, widths = walk_every_network(space, base)
    assert set(table.blocks) == blocks
    assert set(table.ends) == widths
    assert len(timer_calls) == len(blocks) + len(widths)  # each entry timed once


@pytest.mark.parametrize("space", [FPNAS_SMOKE, FP_NAS_SMOKE], ids=["fpnas", "fp-nas"])
def test_the_prediction_of_a_network_is_the_count_of_the_built_spec(build, space):
    path = build(space)
    table = LatencyTable.load(path)
    fingerprint = table.fingerprint()
    assert LatencyTable.load(path).fingerprint() == fingerprint  # the file round-trips
    sp, base = latency.space_from_options(table.meta["build"])
    cost = LatencyCost(base, table)  # no timer: a missing entry would raise
    rng = random.Random(0)
    for _ in range(20):
        arch = random_arch(sp, rng)
        assert cost.cost(arch) == pytest.approx(count_spec(cost.spec(arch)).mult_adds / SCALE, rel=1e-9)


def test_onnxruntime_entries_leave_out_the_run_overhead_a_network_pays_once(tmp_path, monkeypatch):
    """Every ONNX Runtime session run pays 0.5 ms besides its work (fake): the table records that overhead, block
    entries are their work alone (an isolated block pays a run a block inside a network does not), the ends keep
    the network's one run, and every entry keeps its windows."""
    monkeypatch.setattr(latency_table, "time_modules", fake_timer(lambda m, size: fake_ms(m, size) + 0.5))
    out = tmp_path / "lut.json"
    assert latency_main(["build", "--space", FPNAS_SMOKE[0], "--preset", FPNAS_SMOKE[1], "--runtime", "onnxruntime",
                         "--out", str(out), "--no-progress"]) == 0
    table = LatencyTable.load(out)
    assert table.run_overhead_ms == 0.5 and table.meta["version"] == 2
    space, base = latency.space_from_options(table.meta["build"])
    cost = LatencyCost(base, table)
    for (in_chs, res, key), ms in table.blocks.items():
        block = dict(key)
        assert ms == pytest.approx(fake_ms(latency_table.build_block(in_chs, block), (in_chs, res, res)))
        assert len(table.timings[f"block {latency_table._block_text((in_chs, res, key))}"]["windows"]) == 3
    arch = random_arch(space, random.Random(0))
    width = arch[-1]["out_chs"]
    blocks = sum(cost.block_costs(arch))
    assert table.ends[width] == pytest.approx(count_spec(cost.spec(arch)).mult_adds / SCALE - blocks + 0.5)
    assert cost.cost(arch) == pytest.approx(count_spec(cost.spec(arch)).mult_adds / SCALE + 0.5)


def test_build_continues_a_table_it_finds_and_measures_only_what_is_missing(build, timer_calls):
    path = build()
    full = json.loads(path.read_text())
    dropped = sorted(full["blocks"])[::3]
    cut = {**full, "blocks": {k: v for k, v in full["blocks"].items() if k not in dropped}}
    path.write_text(json.dumps(cut))
    timer_calls.clear()
    build(fresh=True)
    assert len(timer_calls) == len(dropped)
    assert json.loads(path.read_text())["blocks"] == pytest.approx(full["blocks"])


def test_build_continues_a_table_written_before_the_exporter_was_recorded(build, timer_calls, capsys):
    path = build(fresh=True)
    data = json.loads(path.read_text())
    del data["protocol"]["exporter"]  # as tables of the same protocol were written before --exporter
    path.write_text(json.dumps(data))
    timer_calls.clear()
    assert latency_main(["build", "--space", "fpnas", "--preset", "smoke", "--runtime", "eager", "--out", str(path),
                         "--no-progress"]) == 0
    assert "continuing" in capsys.readouterr().out and not timer_calls


def test_agreement_figures_by_hand():
    got = agreement([1.0, 2.2, 2.5, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert got["mape"] == pytest.approx((0 + 0.1 + 0.5 / 3 + 0.25) / 4)
    assert got["within_10pct"] == pytest.approx(0.5)  # 0% and 10% (inclusive); 16.7% and 25% are out
    assert got["spearman"] == pytest.approx(1.0)  # same order
    assert agreement([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])["spearman"] == pytest.approx(-1.0)
    raw, measured = [1.0, 2.0, 4.0, 7.0], [2.0 * r + 0.5 for r in [1.0, 2.0, 4.0, 7.0]]
    assert fit_correction(raw, measured) == pytest.approx((2.0, 0.5))
    # Theil-Sen: one network timed in a slow stretch (x3) leaves the line where the other six put it, while least
    # squares would follow it
    raw = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    measured = [2.0 * r + 0.5 for r in raw]
    measured[6] *= 3
    assert fit_correction(raw, measured) == pytest.approx((2.0, 0.5))
    assert np.polyfit(raw, measured, 1)[0] > 2.5


def test_the_test_retest_ceiling_pairs_each_networks_two_sweeps():
    def timing(first: float, second: float, drifted_first: float | None = None) -> Timing:
        windows = [{"median_ms": first, "sweep": 0}, {"median_ms": second, "sweep": 1}]
        if drifted_first is not None:  # a drifted window of sweep 0, timed again: the steady one counts
            windows.insert(0, {"median_ms": drifted_first, "sweep": 0, "drifted": True})
        return Timing(min(first, second), windows)

    timings = [timing(1.0, 1.05), timing(2.0, 2.5), timing(3.0, 2.9, drifted_first=9.0), timing(4.0, 4.0)]
    got = latency_table.retest_agreement(timings)
    assert got == {**agreement([1.05, 2.5, 2.9, 4.0], [1.0, 2.0, 3.0, 4.0]), "networks": 4}
    assert got["within_10pct"] == 0.75 and got["spearman"] == pytest.approx(1.0)
    assert latency_table.retest_agreement(timings[:2]) is None  # too few to say


def test_validate_fits_a_correction_when_whole_networks_differ_from_the_sum(build, monkeypatch, capsys):
    path = build(FP_NAS_SMOKE)

    timed = []

    def whole_networks_slower(module, input_size):  # a network: 1.25 x its blocks and ends + 0.5 ms
        return 1.25 * fake_ms(module, input_size) + 0.5

    monkeypatch.setattr(latency_table, "time_modules", fake_timer(whole_networks_slower, timed))
    assert latency_main(["validate", "--table", str(path), "--samples", "12", "--calibration", "5",
                         "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "corrected (1.250 x sum +0.500 ms, fitted on the calibration networks" in printed
    assert "test-retest of one window (each network's second sweep against its first; the latency kept, over all windows, repeats better): 100% within +-10%" in printed
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # predicted vs measured, plotted
    assert len(timed) == 12 + 5  # the table is complete: only whole networks, each once
    table = LatencyTable.load(path)
    v, c = table.meta["validation"], table.meta["correction"]
    assert (c["scale"], c["offset_ms"], c["fitted_on"]) == (pytest.approx(1.25), pytest.approx(0.5), 5)
    assert v["raw"]["mape"] > 0.05 and v["corrected"]["mape"] < 1e-6 and v["corrected"]["within_10pct"] == 1.0
    assert v["retest"]["within_10pct"] == 1.0 and v["protocol"]["windows"] >= 2
    validation = [json.dumps(n["arch"], sort_keys=True) for n in v["networks"]]
    calibration = [json.dumps(n["arch"], sort_keys=True) for n in v["calibration_networks"]]
    assert len(set(validation)) == 12 and len(set(calibration)) == 5 and not set(validation) & set(calibration)
    for n in v["networks"]:
        spec = LatencyCost(base_of(table), table).spec(n["arch"])
        assert n["mult_adds"] == count_spec(spec).mult_adds
        assert n["measured_ms"] == pytest.approx(1.25 * n["mult_adds"] / SCALE + 0.5)
        assert [w["sweep"] for w in n["timing"]["windows"]] == list(range(v["protocol"]["windows"]))
    space, base = latency.space_from_options(table.meta["build"])
    arch = random_arch(space, random.Random(99))
    spec = LatencyCost(base, table).spec(arch)
    assert LatencyCost(base, table).cost(arch) == pytest.approx(1.25 * count_spec(spec).mult_adds / SCALE + 0.5)


def _search(tmp_path, algo, table, *extra):
    return run_main(["--algo", algo, "--preset", "smoke", "--cost", "latency", "--latency-table", str(table),
                     "--out", str(tmp_path / "run"), "--no-progress", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("algo, space, option", [("fpnas", FPNAS_SMOKE, "--latency-budget"),
                                                 ("fp-nas", FP_NAS_SMOKE, "--latency-target")])
def test_a_latency_search_runs_end_to_end_and_completes_its_table(tmp_path, build, algo, space, option, capsys):
    path = build(space)
    full = json.loads(path.read_text())
    space_, base = latency.space_from_options(full["build"])
    start = count_spec(LatencyCost(base, LatencyTable.load(path)).spec(space_.default_blocks())).mult_adds / SCALE
    dropped = sorted(full["blocks"])[:5]  # missing entries are measured on this device and added
    path.write_text(json.dumps({**full, "blocks": {k: v for k, v in full["blocks"].items() if k not in dropped}}))
    limit = round(start * 0.9, 4)  # below the starting network: the limit has work to do
    assert _search(tmp_path, algo, path, option, f"{limit}ms") == 0
    assert json.loads(path.read_text())["blocks"] == pytest.approx(full["blocks"])
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    cost, measured = spec["search"]["cost"], spec["search"]["measured"]
    assert cost["unit"] == "ms" and cost["limit_ms"] == pytest.approx(limit)
    assert cost["predicted_ms"] == pytest.approx(measured["mult_adds"] / SCALE, rel=1e-4)
    assert cost["measured_ms"] > 0 and cost["table_fingerprint"] == LatencyTable.load(path).fingerprint()
    assert spec["search"]["budget_mult_adds" if algo == "fpnas" else "target_mult_adds"] is None
    trace = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    scored = [r for r in trace if "cost" in r]
    assert scored and all(r["cost"] == pytest.approx(r["mult_adds"] / SCALE, rel=1e-6) for r in scored)
    if algo == "fpnas":
        assert (tmp_path / "run" / "plots" / "accuracy_vs_latency.png").exists()
    capsys.readouterr()
    assert zoo_main(["info", str(tmp_path / "run" / "spec.json")]) == 0  # the search's cost, as the spec holds it
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cost: "))
    numbers = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?) ms", line)]
    assert numbers == pytest.approx([limit, cost["predicted_ms"], cost["measured_ms"]], rel=1e-3), line


@pytest.mark.slow
def test_a_search_prices_with_a_complete_table_of_another_device_and_times_nothing_here(tmp_path, build,
                                                                                         timer_calls):
    path = _edited(build(), device={"cpu": "A phone's CPU"})
    table = LatencyTable.load(path)
    space_, base = latency.space_from_options(table.meta["build"])
    start = count_spec(LatencyCost(base, table).spec(space_.default_blocks())).mult_adds / SCALE
    before = path.read_bytes()
    assert _search(tmp_path, "fpnas", path, "--latency-budget", f"{round(start * 0.9, 4)}ms",
                   "--table-of-another-device") == 0
    cost = json.loads((tmp_path / "run" / "spec.json").read_text())["search"]["cost"]
    assert cost["device"]["cpu"] == "A phone's CPU" and cost["measured_ms"] is None
    assert path.read_bytes() == before and not timer_calls


def _edited(path: Path, **meta) -> Path:
    data = json.loads(path.read_text())
    for key, value in meta.items():
        data[key] = {**data[key], **value}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("case", ["other space", "other device", "cuda table", "budget below the fastest",
                                  "missing table", "not a table", "no limit", "mult-adds limit", "no --cost",
                                  "wrong algo option", "no table"])
def test_refusals_are_one_line_and_write_nothing(tmp_path, build, timer_calls, capsys, case):
    fpnas_table = build()
    if case == "other device":
        _edited(fpnas_table, device={"cpu": "Another CPU 9000"})
    if case == "cuda table":
        _edited(fpnas_table, protocol={"runtime": "cuda"}, device={"gpu": "H200"})
    argv = {
        "other space": ["--algo", "fp-nas", "--latency-target", "1ms", "--latency-table", str(fpnas_table)],
        "other device": ["--algo", "fpnas", "--latency-budget", "1ms", "--latency-table", str(fpnas_table)],
        "cuda table": ["--algo", "fpnas", "--latency-budget", "1ms", "--latency-table", str(fpnas_table)],
        "budget below the fastest": ["--algo", "fpnas", "--latency-budget", "0.001ms", "--latency-table",
                                     str(fpnas_table)],
        "missing table": ["--algo", "fpnas", "--latency-budget", "1ms", "--latency-table", str(tmp_path / "no.json")],
        "not a table": ["--algo", "fpnas", "--latency-budget", "1ms", "--latency-table", str(tmp_path / "x.json")],
        "no limit": ["--algo", "fpnas", "--latency-table", str(fpnas_table)],
        "mult-adds limit": ["--algo", "fpnas", "--flops-budget", "1e6", "--latency-table", str(fpnas_table)],
        "no --cost": ["--algo", "fpnas", "--latency-budget", "1ms"],
        "wrong algo option": ["--algo", "fpnas", "--latency-target", "1ms", "--latency-table", str(fpnas_table)],
        "no table": ["--algo", "fpnas", "--latency-budget", "1ms"],
    }[case]
    (tmp_path / "x.json").write_text('{"not": "a table"}')
    expected = {"other space": "another space", "other device": "another device (cpu: ",
                "cuda table": "no CUDA device",
                "budget below the fastest": "cheapest network", "missing table": "no such file",
                "not a table": "not a latency table", "no limit": "needs --latency-budget",
                "mult-adds limit": "with --cost latency give --latency-budget",
                "no --cost": "needs --cost latency", "wrong algo option": "takes --latency-budget",
                "no table": "needs --latency-table"}[case]
    if case not in ("no --cost",):
        argv = ["--cost", "latency", *argv]
    if case == "cuda table" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = fpnas_table.read_bytes()
    timer_calls.clear()
    assert run_main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress", *argv]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "run" / "spec.json").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert fpnas_table.read_bytes() == before and not timer_calls
    if case in ("other device", "cuda table"):  # the refusal names the option that searches with it anyway
        assert "--table-of-another-device" in err[0]


def test_a_table_of_another_device_that_lacks_entries_is_refused_and_nothing_is_timed(tmp_path, build,
                                                                                        timer_calls, capsys):
    path = _edited(build(), device={"cpu": "A phone's CPU"})
    data = json.loads(path.read_text())
    dropped = sorted(data["blocks"])[:3]
    path.write_text(json.dumps({**data, "blocks": {k: v for k, v in data["blocks"].items() if k not in dropped}}))
    before = path.read_bytes()
    argv = ["--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress", "--algo", "fpnas", "--cost",
            "latency", "--latency-budget", "1ms", "--latency-table", str(path), "--table-of-another-device"]
    assert run_main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(err) == 1 and "lacks 3 entries" in err[0] and "cannot be measured here" in err[0], err
    assert path.read_bytes() == before and not timer_calls and not (tmp_path / "run" / "spec.json").exists()


def test_table_of_another_device_needs_cost_latency(tmp_path, capsys):
    assert run_main(["--preset", "smoke", "--algo", "fpnas", "--out", str(tmp_path / "run"), "--no-progress",
                     "--table-of-another-device"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(err) == 1 and "--table-of-another-device" in err[0] and "--cost latency" in err[0], err


def test_build_refuses_to_continue_a_table_of_another_space_and_keeps_it(build, capsys):
    path = build()
    before = path.read_bytes()
    assert latency_main(["build", "--space", "fbnetv2-f++", "--preset", "smoke", "--runtime", "eager", "--out",
                         str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot continue" in err[0] and "another space" in err[0]
    assert path.read_bytes() == before


@pytest.mark.parametrize("argv, expected", [
    (["build", "--space", "fpnas", "--runtime", "eager", "--threads", "0", "--out", "t.json"], "--threads"),
    (["build", "--space", "fpnas", "--runtime", "onnxruntime", "--channels-last", "--out", "t.json"],
     "--channels-last"),
    (["build", "--space", "nope", "--out", "t.json"], "--space nope"),
    (["validate", "--table", "missing.json"], "--table missing.json: no such file"),
    (["validate", "--table", "missing.json", "--samples", "2"], "--samples"),
])
def test_latency_cli_refusals(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert latency_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "t.json").exists()


def test_parse_ms():
    assert latency.parse_ms("4ms") == 4.0 and latency.parse_ms("0.5 ms") == 0.5 and latency.parse_ms("3") == 3.0
    for bad in ("4s", "-1ms", "0", "fast"):
        with pytest.raises(Exception, match="milliseconds"):
            latency.parse_ms(bad)


@pytest.mark.slow
def test_the_command_build_prints_to_check_the_table_works(build, capsys):
    build(fresh=True)
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check it: ")]
    assert len(hint) == 1
    argv = hint[0].removeprefix("check it: ").split()
    assert argv[:3] == ["python", "-m", "search.latency"]
    assert latency_main([*argv[3:], "--no-progress"]) == 0
    assert LatencyTable.load(argv[argv.index("--table") + 1]).meta["validation"]["samples"] == 50


@pytest.mark.parametrize("space", [("fbnetv2-f", "demo"), ("fbnetv2-f++", "smoke"), ("fpnas", "demo")])
def test_every_block_a_random_network_meets_is_an_entry(space):
    """The entries are keyed as the searchers' networks are placed (`arch_blocks`: a residual only where the widths
    differ), so no network of the space needs an entry the table lacks."""
    from search.cost import entry_key

    sp, base = latency.space_from_options({"space": space[0], "preset": space[1]})
    cost = LatencyCost(base, LatencyTable({}))
    entries, last = cost.reachable(sp.candidates())
    keys = {entry_key(*e) for e in entries}
    assert len(keys) == len(entries)
    rng = random.Random(1)
    for _ in range(300):
        arch = random_arch(sp, rng)
        chs, res = base.stem["out_chs"], (base.input_size[1] + base.stem["stride"] - 1) // base.stem["stride"]
        for block in arch:
            assert (chs, res, block_key(block)) in keys, block
            chs, res = block["out_chs"], (res + block["stride"] - 1) // block["stride"]
        assert arch[-1]["out_chs"] in last
