"""From a finished search to what a user runs: the search's folder exports in one command to a folder timm loads,
and `search.run --help`'s latency example runs as printed."""
import contextlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import timm
import torch

import fpnas_zoo  # noqa: F401 - registers the generic entry point an export names
import search.latency_table
import search.runner
from fpnas_zoo import create_model_from_spec, load_spec
from hub.export import main as export_main
from search.latency import build_parser as latency_parser
from search.run import build_parser as run_parser
from search.run import main as run_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """A smoke FPNAS search (seconds) as `python -m search.run` leaves it, and the summary line it printed."""
    out = tmp_path_factory.mktemp("search") / "s1"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_main(["--algo", "fpnas", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out, printed.getvalue()


def test_the_summary_line_prints_the_top1_with_two_decimals(finished_search):
    _, printed = finished_search
    summary = next(line for line in printed.splitlines() if line.startswith("searched "))
    assert re.search(r", val top-1 \d{1,3}\.\d\d%; wrote ", summary), summary


@pytest.mark.parametrize("given", ["folder", "checkpoint.pt"])
def test_a_search_exports_in_one_command_and_timm_loads_the_network_found(finished_search, tmp_path, capsys, given):
    folder, _ = finished_search
    export = tmp_path / "export"
    checkpoint = folder if given == "folder" else folder / "checkpoint.pt"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(export)]) == 0
    assert f"local-dir:{export}" in capsys.readouterr().out
    loaded = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    # independently: the spec the search wrote, built by the zoo, with the weights it wrote
    reference = create_model_from_spec(load_spec(folder / "spec.json")).eval()
    reference.load_state_dict(torch.load(folder / "weights.pth", weights_only=True))
    x = torch.randn(4, *reference.spec.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
    card = (export / "README.md").read_text()
    assert "--algo fpnas` on digits" in card and "))" not in card.split("**Paper:**")[0]


def test_a_search_without_weights_says_the_command_that_works(finished_search, tmp_path, capsys):
    folder, _ = finished_search
    copy = tmp_path / "s1"
    shutil.copytree(folder, copy)
    (copy / "weights.pth").unlink()
    assert export_main(["--checkpoint", str(copy / "checkpoint.pt"), "--out", str(tmp_path / "export")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"python -m search.train --spec {copy / 'spec.json'}" in line
    assert not (tmp_path / "export").exists()


def help_commands(text: str) -> list[list[str]]:
    """The example command lines of a --help text (continuation lines joined), each as argv."""
    lines, commands = text.splitlines(), []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("python -m "):
            while line.endswith("\\"):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            commands.append(shlex.split(line.split("  #")[0]))
        i += 1
    return commands


class Accepted(Exception):
    pass


def test_the_help_latency_example_runs_on_a_table_of_its_space(tmp_path, monkeypatch):
    """The example of `search.run --help` runs as printed on the table measured on a 2-core x86-64 CPU shipped in
    bench/latency/ (the example's limit lies inside that space's range there; the table's device is waived, and the
    search stops once every check before training has passed)."""
    commands = help_commands(run_parser().format_help())
    build = next(c for c in commands if c[:4] == ["python", "-m", "search.latency", "build"])
    example = next(c for c in commands if c[:3] == ["python", "-m", "search.run"] and "--latency-target" in c)
    assert all(" " not in arg for arg in example)  # one token per argument: no stray spaces inside the example
    built = latency_parser().parse_args(build[3:])
    table = tmp_path / "lut.json"
    shutil.copy(ROOT / "bench" / "latency" / "fp_nas_demo_ort.json", table)
    shipped = json.loads(table.read_text())
    assert (built.space, built.preset, built.runtime) == (shipped["build"]["space"], shipped["build"]["preset"],
                                                          shipped["protocol"]["runtime"])
    monkeypatch.setattr(search.latency_table.LatencyTable, "device_refusal", lambda self: None)

    def stop(self, resume=False):
        raise Accepted

    monkeypatch.setattr(search.runner.SearchRunner, "run", stop)
    argv = [str(table) if a == built.out else a for a in example[3:]]
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    with pytest.raises(Accepted):
        run_main([*argv, "--no-progress"])



def test_resuming_another_algorithms_search_is_one_line(finished_search, tmp_path, capsys):
    folder, _ = finished_search
    copy = tmp_path / "s1"
    shutil.copytree(folder, copy)
    assert run_main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(copy), "--resume", "--no-progress"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: {copy / 'checkpoint.pt'} holds an fpnas search, and this run is --algo fp-nas: resume it "
                    "with --algo fpnas, or choose another --out")
