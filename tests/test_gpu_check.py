"""bench/gpu_check.py, the one prepared GPU check: its --tiny mode end to end on the CPU (so it cannot rot while no
GPU is at hand), a failing section recorded without losing the others, and bad options refused in one line. Speed
is never asserted: only that every number was measured and that the printed table is the JSON's."""
import datetime
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from conftest import ROOT, load_script

SECTIONS = {"a", "b", "c", "d", "e"}


def _bench():
    return load_script("bench/gpu_check.py")


def printed_table(stdout: str) -> list[list[str]]:
    """The cells of every row of the markdown table in `stdout`, header and rule left out."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert lines[:2] == ["| section | row | batch | px | images/s | ratio | ratio to | s | note |", "|---" * 9 + "|"]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


def number(cell: str) -> float | None:
    return None if cell == "-" else float(cell)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, out


@pytest.mark.slow
def test_tiny_run_measures_every_section(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and set(result["sections"]) == SECTIONS
    assert all(s["status"] == "ok" and not s["errors"] and not s["skipped"] for s in result["sections"].values())
    rows = result["rows"]
    assert {r["section"] for r in rows} == SECTIONS and not any(r["error"] for r in rows)
    for r in rows:
        if r["section"] == "e":  # subprocesses: seconds and exit status
            assert r["exit_code"] == 0 and r["seconds"] > 0 and r["images_per_s"] is None
        else:
            assert r["images_per_s"] > 0 and r["ms"] > 0 and r["calls"] >= 1, r
    names = {r["row"] for r in rows}
    for model in ("fpnasnet_cifar", "mobilenetv2_100"):
        assert {f"{model} eager", f"{model} compiled", f"{model} fp-nas-imagenet"} <= names
    assert {"fpnasnet_cifar fpnas-imagenet", "fpnasnet_cifar fp-nas-imagenet compiled"} <= names
    assert {"FPNAS standalone", "FPNAS supernet, same arch", "FP-NAS standalone", "FP-NAS supernet, same arch",
            "FP-NAS step, K = 2", "FP-NAS step, K = 14"} <= names
    assert {r["row"] for r in rows if r["section"] == "e"} == {f"search.run --algo {a} --preset smoke"
                                                               for a in ("fpnas", "fp-nas")}
    # ratios are to the section's reference row, measured in the same run
    by_name = {r["row"]: r for r in rows}
    for r in rows:
        if r["ratio"] is not None:
            reference = by_name[{"K = 2": "FP-NAS step, K = 2"}.get(r["ratio_to"], r["ratio_to"])]
            assert r["ratio"] == pytest.approx(r["images_per_s"] / reference["images_per_s"])
    compiled = by_name["fpnasnet_cifar compiled"]
    assert compiled["compile_s"] > 0 and compiled["graphs"] >= 1
    device = result["device"]
    assert device["device"] == "cpu" and device["torch"] == torch.__version__ and device["timm"] == timm.__version__
    assert device["name"]
    when = datetime.datetime.fromisoformat(result["date"])
    assert abs(datetime.datetime.now(datetime.timezone.utc) - when) < datetime.timedelta(hours=1)
    assert [p.name for p in out.parent.iterdir()] == ["check.json"]  # written atomically: no temp file left


@pytest.mark.slow
def test_the_printed_table_is_the_json(tiny_run):
    done, out = tiny_run
    rows = json.loads(out.read_text())["rows"]
    table = printed_table(done.stdout)
    assert len(table) == len(rows)
    for cells, r in zip(table, rows, strict=True):
        section, name, batch, px, images, ratio, ratio_to, seconds, note = cells
        assert (section, name) == (r["section"], r["row"])
        assert number(batch) == r["batch"] and number(px) == r["px"]
        for cell, value, places in ((images, r["images_per_s"], 1), (ratio, r["ratio"], 2), (seconds, r["seconds"], 1)):
            if value is None:
                assert cell == "-"
            else:
                assert number(cell) == pytest.approx(value, abs=0.51 * 10 ** -places)
        assert ratio_to == (r["ratio_to"] or "-") and note == r["note"]


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    bench = _bench()

    def part_failing(args):  # one row measured, one raising: the section reports both
        return [bench.attempt("good", lambda: {"images_per_s": 5.0}), bench.attempt("bad", lambda: 1 / 0)]

    def whole_failing(args):
        raise RuntimeError("no such recipe")

    monkeypatch.setattr(bench, "zoo_inference", part_failing)
    monkeypatch.setattr(bench, "recipe_training", whole_failing)
    monkeypatch.setattr(bench, "supernet_vs_standalone", lambda args: [bench.row("after", images_per_s=7.0)])
    out = tmp_path / "check.json"
    assert bench.main(["--device", "cpu", "--tiny", "--only", "c,a,b", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert list(sections) == ["a", "b", "c"]  # the table's order, whatever --only's
    assert sections["a"]["status"] == "failed" and sections["a"]["errors"] == ["bad: ZeroDivisionError: division "
                                                                               "by zero"]
    assert sections["b"]["status"] == "failed" and "RuntimeError: no such recipe" in sections["b"]["errors"][0]
    assert sections["c"]["status"] == "ok"
    assert [(r["section"], r["row"], r["images_per_s"]) for r in result["rows"]] == [
        ("a", "good", 5.0), ("a", "bad", None), ("b", "section b", None), ("c", "after", 7.0)]
    printed = capsys.readouterr().out
    assert "FAILED: RuntimeError: no such recipe" in printed and "FAILED sections: a, b" in printed


@pytest.mark.parametrize("argv, option", [
    (["--device", "cpu"], "--device cpu"),  # the full check on a CPU: hours
    (["--device", "cpu", "--tiny", "--only", "a,z"], "--only a,z"),
    (["--device", "cpu", "--tiny", "--models", "no_such_model"], "--models no_such_model"),
    (["--device", "cpu", "--tiny", "--batch", "0"], "--batch"),
    (["--device", "tpu", "--tiny"], "--device tpu"),
])
def test_bad_options_are_one_line_naming_the_option_and_nothing_is_written(tmp_path, capsys, argv, option):
    out = tmp_path / "check.json"
    assert _bench().main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option}")
    assert not out.exists()


def test_out_must_be_a_file_path(tmp_path, capsys):
    assert _bench().main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --out {tmp_path}: is a folder")
